"""Deprecated: moved to :mod:`mimtl.data.adapters`; this alias goes in the next release."""

import sys
import warnings

import mimtl.data.adapters as _moved

warnings.warn(
    "mimtl.io.adapters moved to mimtl.data.adapters; the old name goes in the next release.",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved  # the same module object: names, identity and patches all carry over
