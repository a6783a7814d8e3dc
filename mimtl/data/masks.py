"""Segmentation datalists: every image paired with its mask explicitly, every mask checked up front.

The public code of Chen et al. paired images and masks by the order of two unsorted directory
listings; a datalist names both files in one item instead, and :func:`load_segmentation_datalist`
refuses, before any training, a list where

* an item has no mask (an image without its mask in a training list),
* a mask's size differs from its image's,
* a mask holds values other than its label values (a non-binary "binary" mask, a JPEG-smoothed
  edge, a label id the model has no channel for),
* a mask is empty (no foreground at all) unless ``allow_empty``,

with one message that names every bad file and why (a :class:`~mimtl.data.DataValidationError`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mimtl.data.datalist import _read_json, load_datalist
from mimtl.data.validate import DataValidationError

__all__ = ["check_mask", "label_values", "load_segmentation_datalist"]

_MAX_LISTED = 20


def label_values(path: str | os.PathLike, default: Sequence[int] | None = None) -> list[int]:
    """The label values of a segmentation datalist: the keys of its top-level ``"labels"`` mapping.

    E.g. ``{"0": "background", "1": "left lung", ...}`` gives ``[0, 1, ...]``; without such a mapping,
    ``default`` (None: ``[0, 1, 255]``: a binary mask stored as 0/1 or 0/255).
    """
    labels = _read_json(Path(path)).get("labels")
    if isinstance(labels, dict):
        try:
            return sorted(int(k) for k in labels)
        except ValueError:
            raise DataValidationError(f"Datalist '{path}': \"labels\" keys must be label values (integers).") from None
    return list(default) if default is not None else [0, 1, 255]


def _read_array(path: str) -> np.ndarray:
    from monai.transforms import LoadImage

    from mimtl.io import MedicalImageReader

    img = LoadImage(reader=MedicalImageReader, image_only=True, ensure_channel_first=False)(path)
    return np.asarray(img)


def _spatial(shape: Sequence[int]) -> tuple[int, ...]:
    """The spatial size of a 2D image array (a trailing colour channel of 3/4 dropped, as the readers keep it)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        shape = shape[:2]
    return shape


def check_mask(
    image: str, mask: str, values: Sequence[int], allow_empty: bool = False, background: int = 0
) -> str | None:
    """What is wrong with ``mask`` as the mask of ``image``, or None.

    Args:
        image: the image file (its size is compared).
        mask: the mask file.
        values: the values a mask may hold.
        allow_empty: accept a mask with no foreground.
        background: the background value.
    """
    try:
        m = _read_array(mask)
    except Exception as e:  # an unreadable mask is named with the reason
        return f"mask {mask} cannot be read: {e}"
    try:
        i = _read_array(image)
    except Exception as e:
        return f"image {image} cannot be read: {e}"
    for kind, path, arr in (("image", image, i), ("mask", mask, m)):
        if len(_spatial(arr.shape)) != 2:
            return f"{kind} {path} is a 3D volume of shape {tuple(arr.shape)}, not a 2D radiograph"
    if _spatial(m.shape) != _spatial(i.shape):
        return f"mask {mask} is {_spatial(m.shape)} pixels but its image {image} is {_spatial(i.shape)}"
    found = np.unique(m)
    if not np.all(np.isfinite(found)):
        return f"mask {mask} holds NaN or infinite values"
    extra = [v for v in found.tolist() if v not in set(values)]
    if extra:
        shown = ", ".join(f"{v:g}" for v in extra[:8]) + (", ..." if len(extra) > 8 else "")
        return (
            f"mask {mask} holds values other than its label values {list(values)}: {shown} "
            "(a non-binary or smoothed mask, e.g. saved as JPEG?)"
        )
    if not allow_empty and not np.any(m != background):
        return f"mask {mask} is empty (no foreground pixel); remove the item or set allow_empty"
    return None


def load_segmentation_datalist(
    path: str | os.PathLike,
    data_list_key: str = "training",
    image_key: str = "image",
    label_key: str = "label",
    values: Sequence[int] | None = None,
    allow_empty: bool = False,
    base_dir: str | os.PathLike | None = None,
    deep: bool = False,
    fraction: float = 1.0,
    fraction_seed: int = 0,
    check_masks: bool = True,
) -> list[dict]:
    """Read a segmentation datalist (image + mask per item), validate the files and the masks, return its items.

    Files are validated as :func:`~mimtl.data.load_datalist` does (both keys); then each mask is
    decoded and checked against its image (:func:`check_mask`).

    Args:
        path: the datalist JSON.
        data_list_key: the list to read.
        image_key: the key of the image path.
        label_key: the key of the mask path.
        values: the values a mask may hold (default: :func:`label_values` of the datalist).
        allow_empty: accept masks with no foreground.
        base_dir: the folder relative paths are relative to (default: the JSON's folder).
        deep: decode the images while validating the files.
        fraction: keep a seeded share of the items (training-fraction experiments).
        fraction_seed: the seed of that share.
        check_masks: decode and check every mask (off: files are still validated).

    Raises:
        DataValidationError: an item without a mask, bad files, or bad masks: every one listed with its file.
    """
    content = _read_json(Path(path))
    raw = content.get(data_list_key)
    if isinstance(raw, list):
        orphans = [
            f"entry {i}: image {item.get(image_key, '?')} has no mask ('{label_key}' key)"
            for i, item in enumerate(raw)
            if isinstance(item, dict) and not item.get(label_key)
        ]
        if orphans:
            raise DataValidationError(_message(orphans, f"'{path}' ({data_list_key})", len(raw)))
    items = load_datalist(
        path,
        data_list_key,
        base_dir=base_dir,
        keys=(image_key, label_key),
        deep=deep,
        fraction=fraction,
        fraction_seed=fraction_seed,
    )
    if not check_masks:
        return items
    allowed = list(values) if values is not None else label_values(path)
    problems = _mask_problems(items, image_key, label_key, allowed, allow_empty)
    if problems:
        raise DataValidationError(_message(problems, f"'{path}' ({data_list_key})", len(items)))
    return items


def _mask_problems(
    items: Sequence[dict[str, Any]], image_key: str, label_key: str, values: Sequence[int], allow_empty: bool
) -> list[str]:
    from tqdm.auto import tqdm

    problems = []
    for i, item in enumerate(tqdm(items, desc="checking masks", unit="mask", leave=False)):
        reason = check_mask(item[image_key], item[label_key], values, allow_empty)
        if reason:
            problems.append(f"entry {i}: {reason}")
    return problems


def _message(problems: Sequence[str], source: str, n: int) -> str:
    listed = "\n  - ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{len(problems)} problem(s) in {source} ({n} entries); nothing was trained:\n  - {listed}{more}"
