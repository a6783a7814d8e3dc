"""Losses beyond MONAI's."""

from __future__ import annotations

from mimtl.losses.classification import MaskedBCEWithLogitsLoss, classification_loss
from mimtl.losses.feature_gan import ACGANLoss, gradient_penalty
from mimtl.losses.landmarks import HEATMAP_LOSSES, HeatmapLoss, render_heatmaps
from mimtl.losses.segmentation import SegReconLoss
from mimtl.losses.tile_ae import TileAELoss, sliced_wasserstein

__all__ = [
    "HEATMAP_LOSSES",
    "ACGANLoss",
    "HeatmapLoss",
    "MaskedBCEWithLogitsLoss",
    "SegReconLoss",
    "TileAELoss",
    "classification_loss",
    "gradient_penalty",
    "render_heatmaps",
    "sliced_wasserstein",
]
