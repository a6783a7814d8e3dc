"""Losses beyond MONAI's."""

from __future__ import annotations

from mimtl.losses.classification import MaskedBCEWithLogitsLoss, classification_loss
from mimtl.losses.feature_gan import ACGANLoss, gradient_penalty
from mimtl.losses.landmarks import HEATMAP_LOSSES, HeatmapLoss, render_heatmaps

__all__ = [
    "HEATMAP_LOSSES",
    "ACGANLoss",
    "HeatmapLoss",
    "MaskedBCEWithLogitsLoss",
    "classification_loss",
    "gradient_penalty",
    "render_heatmaps",
]
