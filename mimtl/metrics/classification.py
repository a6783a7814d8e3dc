"""Per-label metrics for multi-label (and one-hot multi-class) classification."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from monai.handlers import ROCAUC, from_engine

__all__ = ["metric_name", "per_label_auc", "youden_thresholds"]


def metric_name(prefix: str, label: str) -> str:
    """A metric name safe for CSV headers and log lines: ``("val_auc_", "Pleural Effusion") -> "val_auc_pleural_effusion"``."""
    return prefix + re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")


class _Column:
    """``output_transform`` that keeps one label's column of ``pred`` and ``label`` (picklable, unlike a lambda)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.select = from_engine(["pred", "label"])

    def __call__(self, output):
        preds, labels = self.select(output)
        i = self.index
        return [p[i : i + 1] for p in preds], [y[i : i + 1] for y in labels]


def per_label_auc(label_names: Sequence[str], prefix: str = "val_auc_") -> dict[str, ROCAUC]:
    """One MONAI ``ROCAUC`` handler per label, for an evaluator's ``additional_metrics``.

    The key metric usually is the macro average (``ROCAUC(average="macro")``); these give the
    per-label values beside it, so ``MetricsSaver`` writes them to ``metrics.csv`` and the
    ``StatsHandler`` logs them. A label without both classes in the evaluated set gets NaN
    (MONAI warns), which is the honest value.

    Example (YAML)::

        additional_metrics: {_target_: mimtl.metrics.per_label_auc, label_names: '@label_names'}
    """
    names = [metric_name(prefix, n) for n in label_names]
    if len(set(names)) != len(names):
        raise ValueError(f"label names {list(label_names)} give duplicate metric names {names}.")
    return {name: ROCAUC(output_transform=_Column(i)) for i, name in enumerate(names)}


def youden_thresholds(probs, labels, label_names: Sequence[str]) -> dict[str, float]:
    """Per-label decision thresholds that maximise Youden's J (sensitivity + specificity - 1).

    Choose them on the validation split (never on the test split whose results you report) and
    ship them in ``metadata.json``; a label without both classes keeps 0.5. Entries of -1
    (CheXpert "ignore") are left out.

    Args:
        probs: ``(N, L)`` probabilities.
        labels: ``(N, L)`` 0/1 labels.
        label_names: the ``L`` names, used as keys.
    """
    probs, labels = np.asarray(probs, dtype=float), np.asarray(labels, dtype=float)
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(label_names):
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must both be (N, {len(label_names)}).")
    out = {}
    for j, name in enumerate(label_names):
        keep = labels[:, j] >= 0
        p, y = probs[keep, j], labels[keep, j] > 0.5
        if y.all() or not y.any():
            out[name] = 0.5
            continue
        candidates = np.unique(p)
        j_stat = [(p[y] >= t).mean() + (p[~y] < t).mean() - 1.0 for t in candidates]
        out[name] = float(candidates[int(np.argmax(j_stat))])
    return out
