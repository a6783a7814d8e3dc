"""MONAI-style array and dictionary transforms of mimtl."""

from __future__ import annotations

from mimtl.transforms.heatmaps import DECODE_METHODS, LandmarkDecoder, decode_heatmaps
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
from mimtl.transforms.meta import (
    StandardizeImageMeta,
    StandardizeImageMetaD,
    StandardizeImageMetad,
    StandardizeImageMetaDict,
)

__all__ = [
    "COLOR_MODES",
    "DECODE_METHODS",
    "DecodeLandmarksd",
    "EnsureGrayscale",
    "EnsureGrayscaleD",
    "EnsureGrayscaleDict",
    "EnsureGrayscaled",
    "ImageFormatError",
    "LUMINANCE_WEIGHTS",
    "LandmarkDecoder",
    "LandmarksToWorldd",
    "OUTSIDE_MODES",
    "SetPixelSpacingd",
    "StandardizeImageMeta",
    "StandardizeImageMetaD",
    "StandardizeImageMetaDict",
    "StandardizeImageMetad",
    "as_points",
    "decode_heatmaps",
]
