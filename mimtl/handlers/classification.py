"""Ignite handlers that turn a classification evaluator's output into files a user can read.

:class:`ClassificationWriter` writes one CSV row per input image (probabilities, thresholded
decisions, and, for files :class:`~mimtl.data.TolerantDataset` could not use, the reason), and a
JSON summary. :class:`GradCAMWriter` saves a Grad-CAM overlay per image for the findings the
model reports. Both read the evaluator's per-iteration ``engine.state.batch`` /
``engine.state.output``, decollated (lists of per-item dicts, MONAI's default when
postprocessing is used) or batched (dicts of batch tensors, ``decollate=False``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

from mimtl.handlers._common import WITHHELD, OutputWriter, font, save_atomic, to_uint8

__all__ = ["ClassificationWriter", "GradCAMWriter", "resolve_thresholds"]

logger = logging.getLogger(__name__)

_DEFAULT_THRESHOLD = 0.5


def resolve_thresholds(
    thresholds: float | Sequence[float] | Mapping[Any, float] | None, label_names: Sequence[str]
) -> list[float]:
    """One decision threshold per label.

    Args:
        thresholds: None (0.5 for every label), one number for all, a list with one value per
            label, or a dict label name (or index) -> threshold, 0.5 for the labels it leaves out.
        label_names: the labels, in model output order.

    Raises:
        ValueError: a list of the wrong length, a dict naming unknown labels, or a threshold
            outside [0, 1].
    """
    names = [f"{n}" for n in label_names]
    if thresholds is None:
        values = [_DEFAULT_THRESHOLD] * len(names)
    elif isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool):
        values = [float(thresholds)] * len(names)
    elif isinstance(thresholds, Mapping):
        values = [_DEFAULT_THRESHOLD] * len(names)
        unknown = []
        for key, value in thresholds.items():
            if f"{key}" in names:
                values[names.index(f"{key}")] = float(value)
            elif f"{key}".isdigit() and int(f"{key}") < len(names):  # {"0": 0.4} as metadata writes it
                values[int(f"{key}")] = float(value)
            else:
                unknown.append(key)
        if unknown:
            raise ValueError(f"thresholds name unknown labels {unknown}; the labels are {names}.")
    else:
        values = [float(v) for v in thresholds]
        if len(values) != len(names):
            raise ValueError(f"{len(values)} thresholds for {len(names)} labels ({', '.join(names)}).")
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"thresholds must be probabilities in [0, 1], got {bad}.")
    return values


def _probabilities(pred: Any, n_labels: int) -> np.ndarray:
    values = np.asarray(
        pred.detach().float().cpu().numpy() if isinstance(pred, torch.Tensor) else pred, dtype=np.float64
    ).reshape(-1)
    if values.shape[0] != n_labels:
        raise ValueError(
            f"the model gives {values.shape[0]} outputs per image but {n_labels} label_names are configured."
        )
    return values


def _label_names(label_names: Sequence[str]) -> list[str]:
    names = [f"{n}" for n in label_names]
    if not names:
        raise ValueError("label_names must name at least one label.")
    return names


class _ClassificationOutput(OutputWriter):
    """An :class:`~mimtl.handlers._common.OutputWriter` that reads probabilities per item."""

    def __init__(
        self, output_dir: str | os.PathLike, label_names: Sequence[str], image_key: str, pred_key: str, error_key: str
    ) -> None:
        super().__init__(output_dir, image_key=image_key, error_key=error_key)
        self.label_names = _label_names(label_names)
        self.pred_key = pred_key

    def predictions(self, engine: Engine) -> Iterator[tuple[str, np.ndarray | None, str, Any, dict[str, Any]]]:
        """``(file, probabilities or None, failure reason or "", image, domain verdict)`` per item of an
        iteration (the verdict: :meth:`~mimtl.handlers._common.OutputWriter.domain_of`, ``{}`` without a domain check)."""
        for item, out, name, error in self.items(engine):
            probs = None if error else _probabilities(out[self.pred_key], len(self.label_names))
            yield name, probs, error, out.get(self.image_key, item.get(self.image_key)), self.domain_of(item, out)


class ClassificationWriter(_ClassificationOutput):
    """Write the predictions of a classification evaluator to a CSV file, one row per input image.

    Columns: ``file``, ``prob_<label>`` per label (the ``pred`` after postprocessing, e.g.
    ``Activationsd(sigmoid=True)``), ``pred_<label>`` per label (1 when ``prob >= threshold``),
    ``predicted_class`` (the most probable label; multi-class only) and ``status``: ``ok``, or
    ``failed: <reason>`` for an item :class:`~mimtl.data.TolerantDataset` could not load, whose
    probability and decision cells are empty. After a :class:`~mimtl.handlers.DomainCheck`, the
    columns ``in_domain``, ``domain_score`` and ``domain_reason`` follow ``status``; a film it flags
    under ``on_out_of_domain: skip`` keeps them, with empty predictions and status
    ``withheld: out of domain``. Rows are in the order the evaluator saw the items
    (the datalist's, with ``shuffle: false``). On completion the CSV and a JSON summary beside it
    (``<stem>.json``: counts, failed files with reasons, thresholds, label names) are written
    atomically, and where they went is logged (a warning when some files failed).

    Under ``torch.distributed`` each rank writes its own rows, ``<stem>.rank<r>.csv``.

    Example (bundle config)::

        handlers:
        - _target_: mimtl.handlers.ClassificationWriter
          output_dir: '@output_dir'
          label_names: [Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion]
          thresholds: {Cardiomegaly: 0.4}

    Args:
        output_dir: the folder of the CSV and summary (created when missing).
        label_names: the labels, in model output order.
        thresholds: decision thresholds, see :func:`resolve_thresholds` (default 0.5 each).
        filename: the CSV file name.
        multi_label: independent labels (sigmoid); False for one class per image (softmax), which
            adds the ``predicted_class`` column.
        image_key: the image key of the batch (its meta names the file).
        pred_key: the prediction key of the output.
        error_key: the key :class:`~mimtl.data.TolerantDataset` puts the failure reason in.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        label_names: Sequence[str],
        thresholds: float | Sequence[float] | Mapping[Any, float] | None = None,
        filename: str = "predictions.csv",
        multi_label: bool = True,
        image_key: str = "image",
        pred_key: str = "pred",
        error_key: str = "error",
    ) -> None:
        super().__init__(output_dir, label_names, image_key, pred_key, error_key)
        self.thresholds = resolve_thresholds(thresholds, self.label_names)
        self.filename = filename
        self.multi_label = multi_label
        self.rows: list[dict[str, Any]] = []
        self._range_warned = False

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the rows collected (each run writes its own file)."""
        super().reset(engine)
        self.rows = []

    @property
    def columns(self) -> list[str]:
        """The CSV header."""
        extra = [] if self.multi_label else ["predicted_class"]
        return [
            "file",
            *(f"prob_{n}" for n in self.label_names),
            *(f"pred_{n}" for n in self.label_names),
            *extra,
            "status",
            *self.domain_columns(self.rows),
        ]

    def __call__(self, engine: Engine) -> None:
        """Collect the rows of one iteration."""
        for name, probs, error, _, domain in self.predictions(engine):
            row: dict[str, Any] = {"file": name, **self.domain_cells(domain)}
            if error:
                row["status"] = self.failed_status(error)
            elif domain.get("withheld"):
                row["status"] = WITHHELD
            else:
                if not self._range_warned and (probs.min() < 0.0 or probs.max() > 1.0):
                    self._range_warned = True
                    logger.warning(
                        "predictions outside [0, 1]: these are logits; add Activationsd(sigmoid=True) "
                        "(multi-label) or softmax (multi-class) to the evaluator's postprocessing."
                    )
                for label, p, t in zip(self.label_names, probs, self.thresholds, strict=True):
                    row[f"prob_{label}"] = f"{p:.6f}"
                    row[f"pred_{label}"] = int(p >= t)
                if not self.multi_label:
                    row["predicted_class"] = self.label_names[int(np.argmax(probs))]
                row["status"] = "ok"
            self.rows.append(row)

    @property
    def csv_path(self) -> Path:
        """Where the CSV goes."""
        name = PurePath(self.filename)
        return self.table_path(name.stem, name.suffix or ".csv")

    def summary(self) -> dict[str, Any]:
        """The content of the JSON summary."""
        failed = self.failures(self.rows)
        return {
            "csv": self.csv_path.name,
            "n_images": len(self.rows),
            "n_ok": len(self.rows) - len(failed),
            "n_failed": len(failed),
            "failed": failed,
            "label_names": self.label_names,
            "thresholds": dict(zip(self.label_names, self.thresholds, strict=True)),
            "multi_label": self.multi_label,
            **self.domain_summary(self.rows),
        }

    def write(self, engine: Engine | None = None) -> Path:
        """Write the CSV and the JSON summary now; return the CSV's path."""
        path = self.write_csv(self.csv_path, self.rows, self.columns)
        summary = self.summary()
        self.write_json(path.with_suffix(".json"), summary)
        n, n_failed = summary["n_images"], summary["n_failed"]
        if n_failed:
            logger.warning("predictions of %d images written to %s; %d failed (listed with reasons)", n, path, n_failed)
        else:
            logger.info("predictions of %d images written to %s", n, path)
        return path


