"""Inferers: MONAI's ``Inferer`` interface with the fast paths as config switches."""

from __future__ import annotations

import importlib
import warnings

from mimtl.inferers.accelerated import AcceleratedInferer

__all__ = ["AcceleratedInferer"]

_MOVED = ("DECODE_METHODS", "LandmarkDecoder", "decode_heatmaps")  # array transforms: mimtl.transforms.heatmaps


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(
            f"mimtl.inferers.{name} moved to mimtl.transforms.{name}; the old name goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("mimtl.transforms.heatmaps"), name)
    raise AttributeError(f"module 'mimtl.inferers' has no attribute {name!r}")
