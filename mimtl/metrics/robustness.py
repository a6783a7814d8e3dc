"""Robustness of a segmentation model to image corruptions: Dice and HD95, clean and corrupted.

:class:`RobustnessEvaluation` runs one or more models (a network, a network + MONAI inferer,
or any callable from a batch ``(B, 1, H, W)`` to outputs ``(B, C, H, W)``) over a test datalist
of ``(image, label)`` pairs: clean, then under each corruption of
:mod:`mimtl.transforms.corruptions` at each severity. Each corrupted split is generated once,
kept while every model runs on it, and fed in batches. It reports, per model:

* Dice and HD95 (MONAI's ``DiceMetric`` / ``HausdorffDistanceMetric``, 95th percentile, in mm
  where the datalist gives a ``spacing``, else pixels) on the clean split and per
  corruption x severity, each with a percentile bootstrap confidence interval over cases;
* the mean over all corruptions and severities ("corrupted Dice");
* mCE (Hendrycks & Dietterich): for each corruption, the sum over severities of the Dice
  error ``1 - Dice`` divided by the same sum of a baseline model, averaged over corruptions.
  The baseline is another model of the same run, or the per-case CSV of an earlier run. The
  bootstrap resamples cases in pairs (the same films for both models).

It writes ``robustness_cases.csv`` (one row per model, case, corruption, severity: the input of
later baselines), ``robustness.csv`` (per cell, with intervals), ``robustness.md`` and
``robustness_heatmap.png`` (Dice per corruption x severity, one panel per model).

Conventions: a case whose prediction or reference is empty for a class gets that class's HD95
as the film's diagonal (the largest possible distance), so means stay finite and such a failure
counts against the model; Dice and HD95 are averaged over the foreground classes of a case.

Example (bundle config, YAML)::

    robustness:
      _target_: mimtl.metrics.RobustnessEvaluation
      datalist: "$@dataset_dir + '/datalist.json'"
      network: "@network"
      inferer: "@inferer"
      output_dir: "$@bundle_root + '/eval/robustness'"
    run: "$@robustness.run()"
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd
from tqdm import tqdm

from mimtl.transforms.corruptions import CORRUPTIONS, SEVERITIES, Corrupt

__all__ = ["CLEAN", "UNSEEN", "RobustnessEvaluation", "bootstrap_interval", "mean_corruption_error"]

logger = logging.getLogger(__name__)

#: The corruption name of the clean split in tables (severity 0).
CLEAN = "clean"
#: the table name of the unseen set's cell (clean films of another acquisition or data set)
UNSEEN = "unseen"
_MODES = ("multilabel", "multiclass")


def bootstrap_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates ``values`` (last axis) at ``confidence``."""
    alpha = (1.0 - confidence) / 2
    lo, hi = np.nanquantile(values, [alpha, 1.0 - alpha], axis=-1)
    return float(lo), float(hi)


