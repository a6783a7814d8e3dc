"""The raw ``.IMG`` files of the JSRT chest radiograph database, as a MONAI ``ImageReader``.

A JSRT ``.IMG`` file is raw pixel data without a header: 2048 x 2048 pixels, 12 bits stored in
16-bit big-endian words, row by row from the top, 0.175 mm pixels. The stored values are
film-density-like: *high = dark* (air), so they are inverted for mimtl's bright = dense
convention. :class:`JSRTReader` claims only ``.img`` files whose size is that of a square 16-bit
image and that have no Analyze ``.hdr`` beside them; it is one of the formats
:class:`~mimtl.io.MedicalImageReader` dispatches to. The data-set adapter (layout, SCR masks,
splits) is :mod:`mimtl.data.adapters.jsrt`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, ensure_tuple

from mimtl.io.meta import ImageNotFoundError, ImageReadError

__all__ = ["JSRT_BITS", "JSRT_SIZE", "JSRT_SPACING_MM", "JSRTReader", "read_jsrt"]

#: Pixels per side of a JSRT image.
JSRT_SIZE = 2048
#: Pixel size in mm.
JSRT_SPACING_MM = 0.175
#: Bits stored per pixel.
JSRT_BITS = 12


def _raw_side(path: Path) -> int | None:
    """The side of a square 16-bit raw image of this file's size, None when there is none."""
    size = path.stat().st_size
    if size < 2 or size % 2:
        return None
    side = math.isqrt(size // 2)
    return side if side * side * 2 == size else None


def read_jsrt(path: str | os.PathLike, invert: bool = True) -> np.ndarray:
    """The pixels of a JSRT ``.IMG`` file as a ``(rows, columns)`` uint16 array, top row first.

    Args:
        path: the file (2048 x 2048 in the data set; any square 16-bit big-endian raw file is read).
        invert: return ``4095 - stored`` so that dense structures are bright (the stored values
            are high for dark film).

    Raises:
        ImageNotFoundError: the file does not exist.
        ImageReadError: its size is not that of a square 16-bit image, or values exceed 12 bits.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageNotFoundError(path, "file not found")
    side = _raw_side(path)
    if side is None:
        raise ImageReadError(
            path, f"{path.stat().st_size} bytes is not a square 16-bit raw image (a JSRT .IMG has {2 * JSRT_SIZE**2})"
        )
    stored = np.fromfile(path, dtype=">u2").reshape(side, side)
    top = int(stored.max(initial=0))
    if top >= 1 << JSRT_BITS:
        raise ImageReadError(path, f"value {top} exceeds 12 bits: not JSRT raw data (or not big-endian)")
    pixels = stored.astype(np.uint16)
    return ((1 << JSRT_BITS) - 1 - pixels).astype(np.uint16) if invert else pixels


class JSRTReader(ImageReader):
    """MONAI ``ImageReader`` for the raw ``.IMG`` files of the JSRT database.

    Output: a float32 ``[x, y]`` array (shape ``(columns, rows)``, like ``PILReader`` and
    :class:`~mimtl.io.DicomXrayReader`, so the SCR GIF masks read by ``PILReader`` line up),
    spacing 0.175 mm, affine ``diag(0.175, 0.175, 1, 1)``. Values: ``4095 - stored`` (bright =
    dense, ``invert=True``), divided by 4095 when ``normalize=True`` (default, [0, 1] like
    ``DicomXrayReader``).

    Args:
        invert: invert the stored film-density values so that dense structures are bright.
        normalize: scale the 12-bit range to [0, 1].
        spacing: pixel size in mm (0.175 for JSRT).
        channel_dim: recorded as ``original_channel_dim``; None means no channel.
    """

    suffixes: tuple[str, ...] = ("img",)

    def __init__(
        self,
        invert: bool = True,
        normalize: bool = True,
        spacing: float = JSRT_SPACING_MM,
        channel_dim: str | int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.invert = invert
        self.normalize = normalize
        self.spacing = float(spacing)
        self.channel_dim = float("nan") if channel_dim in (None, "no_channel") else channel_dim

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every file is a ``.img`` of square 16-bit raw size without an Analyze ``.hdr``."""
        for name in ensure_tuple(filename):
            path = Path(f"{name}")
            if path.suffix.lower() != ".img" or path.with_suffix(".hdr").exists() or path.with_suffix(".HDR").exists():
                return False
            try:
                if _raw_side(path) is None:
                    return False
            except OSError:  # missing file: let read() report it
                pass
        return True

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """Read one file (or several, stacked as channels by ``get_data``)."""
        images = [(Path(f"{name}"), read_jsrt(name, invert=self.invert)) for name in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The ``[x, y]`` float32 array and its metadata (several images: stacked on axis 0)."""
        items = img if isinstance(img, list) else [img]
        arrays = []
        for _, pixels in items:
            array = pixels.T.astype(np.float32)  # (rows, columns) -> [x, y]
            if self.normalize:
                array /= float((1 << JSRT_BITS) - 1)
            arrays.append(np.ascontiguousarray(array))
        path = items[0][0]
        affine = np.diag([self.spacing, self.spacing, 1.0, 1.0])
        meta: dict[str, Any] = {
            ImageMetaKey.FILENAME_OR_OBJ: f"{path}",
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(arrays[0].shape, dtype=np.int64),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: self.channel_dim,
            "spacing": np.asarray([self.spacing, self.spacing], dtype=np.float64),
            "spacing_known": True,
            "spacing_source": "JSRT specification (0.175 mm pixels)",
            "bits_stored": JSRT_BITS,
            "photometric_interpretation": "MONOCHROME2" if self.invert else "MONOCHROME1",
            "modality": "",
            "window": np.array([np.nan, np.nan]),
            "intensity_convention": (
                ("4095 - stored" if self.invert else "stored values (high = dark)")
                + (", divided by 4095 ([0, 1])" if self.normalize else "")
            ),
        }
        if len(arrays) == 1:
            return arrays[0], meta
        if any(a.shape != arrays[0].shape for a in arrays):
            raise ImageReadError(path, "images to stack as channels differ in shape")
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta
