"""Losses beyond MONAI's."""

from __future__ import annotations

from mimtl.losses.classification import MaskedBCEWithLogitsLoss, classification_loss
from mimtl.losses.landmarks import HEATMAP_LOSSES, HeatmapLoss, render_heatmaps

__all__ = ["HEATMAP_LOSSES", "HeatmapLoss", "MaskedBCEWithLogitsLoss", "classification_loss", "render_heatmaps"]
