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

__all__ = [
    "COLOR_MODES",
    "EnsureGrayscale",
    "EnsureGrayscaleD",
    "EnsureGrayscaleDict",
    "EnsureGrayscaled",
    "ImageFormatError",
    "LUMINANCE_WEIGHTS",
]
