"""MONAI-style array and dictionary transforms of mimtl."""

from __future__ import annotations

from mimtl.transforms.image import (
    COLOR_MODES,
    LUMINANCE_WEIGHTS,
    EnsureGrayscale,
    EnsureGrayscaled,
    EnsureGrayscaleD,
    EnsureGrayscaleDict,
    ImageFormatError,
)
from mimtl.transforms.landmarks import OUTSIDE_MODES, DecodeLandmarksd, LandmarksToWorldd, SetPixelSpacingd, as_points

__all__ = [
    "COLOR_MODES",
    "DecodeLandmarksd",
    "EnsureGrayscale",
    "EnsureGrayscaleD",
    "EnsureGrayscaleDict",
    "EnsureGrayscaled",
    "ImageFormatError",
    "LUMINANCE_WEIGHTS",
    "LandmarksToWorldd",
    "OUTSIDE_MODES",
    "SetPixelSpacingd",
    "as_points",
]
