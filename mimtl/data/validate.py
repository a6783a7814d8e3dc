"""Check a datalist before any training starts.

A broken file found at epoch 7 loses six epochs of work and ends in a deep traceback from a
worker process. These helpers open every file once, up front, and raise one error that names
each bad file and why it is bad.

By default each file's header is read, not its pixels (:func:`check_image_file`): a missing,
empty, mistyped or truncated-header file is found in milliseconds even on a large set. A full
decode (``deep=True``, ``mimtl check-data --deep``) also finds damaged pixel data and NaN/Inf
values. Under ``torch.distributed`` only rank 0 checks; the other ranks wait for its verdict and
fail with the same message (:func:`validate_datalist`).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mimtl.errors import DataValidationError  # defined once, for every layer

__all__ = ["DataValidationError", "check_image_file", "validate_datalist"]

_MAX_LISTED = 20


def check_image_file(path: str | os.PathLike, deep: bool = False) -> str | None:
    """Return why ``path`` is not a usable image, or None when it is.

    The default is a header check, which reads no pixel data: the file exists and is not empty,
    and the header of its format (the reader :class:`~mimtl.io.MedicalImageReader` would use)
    reads and describes pixels:

    * DICOM: ``pydicom.dcmread(stop_before_pixels=True)``; Rows, Columns and BitsAllocated
      present and non-zero; uncompressed pixel data that would not fit in the file is truncation;
    * PNG: the header, then the chunks and their checksums up to ``IEND`` (read, not inflated),
      so a cut-off download is found; JPEG/BMP/TIFF: the header (size and mode);
    * NIfTI (nibabel) and MetaImage/NRRD (SimpleITK ``ReadImageInformation``): the header, a
      non-empty shape, and for an uncompressed ``.nii`` a file long enough for its voxels;
    * JSRT raw ``.IMG``: the size of a square 16-bit image; NumPy: the ``.npy`` header;
    * anything else is decoded (there is no header to read).

    Args:
        path: the file.
        deep: also decode it (finds truncated or corrupt pixel data the header check cannot,
            e.g. in a JPEG or BMP, and NaN/Inf values, at the cost of reading every pixel).
    """
    p = Path(path)
    if not p.exists():
        return "does not exist"
    if p.is_dir():
        return "is a folder, not a file" if not _is_dicom_series(p) else None
    if p.stat().st_size == 0:
        return "is empty (0 bytes)"
    header = _header_check(p)
    if header is not _DECODE and (header or not deep):
        return header
    import torch

    from mimtl.io import load_image

    try:
        img = load_image(p)
    except Exception as e:  # every reader fails differently; the message is what matters
        return _unreadable(e)
    if img.numel() == 0:
        return "holds no pixels"
    if img.is_floating_point() and not torch.isfinite(img).all():
        return f"contains {int((~torch.isfinite(img)).sum())} NaN/Inf values"
    return None


def _unreadable(error: BaseException) -> str:
    return f"cannot be read ({type(error).__name__}: {' '.join(str(error).split())[:300]})"


_DECODE = "decode"  # a format without a header to check: decode the file


@functools.lru_cache(maxsize=1)
def _dispatcher() -> Any:
    from mimtl.io import MedicalImageReader

    return MedicalImageReader()


def _header_check(p: Path) -> str | None:
    """Why the header of ``p`` is not that of a usable image (None: it is), or ``_DECODE``."""
    from monai.data import NibabelReader, NumpyReader, PILReader

    from mimtl.io import DicomXrayReader, JSRTReader, SimpleITKReader

    reader = type(_dispatcher().reader_for(str(p)))
    checks: dict[type, Callable[[Path], str | None]] = {
        DicomXrayReader: _dicom_header,
        JSRTReader: lambda _: None,  # it claims only files of a square 16-bit image's size
        NibabelReader: _nifti_header,
        SimpleITKReader: _sitk_header,
        PILReader: _raster_header,
        NumpyReader: _numpy_header,
    }
    if reader not in checks:
        return _DECODE
    try:
        return checks[reader](p)
    except Exception as e:  # a reader's own error says best what is wrong with the file
        return _unreadable(e)


def _dicom_header(p: Path) -> str | None:
    import pydicom

    with p.open("rb") as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        pixels_at = f.tell()  # pydicom stops at the Pixel Data element (or the end of the file)
    missing = [k for k in ("Rows", "Columns", "BitsAllocated") if not ds.get(k)]
    if missing:
        return f"is not an image: no DICOM {', '.join(missing)}"
    size = p.stat().st_size
    if size <= pixels_at:
        return "has no pixel data"
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not syntax.is_compressed:
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        expected = ds.Rows * ds.Columns * samples * frames * ds.BitsAllocated // 8
        if size - pixels_at < expected:
            return f"is truncated ({size - pixels_at} bytes of pixel data where its header promises {expected})"
    return None


def _raster_header(p: Path) -> str | None:
    from PIL import Image

    with Image.open(p) as im:  # reads the header only
        width, height = im.size
        if width < 1 or height < 1:
            return "holds no pixels"
        if im.format == "PNG":
            im.verify()  # walks the chunks to IEND and checks their CRCs; inflates nothing
    return None


def _nifti_header(p: Path) -> str | None:
    import nibabel as nib

    img = nib.load(p)  # the header; the voxels stay on disk
    shape = tuple(img.shape)
    if not shape or math.prod(shape) == 0:
        return "holds no pixels"
    if not p.name.lower().endswith(".gz"):
        header = img.header
        # where the voxels start: the array proxy knows (the header's vox_offset can read 0 for a .nii)
        offset = int(getattr(img.dataobj, "offset", 0) or header.get("vox_offset", 0))
        expected = offset + math.prod(shape) * header.get_data_dtype().itemsize
        if p.stat().st_size < expected:
            return f"is truncated ({p.stat().st_size} bytes, its header promises {expected})"
    return None


def _sitk_header(p: Path) -> str | None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    reader.ReadImageInformation()
    if not reader.GetSize() or math.prod(reader.GetSize()) == 0:
        return "holds no pixels"
    return None


def _numpy_header(p: Path) -> str | None:
    import numpy as np

    if p.suffix.lower() != ".npy":
        return _DECODE
    array = np.load(p, mmap_mode="r", allow_pickle=False)  # maps the file: a short one fails here
    return "holds no pixels" if array.size == 0 else None


def _is_dicom_series(folder: Path) -> bool:
    return any(f.suffix.lower() == ".dcm" for f in folder.iterdir())


def validate_datalist(
    datalist: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("image",),
    source: str = "datalist",
    deep: bool = False,
    progress: bool = True,
) -> Sequence[Mapping[str, Any]]:
    """Check every file that ``keys`` point at; return the datalist unchanged when all are usable.

    Under ``torch.distributed`` (initialized, more than one process) only rank 0 opens the files;
    the other ranks wait for its verdict (a broadcast from rank 0) and raise the same error, so
    every rank stops with one clear message instead of some of them waiting forever.

    Args:
        datalist: a list of dicts as MONAI datasets take (``[{"image": path, "label": ...}]``).
        keys: the keys whose values are file paths (a value may also be a list of paths).
        source: how to name the datalist in the error (usually its file name).
        deep: decode every file, not only read its header (see :func:`check_image_file`).
        progress: show a progress bar while checking.

    Raises:
        DataValidationError: listing every bad entry with its file and reason.
    """
    if not datalist:
        raise DataValidationError(f"{source} has no entries.")
    message = _on_rank_zero(lambda: _problems(datalist, keys, source, deep, progress))
    if message:
        raise DataValidationError(message)
    return datalist


def _problems(
    datalist: Sequence[Mapping[str, Any]], keys: Sequence[str], source: str, deep: bool, progress: bool
) -> str | None:
    """The error message listing every bad entry of ``datalist``, or None when all are usable."""
    from tqdm.auto import tqdm

    problems = []
    bar = tqdm(datalist, desc=f"checking {Path(source).name}", unit="item", disable=not progress, leave=False)
    for i, item in enumerate(bar):
        for key in keys:
            if key not in item:
                problems.append(f"entry {i}: no '{key}' key (has: {', '.join(map(str, item))})")
                continue
            values = item[key] if isinstance(item[key], (list, tuple)) else [item[key]]
            for value in values:
                if not isinstance(value, (str, os.PathLike)):
                    problems.append(
                        f"entry {i} '{key}': {value!r} is not a file path (keys name the keys holding image files)"
                    )
                    continue
                reason = check_image_file(value, deep=deep)
                if reason:
                    problems.append(f"entry {i} '{key}': {value} {reason}")
    if not problems:
        return None
    listed = "\n  - ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{len(problems)} problem(s) in {source} ({len(datalist)} entries); nothing was trained:\n  - {listed}{more}"


def _on_rank_zero(check: Callable[[], str | None]) -> str | None:
    """``check()`` in a single process; under torch.distributed, rank 0's result on every rank.

    Rank 0 runs ``check`` and broadcasts its result (an error message or None); the others block
    in the broadcast meanwhile. If ``check`` itself raises on rank 0, the others receive a message
    saying so (and raise it as a :class:`DataValidationError`), and rank 0 re-raises the error.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return check()
    result: list[Any] = [None]
    error: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            result = [check()]
        except Exception as e:  # tell the other ranks before raising here
            error = e
            result = [f"checking the data failed on rank 0: {type(e).__name__}: {e}"]
    dist.broadcast_object_list(result, src=0)
    if error is not None:
        raise error
    return result[0]
