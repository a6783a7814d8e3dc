"""Deprecated: moved to :mod:`mimtl.transforms.heatmaps`; this alias goes in the next release."""

import sys
import warnings

import mimtl.transforms.heatmaps as _moved

warnings.warn(
    "mimtl.inferers.landmarks moved to mimtl.transforms.heatmaps; the old name goes in the next release.",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved  # the same module object: names, identity and patches all carry over
