"""Deprecated: moved to :mod:`mimtl.sim.sources`; this alias goes in the next release."""

import sys
import warnings

import mimtl.sim.sources as _moved

warnings.warn(
    "mimtl.io.sources moved to mimtl.sim.sources; the old name goes in the next release.",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved  # the same module object: names, identity and patches all carry over
