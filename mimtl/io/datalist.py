"""Datalists: MONAI's list-of-dicts input, read from JSON or a folder, validated up front."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mimtl.io.validate import DataValidationError, validate_datalist

__all__ = ["IMAGE_SUFFIXES", "list_images", "load_datalist"]

#: File endings :func:`list_images` picks up (lower case; ``.nii.gz`` counts as one).
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")


def list_images(
    folder: str | os.PathLike,
    key: str = "image",
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    recursive: bool = False,
    deep: bool = True,
) -> list[dict]:
    """A datalist ``[{key: path}, ...]`` of the image files in ``folder``, sorted, validated.

    For inference on a user's own folder of DICOM / PNG / NIfTI files.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataValidationError(f"Image folder '{root}' does not exist or is not a folder.")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in root.glob(pattern) if p.is_file() and p.name.lower().endswith(tuple(suffixes)))
    if not files:
        raise DataValidationError(f"No image files ({', '.join(suffixes)}) in '{root}'.")
    return list(validate_datalist([{key: str(f)} for f in files], keys=(key,), source=str(root), deep=deep))


def load_datalist(
    path: str | os.PathLike,
    data_list_key: str = "training",
    base_dir: str | os.PathLike | None = None,
    keys: Sequence[str] = ("image",),
    deep: bool = True,
) -> list[dict]:
    """Read a MONAI (Decathlon-style) datalist JSON, resolve its paths and validate it.

    Use it in a bundle config as the ``data`` of a dataset, so a broken datalist stops the run
    before the first epoch with one message that lists every bad file.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"Datalist file '{path}' does not exist.")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataValidationError(f"Datalist '{path}' is not valid JSON: {e}") from None
    if data_list_key not in content:
        raise DataValidationError(f"Datalist '{path}' has no '{data_list_key}' list (has: {', '.join(content)}).")
    # Relative paths are relative to base_dir, by default the datalist's folder (as in MONAI).
    base = Path(base_dir) if base_dir is not None else path.parent
    items = [dict(item) for item in content[data_list_key]]
    for item in items:
        for key in keys:
            if isinstance(item.get(key), str):
                item[key] = str(base / item[key])
            elif isinstance(item.get(key), list):
                item[key] = [str(base / v) for v in item[key]]
    return list(validate_datalist(items, keys=keys, source=str(path), deep=deep))
