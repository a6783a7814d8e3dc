"""Losses beyond MONAI's."""

from __future__ import annotations

from mimtl.losses.classification import MaskedBCEWithLogitsLoss, classification_loss

__all__ = ["MaskedBCEWithLogitsLoss", "classification_loss"]
