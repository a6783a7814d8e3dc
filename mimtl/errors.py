"""Errors shared across mimtl's layers, and the one rule for which error a user is shown.

This module imports nothing from mimtl, so every layer (io, data, transforms, bundle, cli) can
use it without importing upward.
"""

from __future__ import annotations

__all__ = ["DataValidationError", "root_cause"]


class DataValidationError(ValueError):
    """One or more datalist entries point at missing or unusable files, or data is malformed."""


def root_cause(e: BaseException) -> BaseException:
    """The error worth showing a user from a chain MONAI built by re-raising ``from`` it.

    That is the first mimtl error in the chain (it names the file or key and the reason),
    else the innermost exception.
    """
    while not type(e).__module__.startswith("mimtl") and e.__cause__ is not None:
        e = e.__cause__
    return e
