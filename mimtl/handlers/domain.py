"""An ignite handler that says, for every inference item, whether the input is in the model's domain.

:class:`DomainCheck` hooks the network during an evaluator's run: the input of its forward pass
(for image statistics) and the output of one named layer (``network.domain_layer`` by default,
pooled to a vector: :func:`~mimtl.metrics.domain.pool_features`). After each iteration it scores
every item with the bundle's :class:`~mimtl.metrics.domain.DomainModel` (``models/domain.pt``,
fitted by ``mimtl domain fit NAME``), checks the DICOM tags the bundle declares
(``expected_dicom``), and puts on each output item:

* ``domain_score``: the largest ratio of a component to its calibrated threshold (``<= 1``
  passes; ``None`` when not scored);
* ``in_domain``: ``True`` / ``False`` (``None``: not checked, e.g. no domain model and no DICOM tags);
* ``domain_reason``: why not, in words ("film unlike the training data: feature distance 41.3,
  threshold 12.0"; "DICOM Modality is 'MR', the bundle expects CR or DX"); ``""`` when in domain;
* ``domain_withheld``: ``True`` when the item is out of domain and ``on_out_of_domain='skip'``:
  the writers (:class:`~mimtl.handlers._common.OutputWriter`) then leave its predictions empty.

Attach it **before** the writers (ignite runs handlers of one event in the order attached; a
bundle's ``handlers`` list is attached in order). It changes nothing the network computes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import min_version, optional_import

from mimtl.handlers._common import filename_of, per_item
from mimtl.metrics.domain import DomainModel, image_statistics, pool_features

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["DICOM_TAGS", "DomainCheck", "check_dicom_tags", "file_sha256", "read_dicom_tags"]

logger = logging.getLogger(__name__)

#: The DICOM tags a bundle may declare under ``network_data_format.inputs.image.expected_dicom``.
DICOM_TAGS = ("Modality", "BodyPartExamined", "ViewPosition")
ON_OUT_OF_DOMAIN = ("flag", "skip")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def read_dicom_tags(path: str | os.PathLike, tags: Sequence[str] = DICOM_TAGS) -> dict[str, str] | None:
    """``{tag: value}`` of a DICOM file's header (no pixels read; absent tags left out); None if no DICOM."""
    path = Path(f"{path}")
    if not path.is_file() or not _is_dicom(path):
        return None
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(tags), force=True)
    except Exception:  # an unreadable header: the reader reports the file itself
        return None
    values = {}
    for tag in tags:
        value = ds.get(tag)
        if value is not None and f"{value}".strip():
            values[tag] = f"{value}".strip()
    return values


def check_dicom_tags(values: Mapping[str, str] | None, expected: Mapping[str, Sequence[str]] | None) -> list[str]:
    """The mismatches of a DICOM's tags with what the bundle expects, in words (empty: none or not a DICOM).

    A tag the file leaves out or empty is no mismatch (it says nothing); a value is compared
    case-insensitively.
    """
    if not values or not expected:
        return []
    problems = []
    for tag, allowed in expected.items():
        allowed = [allowed] if isinstance(allowed, str) else list(allowed)
        value = values.get(tag)
        if value is None or not allowed:
            continue
        if value.upper() not in {f"{a}".upper() for a in allowed}:
            problems.append(f"DICOM {tag} is '{value}', the bundle expects {' or '.join(map(str, allowed))}")
    return problems


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    while isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        network = network.module
    return network


def _median_confidence(value: Any) -> float:
    c = torch.as_tensor(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=torch.float64)
    c = c.reshape(-1)
    c = c[torch.isfinite(c)]
    return float(c.median()) if c.numel() else 0.0


