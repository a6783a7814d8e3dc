"""Metrics and metric handlers beyond MONAI's."""

from __future__ import annotations

from mimtl.metrics.classification import metric_name, per_label_auc, youden_thresholds
from mimtl.metrics.conformal import conformal_radius, empirical_coverage, min_calibration_size
from mimtl.metrics.landmarks import (
    DEFAULT_SDR_THRESHOLDS,
    MeanRadialError,
    MeanRadialErrorHandler,
    SuccessDetectionRate,
    SuccessDetectionRateHandler,
    landmark_summary,
    radial_errors,
    sdr_handlers,
    success_detection_rate,
)
from mimtl.metrics.robustness import RobustnessEvaluation, bootstrap_interval, mean_corruption_error

__all__ = [
    "DEFAULT_SDR_THRESHOLDS",
    "MeanRadialError",
    "MeanRadialErrorHandler",
    "RobustnessEvaluation",
    "SuccessDetectionRate",
    "SuccessDetectionRateHandler",
    "bootstrap_interval",
    "conformal_radius",
    "empirical_coverage",
    "landmark_summary",
    "mean_corruption_error",
    "metric_name",
    "min_calibration_size",
    "per_label_auc",
    "radial_errors",
    "sdr_handlers",
    "success_detection_rate",
    "youden_thresholds",
]
