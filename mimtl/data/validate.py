"""Check a datalist before any training starts.

A broken file found at epoch 7 loses six epochs of work and ends in a deep traceback from a
worker process. These helpers open every file once, up front, and raise one error that names
each bad file and why it is bad.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mimtl.errors import DataValidationError  # defined once, for every layer

__all__ = ["DataValidationError", "check_image_file", "validate_datalist"]

_MAX_LISTED = 20




def check_image_file(path: str | os.PathLike, deep: bool = True) -> str | None:
    """Return why ``path`` is not a usable image, or None when it is.

    Args:
        path: the file.
        deep: also decode it (catches truncated, wrong-type and NaN-filled files), not only
            check that it exists and is not empty.
    """
    p = Path(path)
    if not p.exists():
        return "does not exist"
    if p.is_dir():
        return "is a folder, not a file" if not _is_dicom_series(p) else None
    if p.stat().st_size == 0:
        return "is empty (0 bytes)"
    if not deep:
        return None
    import torch

    from mimtl.io import load_image

    try:
        img = load_image(p)
    except Exception as e:  # every reader fails differently; the message is what matters
        return f"cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
    if img.numel() == 0:
        return "holds no pixels"
    if img.is_floating_point() and not torch.isfinite(img).all():
        return f"contains {int((~torch.isfinite(img)).sum())} NaN/Inf values"
    return None


def _is_dicom_series(folder: Path) -> bool:
    return any(f.suffix.lower() == ".dcm" for f in folder.iterdir())


def validate_datalist(
    datalist: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("image",),
    source: str = "datalist",
    deep: bool = True,
    progress: bool = True,
) -> Sequence[Mapping[str, Any]]:
    """Check every file that ``keys`` point at; return the datalist unchanged when all are usable.

    Args:
        datalist: a list of dicts as MONAI datasets take (``[{"image": path, "label": ...}]``).
        keys: the keys whose values are file paths (a value may also be a list of paths).
        source: how to name the datalist in the error (usually its file name).
        deep: decode every file (see :func:`check_image_file`).
        progress: show a progress bar while checking.

    Raises:
        DataValidationError: listing every bad entry with its file and reason.
    """
    from tqdm.auto import tqdm

    if not datalist:
        raise DataValidationError(f"{source} has no entries.")
    problems = []
    bar = tqdm(datalist, desc=f"checking {Path(source).name}", unit="item", disable=not progress, leave=False)
    for i, item in enumerate(bar):
        for key in keys:
            if key not in item:
                problems.append(f"entry {i}: no '{key}' key (has: {', '.join(map(str, item))})")
                continue
            values = item[key] if isinstance(item[key], (list, tuple)) else [item[key]]
            for value in values:
                reason = check_image_file(value, deep=deep)
                if reason:
                    problems.append(f"entry {i} '{key}': {value} {reason}")
    if problems:
        listed = "\n  - ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise DataValidationError(
            f"{len(problems)} problem(s) in {source} ({len(datalist)} entries); nothing was trained:\n  - {listed}{more}"
        )
    return datalist