def mean_corruption_error(errors: Mapping[str, np.ndarray], baseline: Mapping[str, np.ndarray]) -> np.ndarray:
    """mCE: mean over corruptions of ``sum_s E[c, s] / sum_s E_base[c, s]``.

    Args:
        errors, baseline: ``{corruption: errors per severity}`` (last axis may hold bootstrap
            replicates: shape ``(severities,)`` or ``(severities, B)``).

    Returns:
        mCE, a scalar array or one value per replicate. A corruption whose baseline error sums
        to 0 is left out (its ratio is undefined).
    """
    ratios = []
    for name, e in errors.items():
        denominator = np.sum(baseline[name], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(np.where(denominator > 0, np.sum(e, axis=0) / denominator, np.nan))
    return np.nanmean(np.stack(ratios), axis=0)


def _load_datalist(datalist: Any, split: str, base_dir: str | os.PathLike | None) -> list[dict]:
    if isinstance(datalist, (str, os.PathLike)):
        path = Path(datalist)
        content = json.loads(path.read_text())
        if split not in content:
            raise ValueError(f"datalist {path} has no split {split!r} (it has: {', '.join(content)}).")
        items, root = content[split], Path(base_dir) if base_dir is not None else path.parent
    else:
        items, root = list(datalist), Path(base_dir) if base_dir is not None else None
    out = []
    for item in items:
        item = dict(item)
        for key, value in item.items():
            if isinstance(value, str) and root is not None and not os.path.isabs(value) and key != "id":
                item[key] = str(root / value)
        out.append(item)
    if not out:
        raise ValueError("datalist is empty: the robustness evaluation needs at least one (image, label) pair.")
    return out


class RobustnessEvaluation:
    """Dice/HD95 of segmentation models on a clean test split and under 17 corruptions x 5 severities.

    Args:
        datalist: a datalist JSON path (``split`` is read from it, paths relative to its folder
            or ``base_dir``) or a list of ``{image_key: path, label_key: path}`` dicts.
        network: the model (``torch.nn.Module``); run through ``inferer`` when given.
        inferer: a MONAI inferer (e.g. ``SlidingWindowInferer``); default a plain forward.
        predictor: instead of ``network``, any callable ``(B, 1, H, W) -> (B, C, H, W)``.
        models: more models to run on the same corrupted inputs, ``{name: network or callable}``.
        name: the table name of ``network`` / ``predictor``.
        baseline: mCE baseline: the name of one of the models, or the path of an earlier run's
            ``robustness_cases.csv`` (its first model, or ``baseline_model``).
        baseline_model: which model of that CSV is the baseline.
        split: datalist split to evaluate.
        base_dir: folder of relative paths (default: the datalist's folder).
        image_key, label_key: datalist keys of the film and its label: a label map (values
            ``0..K``) or, after ``preprocessing``, one binary channel per predicted structure.
        spacing_key: datalist key of the pixel spacing in mm, in the order of the loaded array's
            spatial axes (MONAI's PNG reader puts x first), for HD95 in mm; missing: pixels.
        preprocessing: a MONAI dictionary transform bringing an item to ``image`` ``(1, H, W)``
            in ``[0, 1]`` and ``label`` ``(1, H, W)`` at the model's input size. Default: load,
            channel first, min-max scale the image.
        mode: ``"multilabel"``: output channel ``k`` is label ``k + 1``, a pixel belongs when
            the output (after a sigmoid if ``sigmoid``) exceeds ``threshold``;
            ``"multiclass"``: argmax over channels, channel 0 background.
        sigmoid, threshold: see ``mode``.
        corruptions, severities: what to evaluate (default all 17 x 1..5).
        unseen: a second datalist (path or list) the models never saw, e.g. films of another
            acquisition or another data set: evaluated clean, reported as "unseen" Dice and HD95;
            ``unseen_split`` is read from it.
        seed: corruption seed (:func:`~mimtl.transforms.corruptions.corruption_rng`) and bootstrap seed.
        batch_size: films per forward.
        n_bootstrap, confidence: bootstrap replicates and interval level.
        output_dir: where tables and the heat map go (None: nothing written).
        device: device of the forward passes.
        progress: show a progress bar.

    Raises:
        ValueError: an unknown corruption, severity, mode or baseline; no model; an empty datalist;
            a label whose size differs from its image (naming the file).
    """

    def __init__(
        self,
        datalist: Any,
        network: torch.nn.Module | None = None,
        inferer: Callable[..., Any] | None = None,
        predictor: Callable[[torch.Tensor], torch.Tensor] | None = None,
        models: Mapping[str, Any] | None = None,
        name: str = "model",
        baseline: str | os.PathLike | None = None,
        baseline_model: str | None = None,
        split: str = "test",
        base_dir: str | os.PathLike | None = None,
        image_key: str = "image",
        label_key: str = "label",
        spacing_key: str | None = "spacing",
        preprocessing: Callable[[dict], dict] | None = None,
        mode: str = "multilabel",
        sigmoid: bool = True,
        threshold: float = 0.5,
        corruptions: Sequence[str] = CORRUPTIONS,
        severities: Sequence[int] = SEVERITIES,
        seed: int = 0,
        batch_size: int = 8,
        n_bootstrap: int = 1000,
        confidence: float = 0.95,
        output_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        progress: bool = True,
        unseen: Any = None,
        unseen_split: str = "test",
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}; got {mode!r}.")
        unknown = [c for c in corruptions if c not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"corruptions: unknown {unknown}; choose from {', '.join(CORRUPTIONS)}.")
        bad = [s for s in severities if s not in SEVERITIES]
        if bad:
            raise ValueError(f"severities must be in {SEVERITIES}; got {bad}.")
        if int(batch_size) < 1 or int(n_bootstrap) < 0 or not 0 < float(confidence) < 1:
            raise ValueError(
                f"batch_size must be >= 1, n_bootstrap >= 0 and confidence in (0, 1); got {batch_size}, "
                f"{n_bootstrap}, {confidence}."
            )
        self.models: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        if network is not None and predictor is not None:
            raise ValueError("give network (with an optional inferer) or predictor, not both.")
        if network is not None or predictor is not None:
            self.models[name] = self._as_predictor(network if network is not None else predictor, inferer)
        for key, model in (models or {}).items():
            self.models[key] = self._as_predictor(model, inferer)
        if not self.models:
            raise ValueError("no model to evaluate: give network, predictor or models.")
        if baseline is not None and not (f"{baseline}" in self.models or Path(baseline).is_file()):
            raise ValueError(
                f"baseline {baseline!r} is neither a model of this run ({', '.join(self.models)}) nor a file."
            )
        self.items = _load_datalist(datalist, split, base_dir)
        self.unseen_items = None if unseen is None else _load_datalist(unseen, unseen_split, None)
        self.unseen_ids: list[str] = []
        self.baseline, self.baseline_model = baseline, baseline_model
        self.image_key, self.label_key, self.spacing_key = image_key, label_key, spacing_key
        self.preprocessing = preprocessing or Compose(
            [
                LoadImaged(keys=[image_key, label_key], image_only=True),
                EnsureChannelFirstd(keys=[image_key, label_key]),
                ScaleIntensityd(keys=image_key, minv=0.0, maxv=1.0),
            ]
        )
        self.mode, self.sigmoid, self.threshold = mode, bool(sigmoid), float(threshold)
        self.corruptions, self.severities = tuple(corruptions), tuple(int(s) for s in severities)
        self.seed, self.batch_size = int(seed), int(batch_size)
        self.n_bootstrap, self.confidence = int(n_bootstrap), float(confidence)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.device = torch.device(device)
        self.progress = progress

    def _as_predictor(self, model: Any, inferer: Callable[..., Any] | None) -> Callable[[torch.Tensor], torch.Tensor]:
        if isinstance(model, torch.nn.Module):
            model.eval()
            if inferer is not None:
                return lambda x: inferer(x, model)
            return model
        if not callable(model):
            raise ValueError(f"a model must be a torch.nn.Module or a callable; got {type(model).__name__}.")
        return model

    # ------------------------------------------------------------------ data
    def _load(self, items: list[dict] | None = None) -> tuple[list[str], list[torch.Tensor], torch.Tensor, list[Any]]:
        ids, images, labels, spacings = [], [], [], []
        for k, item in enumerate(self.items if items is None else items):
            missing = [key for key in (self.image_key, self.label_key) if not item.get(key)]
            if missing:
                raise ValueError(
                    f"datalist item {k} ({item.get(self.image_key, 'no image')}) has no {' or '.join(missing)}: "
                    "the robustness evaluation needs an image and its label for every case."
                )
            data = self.preprocessing(dict(item))
            image, label = data[self.image_key], data[self.label_key]
            if tuple(image.shape[1:]) != tuple(label.shape[1:]):
                raise ValueError(
                    f"{item[self.label_key]}: label of size {tuple(label.shape[1:])} differs from its image "
                    f"{item[self.image_key]} of size {tuple(image.shape[1:])}."
                )
            ids.append(os.path.basename(f"{item[self.image_key]}"))
            images.append(torch.as_tensor(image, dtype=torch.float32))
            labels.append(torch.as_tensor(label).long())
            spacing = item.get(self.spacing_key) if self.spacing_key else None
            spacings.append(None if spacing is None else [float(s) for s in spacing])
        shapes = {tuple(x.shape) for x in images}
        if len(shapes) > 1:
            raise ValueError(f"preprocessing must bring all films to one size to batch them; got {sorted(shapes)}.")
        return ids, images, torch.stack(labels), spacings

    def _corrupted(
        self, images: list[torch.Tensor], labels: torch.Tensor, ids: list[str], name: str, severity: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's films under ``name`` at ``severity``, and the labels moved with them."""
        if name == CLEAN:
            return torch.stack(images), labels
        corrupt = Corrupt(name, severity, seed=self.seed)
        films, moved = [], []
        for x, y, i in zip(images, labels, ids, strict=True):
            film, warp = corrupt.corrupt(x, image_id=i)
            films.append(film)
            moved.append(warp(y))  # identity unless the corruption moves pixels (nearest)
        return torch.stack(films), torch.stack(moved)

    # ------------------------------------------------------------ metrics
    def _discrete(self, out: torch.Tensor, n_classes: int) -> torch.Tensor:
        if self.mode == "multiclass":
            return torch.nn.functional.one_hot(out.argmax(1), out.shape[1]).movedim(-1, 1)[:, 1:].float()
        p = torch.sigmoid(out) if self.sigmoid else out
        return (p > self.threshold).float()

    def _reference(self, labels: torch.Tensor, n_channels: int) -> torch.Tensor:
        if labels.shape[1] == n_channels and n_channels > 1:
            return (labels > 0).float()  # already one binary channel per structure
        if labels.shape[1] != 1:
            raise ValueError(
                f"labels have {labels.shape[1]} channels but the model predicts {n_channels} structures: give a "
                "label map (one channel, values 1..K) or one binary channel per predicted structure."
            )
        values = torch.arange(1, n_channels + 1, device=labels.device).view(1, -1, 1, 1)
        return (labels == values).float()  # a label map (B, 1, H, W) -> (B, K, H, W), classes 1..K

    def _scores(self, pred: torch.Tensor, ref: torch.Tensor, spacings: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pred, ref)
        spacing = [s if s is not None else [1.0, 1.0] for s in spacings]
        hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
            pred, ref, spacing=spacing
        )
        h, w = ref.shape[-2:]
        diagonal = torch.tensor([math.hypot(h * s[0], w * s[1]) for s in spacing]).view(-1, 1)
        hd = torch.where(torch.isfinite(hd), hd.cpu(), diagonal.to(hd.dtype))
        return dice.cpu().mean(1).numpy(), hd.mean(1).numpy()

    def _predict(self, model: Callable, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = model(batch.to(self.device))
        if isinstance(out, (tuple, list)):
            out = out[0]  # e.g. (segmentation, reconstruction)
        if isinstance(out, Mapping):
            out = next(iter(out.values()))
        return torch.as_tensor(out).float().cpu()

    # ---------------------------------------------------------------- run
    def cells(self) -> list[tuple[str, int]]:
        """``(corruption, severity)`` in evaluation order, the clean split first as ``("clean", 0)``."""
        return [(CLEAN, 0)] + [(c, s) for c in self.corruptions for s in self.severities]

    def evaluate(self) -> dict[str, dict[tuple[str, int], dict[str, np.ndarray]]]:
        """Per-case scores: ``{model: {(corruption, severity): {"dice": (N,), "hd95": (N,)}}}``."""
        ids, images, labels, spacings = self._load()
        self.case_ids = ids
        results: dict[str, dict] = {m: {} for m in self.models}
        n_channels: dict[str, int] = {}
        for cell in tqdm(self.cells(), desc="robustness", disable=not self.progress):
            inputs, references = self._corrupted(images, labels, ids, *cell)  # once, for all models
            for model_name, model in self.models.items():
                results[model_name][cell] = self._score_model(
                    model, model_name, inputs, references, spacings, n_channels
                )
        if self.unseen_items is not None:
            ids, images, labels, spacings = self._load(self.unseen_items)
            self.unseen_ids = ids
            inputs = torch.stack(images)
            for model_name, model in self.models.items():
                scores = self._score_model(model, model_name, inputs, labels, spacings, n_channels)
                results[model_name][(UNSEEN, 0)] = scores
        return results

    def _score_model(
        self,
        model: Callable,
        model_name: str,
        inputs: torch.Tensor,
        references: torch.Tensor,
        spacings: list[Any],
        n_channels: dict[str, int],
    ) -> dict[str, np.ndarray]:
        dice, hd = [], []
        for start in range(0, len(inputs), self.batch_size):
            out = self._predict(model, inputs[start : start + self.batch_size])
            n = n_channels.setdefault(model_name, out.shape[1] - (self.mode == "multiclass"))
            pred = self._discrete(out, n)
            ref = self._reference(references[start : start + self.batch_size], n)
            d, h = self._scores(pred, ref, spacings[start : start + self.batch_size])
            dice.append(d)
            hd.append(h)
        return {"dice": np.concatenate(dice), "hd95": np.concatenate(hd)}

    def run(self) -> dict[str, Any]:
        """Evaluate, summarise, and write the tables and heat map to ``output_dir`` (when set).

        Returns:
            ``{"models": {name: summary}, "cells": [...], "files": [...]}``; a summary holds
            ``clean_dice``, ``corrupted_dice``, ``clean_hd95``, ``corrupted_hd95``, ``mce`` (None
            without a baseline) and ``unseen_dice``, ``unseen_hd95`` (None without an unseen set),
            each as ``{"mean", "ci"}``, and ``per_cell`` rows.
        """
        results = self.evaluate()
        baseline = self._baseline_scores(results)
        summary = {"models": {m: self.summarise(r, baseline) for m, r in results.items()}, "cells": self.cells()}
        summary["files"] = self.write(results, summary) if self.output_dir is not None else []
        return summary

    # ------------------------------------------------------------ summary
    def _baseline_scores(self, results: Mapping[str, Any]) -> dict[tuple[str, int], np.ndarray] | None:
        if self.baseline is None:
            return None
        if f"{self.baseline}" in results:
            return {cell: r["dice"] for cell, r in results[f"{self.baseline}"].items()}
        rows = list(csv.DictReader(Path(self.baseline).open()))
        model = self.baseline_model or (rows[0]["model"] if rows else None)
        table = {
            (r["case"], r["corruption"], int(r["severity"])): float(r["dice"]) for r in rows if r["model"] == model
        }
        out = {}
        for cell in self.cells():
            missing = [i for i in self.case_ids if (i, *cell) not in table]
            if missing:
                raise ValueError(
                    f"baseline {self.baseline} (model {model!r}) lacks {cell[0]} severity {cell[1]} for "
                    f"{len(missing)} case(s), e.g. {missing[0]}; evaluate the baseline on the same split and cells."
                )
            out[cell] = np.array([table[(i, *cell)] for i in self.case_ids])
        return out

    def summarise(
        self, scores: Mapping[tuple[str, int], Mapping[str, np.ndarray]], baseline: Mapping | None = None
    ) -> dict:
        """Means with bootstrap intervals for one model's per-case ``scores`` (see :meth:`evaluate`)."""
        cells = self.cells()
        dice = np.stack([scores[c]["dice"] for c in cells])  # (cells, N)
        hd = np.stack([scores[c]["hd95"] for c in cells])
        n = dice.shape[1]
        rng = np.random.default_rng(self.seed)
        idx = rng.integers(0, n, size=(self.n_bootstrap, n)) if self.n_bootstrap else np.zeros((0, n), dtype=int)
        boot_dice, boot_hd = dice[:, idx].mean(-1), hd[:, idx].mean(-1)  # (cells, B)

        def stat(point: Any, replicates: np.ndarray) -> dict[str, Any]:
            ci = bootstrap_interval(replicates, self.confidence) if replicates.size else (math.nan, math.nan)
            return {"mean": float(point), "ci": ci}

        out = {
            "clean_dice": stat(dice[0].mean(), boot_dice[0]),
            "corrupted_dice": stat(dice[1:].mean(), boot_dice[1:].mean(0)),
            "clean_hd95": stat(hd[0].mean(), boot_hd[0]),
            "corrupted_hd95": stat(hd[1:].mean(), boot_hd[1:].mean(0)),
            "mce": None,
            "unseen_dice": None,
            "unseen_hd95": None,
        }
        if (UNSEEN, 0) in scores:  # its own cases: its own resamples
            u_dice, u_hd = scores[(UNSEEN, 0)]["dice"], scores[(UNSEEN, 0)]["hd95"]
            u_idx = rng.integers(0, len(u_dice), size=(self.n_bootstrap, len(u_dice)))
            out["unseen_dice"] = stat(u_dice.mean(), u_dice[u_idx].mean(-1) if self.n_bootstrap else np.zeros(0))
            out["unseen_hd95"] = stat(u_hd.mean(), u_hd[u_idx].mean(-1) if self.n_bootstrap else np.zeros(0))
        if baseline is not None:
            base = np.stack([baseline[c] for c in cells])
            boot_base = base[:, idx].mean(-1)

            def by_corruption(values: np.ndarray) -> dict[str, np.ndarray]:
                k = len(self.severities)
                return {c: 1.0 - values[1 + i * k : 1 + (i + 1) * k] for i, c in enumerate(self.corruptions)}

            point = mean_corruption_error(by_corruption(dice.mean(-1)), by_corruption(base.mean(-1)))
            reps = mean_corruption_error(by_corruption(boot_dice), by_corruption(boot_base))
            out["mce"] = stat(point, np.asarray(reps))
        out["per_cell"] = [
            {
                "corruption": c,
                "severity": s,
                "dice": float(dice[i].mean()),
                "dice_ci": bootstrap_interval(boot_dice[i], self.confidence) if idx.size else (math.nan, math.nan),
                "hd95": float(hd[i].mean()),
                "hd95_ci": bootstrap_interval(boot_hd[i], self.confidence) if idx.size else (math.nan, math.nan),
            }
            for i, (c, s) in enumerate(cells)
        ]
        return out

    # -------------------------------------------------------------- files
    def write(self, results: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
        """Write ``robustness_cases.csv``, ``robustness.csv``, ``robustness.md`` and the heat map."""
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        files = [
            out / "robustness_cases.csv",
            out / "robustness.csv",
            out / "robustness.md",
            out / "robustness_heatmap.png",
        ]
        with files[0].open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "case", "corruption", "severity", "dice", "hd95"])
            for model, cells in results.items():
                for (c, s), r in cells.items():
                    cases = self.unseen_ids if c == UNSEEN else self.case_ids
                    for case, d, h in zip(cases, r["dice"], r["hd95"], strict=True):
                        w.writerow([model, case, c, s, f"{d:.6f}", f"{h:.4f}"])
        with files[1].open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "corruption", "severity", "dice", "dice_lo", "dice_hi", "hd95", "hd95_lo", "hd95_hi"])
            for model, s in summary["models"].items():
                for row in s["per_cell"]:
                    w.writerow(
                        [
                            model,
                            row["corruption"],
                            row["severity"],
                            f"{row['dice']:.4f}",
                            *(f"{v:.4f}" for v in row["dice_ci"]),
                            f"{row['hd95']:.3f}",
                            *(f"{v:.3f}" for v in row["hd95_ci"]),
                        ]
                    )
        files[2].write_text(self.markdown(summary))
        self.heatmap(summary, files[3])
        return [str(f) for f in files]

    def markdown(self, summary: Mapping[str, Any]) -> str:
        """Summary table (with intervals) and the Dice per corruption x severity of each model."""
        pct = f"{self.confidence:.0%}"
        unit = "mm" if self.spacing_key and all(it.get(self.spacing_key) for it in self.items) else "px"

        def fmt(v: Mapping | None, digits: int = 3) -> str:
            if v is None:
                return "-"
            return f"{v['mean']:.{digits}f} [{v['ci'][0]:.{digits}f}, {v['ci'][1]:.{digits}f}]"

        unseen = self.unseen_items is not None
        lines = [
            f"{len(self.items)} test cases; {len(self.corruptions)} corruptions x severities {list(self.severities)}; "
            + (f"{len(self.unseen_items)} unseen cases; " if unseen else "")
            + f"mean [{pct} bootstrap interval, {self.n_bootstrap} resamples of cases]; HD95 in {unit}.",
            "",
            f"| model | clean Dice | corrupted Dice | mCE (baseline {self._baseline_label()}) | clean HD95 | corrupted HD95 |"
            + (" unseen Dice | unseen HD95 |" if unseen else ""),
            "|---|---|---|---|---|---|" + ("---|---|" if unseen else ""),
        ]
        for model, s in summary["models"].items():
            lines.append(
                f"| {model} | {fmt(s['clean_dice'])} | {fmt(s['corrupted_dice'])} | {fmt(s['mce'])} | "
                f"{fmt(s['clean_hd95'], 2)} | {fmt(s['corrupted_hd95'], 2)} |"
                + (f" {fmt(s['unseen_dice'])} | {fmt(s['unseen_hd95'], 2)} |" if unseen else "")
            )
        for model, s in summary["models"].items():
            lines += ["", f"Dice of {model} per corruption and severity:", ""]
            lines.append("| corruption | " + " | ".join(f"{v}" for v in self.severities) + " | mean |")
            lines.append("|---|" + "---|" * (len(self.severities) + 1))
            rows = s["per_cell"][1:]
            for i, c in enumerate(self.corruptions):
                values = [r["dice"] for r in rows[i * len(self.severities) : (i + 1) * len(self.severities)]]
                lines.append(f"| {c} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |")
        return "\n".join(lines) + "\n"

    def _baseline_label(self) -> str:
        """The baseline as the tables name it: a model of this run, or a CSV's folder and name (no machine path)."""
        if self.baseline is None:
            return "-"
        if f"{self.baseline}" in self.models:
            return f"{self.baseline}"
        path = Path(self.baseline)
        return f"{path.parent.name}/{path.name}" + (f" ({self.baseline_model})" if self.baseline_model else "")

    def heatmap(self, summary: Mapping[str, Any], path: str | os.PathLike) -> None:
        """Dice per corruption (rows) x severity (columns), one panel per model, clean Dice in the title."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        models = list(summary["models"])
        k = len(self.severities)
        fig, axes = plt.subplots(
            1, len(models), figsize=(2.2 + 1.1 * k * len(models), 0.32 * len(self.corruptions) + 1.6), squeeze=False
        )
        for ax, model in zip(axes[0], models, strict=True):
            s = summary["models"][model]
            grid = np.array([r["dice"] for r in s["per_cell"][1:]]).reshape(len(self.corruptions), k)
            im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
            ax.set_xticks(range(k), [f"{v}" for v in self.severities])
            ax.set_yticks(
                range(len(self.corruptions)), self.corruptions if ax is axes[0][0] else [""] * len(self.corruptions)
            )
            ax.set_xlabel("severity")
            ax.set_title(f"{model}\nclean Dice {s['clean_dice']['mean']:.3f}", fontsize=9)
        fig.colorbar(im, ax=axes[0].tolist(), label="Dice", shrink=0.8)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
