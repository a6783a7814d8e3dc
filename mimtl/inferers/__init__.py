"""Inferers: MONAI's ``Inferer`` interface with the fast paths as config switches."""

from __future__ import annotations

from mimtl.inferers.accelerated import AcceleratedInferer
from mimtl.inferers.landmarks import DECODE_METHODS, LandmarkDecoder, decode_heatmaps

__all__ = ["DECODE_METHODS", "AcceleratedInferer", "LandmarkDecoder", "decode_heatmaps"]
