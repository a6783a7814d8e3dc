"""Deprecated: moved to :mod:`mimtl.data.datalist`; this alias goes in the next release."""

import sys
import warnings

import mimtl.data.datalist as _moved

warnings.warn(
    "mimtl.io.datalist moved to mimtl.data.datalist; the old name goes in the next release.",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved  # the same module object: names, identity and patches all carry over
