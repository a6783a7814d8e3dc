"""Metrics and metric handlers beyond MONAI's."""

from __future__ import annotations

from mimtl.metrics.classification import metric_name, per_label_auc, youden_thresholds

__all__ = ["metric_name", "per_label_auc", "youden_thresholds"]
