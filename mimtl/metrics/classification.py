"""Per-label metrics for multi-label (and one-hot multi-class) classification."""

from __future__ import annotations

import re
from collections.abc import Sequence

from monai.handlers import ROCAUC, from_engine

__all__ = ["metric_name", "per_label_auc"]


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
