"""Deprecated: moved to :mod:`mimtl.data.dataset`; this alias goes in the next release."""

import sys
import warnings

import mimtl.data.dataset as _moved

warnings.warn(
    "mimtl.io.dataset moved to mimtl.data.dataset; the old name goes in the next release.",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved  # the same module object: names, identity and patches all carry over
