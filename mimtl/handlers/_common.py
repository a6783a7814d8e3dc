"""Helpers shared by the handlers that write evaluator outputs to files."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch
from monai.utils import ImageMetaKey

__all__ = ["filename_of", "font", "per_item", "rank_suffix", "to_uint8", "write_atomic"]


def per_item(data: Any) -> list[Mapping]:
    """``engine.state.batch``/``output`` as a list of per-item dicts, whichever form it has."""
    if isinstance(data, Mapping):  # decollate=False: a dict of batched values
        return list(decollate_batch(data, detach=True))
    if isinstance(data, (list, tuple)):
        return [d if isinstance(d, Mapping) else {} for d in data]
    return []


def filename_of(item: Mapping, output: Mapping, key: str) -> str:
    """The input file of one item: its image's meta, the legacy ``<key>_meta_dict``, or ''."""
    for source in (item, output):
        image = source.get(key)
        if isinstance(image, MetaTensor) and image.meta.get(ImageMetaKey.FILENAME_OR_OBJ):
            return f"{image.meta[ImageMetaKey.FILENAME_OR_OBJ]}"
        meta = source.get(f"{key}_meta_dict")
        if isinstance(meta, Mapping) and meta.get(ImageMetaKey.FILENAME_OR_OBJ):
            return f"{meta[ImageMetaKey.FILENAME_OR_OBJ]}"
    return ""


def rank_suffix() -> str:
    """'' in a single process; '.rank<r>' when torch.distributed runs (each rank writes its own rows)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_world_size() > 1:
            return f".rank{torch.distributed.get_rank()}"
    return ""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_uint8(image: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(image)), float(np.max(image))
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return np.zeros(image.shape, np.uint8)
    return np.round((image - lo) / (hi - lo) * 255.0).astype(np.uint8)


def font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()
