"""mimtl: medical imaging transfer learning as MONAI bundles.

The package is the code that bundles instantiate; ``bundles/`` holds configuration only.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "find_bundle", "list_bundles", "load_bundle"]


def __getattr__(name: str):
    # Lazy so that ``import mimtl`` stays cheap (the CLI imports torch only when needed).
    if name in ("load_bundle", "list_bundles", "find_bundle"):
        from mimtl import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'mimtl' has no attribute {name!r}")