def _min_max(cam: torch.Tensor) -> torch.Tensor:
    """Scale each map of a (B, 1, ...) batch to [0, 1], high activation = 1 (flat maps become 0).

    MONAI's ``default_normalizer`` maps (min, max) to (1, 0), flipping the map; an overlay needs
    the strongest evidence brightest.
    """
    flat = cam.reshape(cam.shape[0], -1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    span = (hi - lo).clamp_min(torch.finfo(cam.dtype).tiny)
    shape = (-1, *[1] * (cam.ndim - 1))
    out = (cam - lo.view(shape)) / span.view(shape)
    return torch.where((hi - lo).view(shape) > 0, out, torch.zeros_like(out))


@contextmanager
def _hooked_gradcam(network: torch.nn.Module, layer: str) -> Iterator[Any]:
    """A MONAI ``GradCAM`` on ``network`` whose hooks are removed again on exit.

    ``ModelWithHooks`` registers forward and full backward hooks on the target layer and never
    removes them (it also sets ``inplace=False`` on it): left in place they would run on every
    later forward pass of the evaluator (and of a trainer sharing the network).
    """
    from monai.visualize import GradCAM

    module = dict(network.named_modules())[layer]
    hook_dicts = [
        getattr(module, attr)
        for attr in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_hooks")
        if isinstance(getattr(module, attr, None), dict)
    ]
    before = [set(d) for d in hook_dicts]
    full_backward = module._is_full_backward_hook
    inplace = module.__dict__.get("inplace")
    try:
        yield GradCAM(nn_module=network, target_layers=layer, postprocessing=_min_max)
    finally:
        for hooks, keys in zip(hook_dicts, before, strict=True):
            for key in set(hooks) - keys:
                del hooks[key]
        module._is_full_backward_hook = full_backward
        if inplace is not None:
            module.inplace = inplace


# Piecewise-linear "jet" colour map: stops (position, R, G, B).
_JET = np.array(
    [
        [0.0, 0, 0, 143],
        [0.125, 0, 0, 255],
        [0.375, 0, 255, 255],
        [0.625, 255, 255, 0],
        [0.875, 255, 0, 0],
        [1.0, 128, 0, 0],
    ]
)


def _colormap(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours."""
    v = np.clip(values, 0.0, 1.0)
    rgb = [np.interp(v, _JET[:, 0], _JET[:, c]) for c in (1, 2, 3)]
    return np.stack(rgb, axis=-1).astype(np.uint8)


class GradCAMWriter(_ClassificationOutput):
    """Save a Grad-CAM overlay (MONAI ``GradCAM``) per image for the findings the model reports.

    For each image that loaded (items with an ``error`` from :class:`~mimtl.data.TolerantDataset`
    are skipped), the labels whose probability reaches their threshold, most probable first, at
    most ``max_labels`` (the most probable label when none does) get a panel: the model input,
    min-max scaled to gray, with the class activation map of that label's logit as a colour heat
    map on top and ``<label> <probability>`` written above it. The panels are saved side by side
    as ``<output_dir>/<input stem>_gradcam.png`` (``_2``, ``_3``, ... when stems repeat).

    Grad-CAM needs gradients while the evaluator forwards under ``torch.no_grad`` (and callers
    may run it under ``torch.inference_mode``): each map is computed under
    ``torch.inference_mode(False)`` and ``torch.enable_grad()`` on a fresh copy of the input, with
    gradients taken w.r.t. that input only (parameters' ``requires_grad`` off), in eval mode and in
    float32 without autocast. The network's train/eval mode, ``requires_grad`` flags and ``.grad``
    tensors are restored afterwards, and the hooks GradCAM registers are removed.

    Example (bundle config)::

        - _target_: mimtl.handlers.GradCAMWriter
          network: '@network_def'
          target_layer: features.denseblock4
          output_dir: "$@output_dir + '/gradcam'"
          label_names: '@label_names'
          enabled: '@gradcam'

    Args:
        network: the plain model (not a DDP/DataParallel wrapper: one is unwrapped; a scripted or
            compiled model cannot be hooked). It is used as is, on its own device.
        target_layer: the name of the layer (in ``network.named_modules()``) whose activations
            and gradients make the map, usually the last convolutional block.
        output_dir: the folder of the PNGs (created when missing).
        label_names: the labels, in model output order.
        thresholds: see :func:`resolve_thresholds` (default 0.5 each).
        enabled: False attaches nothing (a config switch).
        max_labels: the most panels per image.
        alpha: opacity of the heat map over the image, in [0, 1].
        panel_size: each panel's longer side in pixels (None: the model input size).
        image_key: the image key of the output/batch (the model input).
        pred_key: the prediction key of the output (probabilities after postprocessing).
        error_key: the key :class:`~mimtl.data.TolerantDataset` puts the failure reason in.
        transpose: MONAI's 2D readers (``PILReader``, mimtl's DICOM reader) index arrays ``[x, y]``;
            True draws them as a film is viewed (rows = y). Set False for data stored ``[y, x]``.

    Raises:
        ValueError: ``target_layer`` is not a layer of ``network`` (the message lists the last
            few layer names), or invalid ``max_labels``/``alpha``.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        target_layer: str,
        output_dir: str | os.PathLike,
        label_names: Sequence[str],
        thresholds: float | Sequence[float] | Mapping[Any, float] | None = None,
        enabled: bool = True,
        max_labels: int = 3,
        alpha: float = 0.4,
        panel_size: int | None = 256,
        image_key: str = "image",
        pred_key: str = "pred",
        error_key: str = "error",
        transpose: bool = True,
    ) -> None:
        self.transpose = bool(transpose)
        while isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            network = network.module
        self.network = network
        self.target_layer = f"{target_layer}"
        super().__init__(output_dir, label_names, image_key, pred_key, error_key)
        self.thresholds = resolve_thresholds(thresholds, self.label_names)
        self.enabled = bool(enabled)
        if int(max_labels) < 1:
            raise ValueError(f"max_labels must be at least 1, got {max_labels}.")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        self.max_labels, self.alpha = int(max_labels), float(alpha)
        self.panel_size = None if panel_size is None else int(panel_size)
        if self.enabled:
            names = [name for name, _ in network.named_modules() if name]
            if self.target_layer not in names:
                raise ValueError(
                    f"target_layer '{self.target_layer}' is not a layer of {type(network).__name__}; "
                    f"its last layers are: {', '.join(names[-8:])}."
                )
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Write overlays on every iteration (nothing when ``enabled`` is False)."""
        if self.enabled:
            super().attach(engine)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the files written (names are made unique within one run)."""
        super().reset(engine)
        self.written = []

    def write(self, engine: Engine | None = None) -> list[Path]:
        """Log where the overlays went (each was saved in its iteration); return their paths."""
        logger.info("Grad-CAM overlays of %d images written to %s", len(self.written), self.output_dir)
        return list(self.written)

    def select(self, probs: np.ndarray) -> list[int]:
        """The labels to explain: those at or above threshold, most probable first, at most ``max_labels``."""
        order = [int(i) for i in np.argsort(-probs, kind="stable")]
        chosen = [i for i in order if probs[i] >= self.thresholds[i]]
        return (chosen or order[:1])[: self.max_labels]

    def __call__(self, engine: Engine) -> None:
        """Write the overlays of one iteration's images."""
        for name, probs, error, image, domain in self.predictions(engine):
            if error or image is None or domain.get("withheld"):
                continue
            labels = self.select(probs)
            cams = self.compute(image, labels)
            self.written.append(self.save(image, cams, labels, probs, name, domain))

    def compute(self, image: torch.Tensor, class_indices: Sequence[int]) -> np.ndarray:
        """Grad-CAM maps ``(len(class_indices), H, W)`` in [0, 1] of one channel-first image ``(C, H, W)``."""
        net = self.network
        params = list(net.parameters())
        flags, grads, training = [p.requires_grad for p in params], [p.grad for p in params], net.training
        floats = [p for p in params if p.is_floating_point()]
        device = params[0].device if params else torch.device("cpu")
        dtype = floats[0].dtype if floats else torch.float32
        try:
            # the evaluator's forward ran under no_grad; a caller may hold inference_mode: leave both
            with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
                for p in params:
                    p.requires_grad_(False)  # gradients w.r.t. the input suffice; no .grad written
                # a fresh tensor: the batch's may be an inference tensor, which autograd refuses
                plain = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
                x = plain.detach().clone().to(device=device, dtype=dtype)[None].requires_grad_(True)
                net.eval()
                with _hooked_gradcam(net, self.target_layer) as cam:
                    maps = [cam(x, class_idx=int(c))[0, 0].detach().float().cpu().numpy() for c in class_indices]
        finally:
            for p, flag, grad in zip(params, flags, grads, strict=True):
                p.requires_grad_(flag)
                p.grad = grad
            net.train(training)
        return np.stack(maps)

    def _output_path(self, name: str) -> Path:
        return self.item_path(name, "_gradcam.png")

    def save(
        self,
        image: torch.Tensor,
        cams: np.ndarray,
        labels: Sequence[int],
        probs: np.ndarray,
        name: str,
        domain: Mapping[str, Any] | None = None,
    ) -> Path:
        """Render the panels of one image and save them as a PNG; return its path.

        A film the domain check flagged gets a red line under the titles: ``OUT OF DOMAIN`` and the reason.
        """
        from PIL import Image, ImageDraw

        pixels = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        gray = to_uint8(pixels[0] if pixels.ndim == 3 else pixels)
        if self.transpose:
            gray, cams = gray.T, [np.asarray(cam).T for cam in cams]
        h, w = gray.shape
        scale = 1.0 if self.panel_size is None else self.panel_size / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        font_size = max(10, size[0] // 18)
        text_font, header = font(font_size), font_size + 8
        flagged = bool(domain) and domain.get("in_domain") == "false"
        banner = font_size + 6 if flagged else 0
        sheet = Image.new("RGB", (size[0] * len(labels), size[1] + header + banner), (0, 0, 0))
        draw = ImageDraw.Draw(sheet)
        if flagged:
            draw.text((4, header), f"OUT OF DOMAIN: {domain['domain_reason']}", fill=(255, 60, 60), font=text_font)
        header += banner
        base = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
        for k, (label, cam) in enumerate(zip(labels, cams, strict=True)):
            blend = (1.0 - self.alpha) * base + self.alpha * _colormap(cam).astype(np.float32)
            panel = Image.fromarray(np.clip(np.round(blend), 0, 255).astype(np.uint8))
            sheet.paste(panel.resize(size, Image.Resampling.BILINEAR), (k * size[0], header))
            title = f"{self.label_names[label]} {probs[label]:.2f}"
            draw.text((k * size[0] + 4, 3), title, fill=(255, 255, 255), font=text_font)
        return save_atomic(self._output_path(name), lambda tmp: sheet.save(tmp, format="PNG"))