class DomainCheck:
    """Score each inference item against the bundle's domain model and DICOM expectations (see the module).

    Example (bundle config, before the writers)::

        handlers:
        - {_target_: CheckpointLoader, load_path: '@ckpt_path', load_dict: {model: '@network'}, map_location: cpu}
        - _target_: mimtl.handlers.DomainCheck
          network: '@network'
          domain_file: "$@bundle_root + '/models/domain.pt'"
          checkpoint: '@ckpt_path'
          on_out_of_domain: flag        # or skip: withhold the predictions of out-of-domain films
          expected_dicom: '@_meta_::network_data_format::inputs::image::expected_dicom'
        - {_target_: mimtl.handlers.ClassificationWriter, ...}

    Args:
        network: the network the evaluator runs (a DDP/DataParallel wrapper is unwrapped).
        layer: the dotted name of the layer whose output is pooled (None: ``network.domain_layer``,
            or the name the domain model was fitted on).
        domain_file: ``domain.pt`` (:class:`~mimtl.metrics.domain.DomainModel`); None or a missing
            file: no model (a warning; only the DICOM tags are checked).
        checkpoint: the weights the evaluator loads; when the domain model records the checksum
            of other weights, it does not fit them: it is not used (a warning says to refit).
        on_out_of_domain: ``"flag"`` (predictions written with the flag) or ``"skip"`` (withheld).
        expected_dicom: ``{tag: [allowed values]}`` for Modality, BodyPartExamined, ViewPosition.
        confidence_key: the output key of per-point confidences (landmarks: ``pred_confidence``),
            for the whole-film confidence component; None: none.
        collect: keep every item's raw vectors in :attr:`records` (``mimtl domain fit`` uses it).
        enabled: False attaches nothing (a config switch).
        image_key: the image key of the batch/output (its meta names the file).
        error_key: the key :class:`~mimtl.data.TolerantDataset` puts the failure reason in.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        layer: str | None = None,
        domain_file: str | os.PathLike | None = None,
        checkpoint: str | os.PathLike | None = None,
        on_out_of_domain: str = "flag",
        expected_dicom: Mapping[str, Sequence[str]] | None = None,
        confidence_key: str | None = None,
        collect: bool = False,
        enabled: bool = True,
        image_key: str = "image",
        error_key: str = "error",
    ) -> None:
        if on_out_of_domain not in ON_OUT_OF_DOMAIN:
            raise ValueError(f"on_out_of_domain must be one of {ON_OUT_OF_DOMAIN}, got {on_out_of_domain!r}.")
        self.network = _unwrap(network)
        self.domain_file = None if domain_file is None else Path(domain_file)
        self.model = DomainModel.load(self.domain_file) if self.domain_file and self.domain_file.is_file() else None
        fitted_layer = f"{self.model.info.get('layer', '')}" if self.model is not None else ""
        self.layer = layer or getattr(self.network, "domain_layer", None) or fitted_layer
        if not self.layer:
            raise ValueError(f"{type(self.network).__name__} has no domain_layer: name the layer to pool (layer=...).")
        modules = dict(self.network.named_modules())
        if self.layer not in modules:
            raise ValueError(f"layer '{self.layer}' is not a layer of {type(self.network).__name__}.")
        self.module = modules[self.layer]
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.on_out_of_domain = on_out_of_domain
        self.expected_dicom = {k: v for k, v in (expected_dicom or {}).items() if k in DICOM_TAGS}
        self.confidence_key = confidence_key
        self.collect = collect
        self.enabled = bool(enabled)
        self.image_key, self.error_key = image_key, error_key
        self.records: list[dict[str, Any]] = []
        self.disabled_reason = ""  # why the domain model is not used ("" when it is)
        self._hooks: list[Any] = []
        self._armed = False
        self._input: torch.Tensor | None = None
        self._feature: torch.Tensor | None = None
        if self.model is None and not collect:
            self.disabled_reason = f"no domain model ({self.domain_file}); fit one with `mimtl domain fit NAME`"
        elif self.model is not None and fitted_layer and fitted_layer != self.layer:
            self.disabled_reason = f"the domain model pools layer '{fitted_layer}', not '{self.layer}'"

    # -- events ------------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        for event, handler in (
            (Events.STARTED, self.start),
            (Events.ITERATION_STARTED, self.arm),
            (Events.ITERATION_COMPLETED, self),
            (Events.COMPLETED, self.stop),
            (Events.EXCEPTION_RAISED, self.stop_on_error),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    def start(self, engine: Engine | None = None) -> None:
        """Hook the network (removed again at the end of the run) and check the model fits the weights."""
        self.stop()
        self.records = []
        self._hooks = [
            self.network.register_forward_pre_hook(self._grab_input),
            self.module.register_forward_hook(self._grab_feature),
        ]
        if self.model is not None and not self.disabled_reason and self.checkpoint is not None:
            expected = f"{self.model.info.get('checkpoint_sha256', '')}"
            if expected and self.checkpoint.is_file() and file_sha256(self.checkpoint) != expected:
                self.disabled_reason = (
                    f"{self.domain_file} was fitted for other weights than {self.checkpoint}; "
                    "refit it with `mimtl domain fit NAME`"
                )
        if self.disabled_reason and not self.collect:
            logger.warning("domain check: %s: films are not scored (DICOM tags still checked).", self.disabled_reason)

    def stop(self, engine: Engine | None = None) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._armed, self._input, self._feature = False, None, None

    def stop_on_error(self, engine: Engine, error: BaseException) -> None:
        self.stop()
        raise error

    def arm(self, engine: Engine | None = None) -> None:
        self._armed, self._input, self._feature = True, None, None

    def _grab_input(self, module: torch.nn.Module, args: tuple) -> None:
        if self._armed and args and isinstance(args[0], torch.Tensor):
            self._input = args[0].detach()

    def _grab_feature(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if self._armed:
            self._feature = pool_features(output)

    # -- scoring -----------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether films are scored with the domain model."""
        return self.model is not None and not self.disabled_reason

    def __call__(self, engine: Engine) -> None:
        """Score the items of one iteration and put the verdict on each output item."""
        self._armed = False
        output = engine.state.output
        batched = isinstance(output, Mapping)
        outs = per_item(output)
        batch = per_item(engine.state.batch)
        n = len(outs)
        feats = self._feature if self._feature is not None and self._feature.shape[0] == n else None
        stats = None
        if self._input is not None and self._input.shape[0] == n:
            stats = image_statistics(self._input.float().cpu())
        verdicts = []
        for i, out in enumerate(outs):
            item = batch[i] if i < len(batch) else {}
            name = filename_of(item, out, self.image_key)
            error = f"{item.get(self.error_key) or out.get(self.error_key) or ''}"
            verdicts.append(self._verdict(i, out, name, error, feats, stats))
        keys = ("domain_score", "in_domain", "domain_reason", "domain_withheld")
        if batched:
            for k in keys:
                output[k] = [v[k] for v in verdicts]
        else:
            for out, v in zip(output, verdicts, strict=False):
                if isinstance(out, dict):
                    out.update({k: v[k] for k in keys})
        self._input = self._feature = None

    def _verdict(self, i: int, out: Mapping, name: str, error: str, feats, stats) -> dict[str, Any]:
        verdict: dict[str, Any] = {
            "domain_score": None,
            "in_domain": None,
            "domain_reason": "",
            "domain_withheld": False,
        }
        if error:
            return verdict
        conf = None
        if self.confidence_key is not None and out.get(self.confidence_key) is not None:
            conf = _median_confidence(out[self.confidence_key])
        reasons = check_dicom_tags(read_dicom_tags(name), self.expected_dicom) if self.expected_dicom else []
        if self.active and feats is not None:
            try:
                result = self.model.score(
                    feats[i : i + 1],
                    None if stats is None else stats[i : i + 1],
                    None if conf is None else torch.tensor([conf]),
                )[0]
            except (ValueError, RuntimeError) as e:  # vectors of another size: the model does not fit this network
                self.disabled_reason = f"the domain model does not fit this network ({e})"
                logger.warning("domain check: %s; films are not scored.", self.disabled_reason)
            else:
                verdict["domain_score"] = result.score
                reasons = reasons + ([result.reason] if result.reason else [])
                verdict["in_domain"] = result.in_domain
        if reasons:
            verdict["in_domain"] = False
            verdict["domain_reason"] = "; ".join(reasons)
        elif verdict["in_domain"] is None and self.disabled_reason and not self.collect:
            verdict["domain_reason"] = f"not checked: {self.disabled_reason}"
        if verdict["in_domain"] is False and self.on_out_of_domain == "skip":
            verdict["domain_withheld"] = True
        if self.collect and feats is not None:
            record = {"file": name, "features": feats[i].clone(), "confidence": conf}
            record["stats"] = None if stats is None else stats[i].clone()
            self.records.append({**record, **verdict})
        return verdict
