"""One set of metadata keys for every image format mimtl reads.

MONAI's readers each describe an image in their own words: ``PILReader`` gives no affine and no
spacing, ``NibabelReader`` gives the whole NIfTI header, :class:`~mimtl.io.DicomXrayReader`
gives the DICOM attributes that shaped the intensities. Code downstream (spacing-aware
transforms, reports, datalist validation) should not care which reader ran, so this module
defines the shared keys (:data:`STANDARD_META_KEYS`), the function that fills them whatever
produced the image (:func:`standardize_meta`; its transform twins are
``mimtl.transforms.StandardizeImageMeta(d)``), a small
SimpleITK reader for MetaImage/NRRD (MONAI's ``ITKReader`` needs the ``itk`` package, which mimtl
does not depend on) and :func:`load_image`, the one-call loader for pipeline users.
"""

from __future__ import annotations

import errno
import functools
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from monai.config import PathLike
from monai.data import ImageReader, MetaTensor
from monai.data.utils import affine_to_spacing, is_supported_format, orientation_ras_lps
from monai.transforms import LoadImage
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, ensure_tuple

__all__ = [
    "SPACING_UNKNOWN",
    "STANDARD_META_KEYS",
    "ImageNotFoundError",
    "ImageReadError",
    "MissingDecoderError",
    "SimpleITKReader",
    "load_image",
    "standardize_meta",
]

#: Value of ``spacing_source`` when the file records no physical pixel size.
SPACING_UNKNOWN = "unknown"

#: Keys every image loaded through :func:`load_image` / ``StandardizeImageMeta`` carries.
STANDARD_META_KEYS: tuple[str, ...] = (
    "filename_or_obj",
    "spatial_shape",
    "original_channel_dim",
    "affine",
    "original_affine",
    "spacing",
    "spacing_known",
    "spacing_source",
    "intensity_convention",
    "photometric_interpretation",
    "modality",
    "bits_stored",
    "window",
)

# 2D raster formats: pixels only, no physical size (a PNG's pHYs chunk is print dpi, not anatomy).
_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
# PIL mode -> bits per sample, for ``bits_stored`` of PNG/JPEG inputs.
_PIL_MODE_BITS = {"1": 1, "L": 8, "P": 8, "LA": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8, "I": 32, "F": 32}
_PIL_GRAY_MODES = ("1", "L", "LA", "I", "F")
_PIL_COLOUR_NAMES = {"P": "PALETTE COLOR", "RGB": "RGB", "RGBA": "RGB"}  # in DICOM's words
# The last line of a traceback LoadImage collected from one of our readers.
_OUR_ERROR_LINE = re.compile(r"(ImageReadError|ImageNotFoundError|MissingDecoderError): (.*)")


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and the reason.

    Args:
        filename: the file that failed.
        reason: why, in words a user can act on. When omitted, ``filename`` is taken as the whole
            message: that is how PyTorch's DataLoader re-raises a worker's error in the main
            process, which then keeps its type.
    """

    def __init__(self, filename: PathLike | str, reason: str | None = None) -> None:
        if reason is None:
            self.filename, self.reason = "", f"{filename}"
        else:
            self.filename, self.reason = f"{filename}", reason
        super().__init__(str(self))

    def __str__(self) -> str:  # explicit: OSError.__str__ would win for ImageNotFoundError
        return f"{self.filename}: {self.reason}" if self.filename else self.reason

    def __reduce__(self):  # keep (filename, reason) through pickling (DataLoader worker processes)
        return type(self), (self.filename, self.reason)


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """The image file does not exist (also a ``FileNotFoundError``, with ``errno`` ENOENT)."""

    def __init__(self, filename: PathLike | str, reason: str = "file not found") -> None:
        super().__init__(filename, reason)
        self.errno, self.strerror = errno.ENOENT, reason


class MissingDecoderError(ImageReadError):
    """The pixel data is compressed with a transfer syntax no installed plugin can decode."""


def _is_raster(meta: Mapping) -> bool:
    """Whether ``meta`` describes a PNG/JPEG-like image (no physical spacing)."""
    if "mode" in meta and "format" in meta and "width" in meta:  # PILReader's header
        return True
    name = meta.get(ImageMetaKey.FILENAME_OR_OBJ, "")
    return isinstance(name, (str, PurePath)) and PurePath(f"{name}").suffix.lower() in _RASTER_SUFFIXES


def _scalar(value: Any, default: Any = None) -> Any:
    """``value`` as a plain Python scalar (meta values may be 0-d arrays or 1-element tensors)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        flat = value.reshape(-1)
        return flat[0].item() if flat.shape[0] == 1 else default
    return default if value is None else value


def _spatial_rank(img: Any, meta: Mapping) -> int:
    shape = meta.get(MetaKeys.SPATIAL_SHAPE)
    if shape is not None:
        return max(1, min(len(np.asarray(shape).reshape(-1)), 3))
    return max(1, min(int(getattr(img, "ndim", 3)) - 1, 3))  # channel-first, as MONAI assumes


def _standardize(img: Any, meta: dict) -> dict:
    """Fill the :data:`STANDARD_META_KEYS` of ``meta`` in place (reader-agnostic rules)."""
    if isinstance(img, MetaTensor):
        affine = img.affine.detach().cpu().numpy().astype(np.float64)
    elif MetaKeys.AFFINE in meta:
        affine = np.asarray(meta[MetaKeys.AFFINE], dtype=np.float64)
    else:
        affine = np.eye(4)
    rank = _spatial_rank(img, meta)
    raster = _is_raster(meta)

    if "spacing_known" in meta:  # the reader decided (DicomXrayReader, SimpleITKReader)
        known = bool(_scalar(meta["spacing_known"], False))
        source = f"{meta.get('spacing_source', 'affine' if known else SPACING_UNKNOWN)}"
    elif not raster and MetaKeys.ORIGINAL_AFFINE in meta:
        # PIL/Numpy readers leave no original_affine; readers that do took it from the header
        known, source = True, "affine"
    else:
        known, source = False, SPACING_UNKNOWN
    # From the current affine so the value stays right after Spacing/Resize transforms; an image a
    # reader decoded at reduced size (``decode_scale``, see DicomXrayReader's target_size) reports
    # its file's spacing, as its original_affine and spatial_shape do: points are given in file pixels.
    grid = meta[MetaKeys.ORIGINAL_AFFINE] if "decode_scale" in meta and MetaKeys.ORIGINAL_AFFINE in meta else affine
    meta["spacing"] = np.asarray(affine_to_spacing(np.asarray(grid, dtype=np.float64), r=rank), dtype=np.float64)
    meta["spacing_known"] = known
    meta["spacing_source"] = source
    meta.setdefault(MetaKeys.AFFINE, affine)
    meta.setdefault(MetaKeys.ORIGINAL_AFFINE, np.asarray(meta[MetaKeys.AFFINE], dtype=np.float64).copy())
    meta.setdefault(MetaKeys.ORIGINAL_CHANNEL_DIM, float("nan"))

    mode = f"{meta.get('mode', '')}" if raster else ""
    if "bits_stored" not in meta:
        if mode.startswith("I;16") or (mode == "I" and meta.get("format") == "PNG"):
            bits = 16  # PNG has no 32-bit gray: older Pillow opens 16-bit PNG as mode "I"
        elif mode:
            bits = _PIL_MODE_BITS.get(mode, 0)
        else:
            bits = int(_scalar(meta.get("bitpix"), 0) or 0)  # NIfTI header
        meta["bits_stored"] = int(bits)
    if "photometric_interpretation" not in meta:
        channel_dim = _scalar(meta.get(MetaKeys.ORIGINAL_CHANNEL_DIM), float("nan"))
        no_channel = channel_dim is None or (isinstance(channel_dim, float) and math.isnan(channel_dim))
        if mode:
            gray = mode in _PIL_GRAY_MODES or mode.startswith("I;16")
            colour = _PIL_COLOUR_NAMES.get(mode, mode)
        else:
            gray, colour = no_channel, "RGB"
        meta["photometric_interpretation"] = "MONOCHROME2" if gray else colour
    meta.setdefault("modality", "")
    meta.setdefault("window", np.array([np.nan, np.nan]))
    if "intensity_convention" not in meta:
        if raster:
            desc = f"stored values, bright=high ({meta['bits_stored']}-bit, no rescaling)"
        elif "scl_slope" in meta:
            desc = "stored values with the NIfTI scl_slope/scl_inter applied"
        else:
            desc = "stored values (no rescaling)"
        meta["intensity_convention"] = desc
    return meta


def standardize_meta(img: Any, meta: dict, prune: bool = False) -> dict:
    """Fill the :data:`STANDARD_META_KEYS` of ``meta`` in place, whichever reader produced it.

    The rules behind :class:`~mimtl.transforms.StandardizeImageMeta` (the transform twins live in
    ``mimtl.transforms``; this function is what :func:`load_image` calls).

    Args:
        img: the image (a MetaTensor's affine is preferred to ``meta["affine"]``).
        meta: its metadata dict, updated in place and returned.
        prune: drop every other key; a ``space`` marker saying the affine is LPS is kept (RAS,
            MONAI's default reading of an affine, carries no meaning and is dropped).
    """
    _standardize(img, meta)
    if prune:
        lps = f"{meta.get(MetaKeys.SPACE, '')}" == SpaceKeys.LPS
        keep = set(STANDARD_META_KEYS) | ({MetaKeys.SPACE} if lps else set())
        for key in [k for k in meta if k not in keep]:
            del meta[key]
    return meta


class SimpleITKReader(ImageReader):
    """Read MetaImage (.mha/.mhd), NRRD (.nrrd/.nhdr) and NIfTI with SimpleITK.

    MONAI's ``ITKReader`` needs the ``itk`` package and ``NrrdReader`` needs ``pynrrd``;
    SimpleITK is already a mimtl dependency, so this reader fills that gap. It follows
    ``ITKReader``'s conventions: arrays are indexed ``[x, y(, z)]`` (channels last), the affine is
    4x4 in RAS (LPS from the file, converted) and ``spacing`` is in array axis order.

    Args:
        channel_dim: the channel dimension, recorded as ``original_channel_dim``; None means
            "no channel" for scalar images and ``-1`` for vector images, ``"no_channel"`` forces none.
        reverse_indexing: False (default) gives ``[x, y, z]`` arrays like MONAI's ``ITKReader``;
            True keeps SimpleITK's ``[z, y, x]`` numpy order.
        affine_lps_to_ras: convert the affine from ITK's LPS to RAS (consistent with NibabelReader).
        kwargs: passed to ``SimpleITK.ReadImage``.
    """

    suffixes: tuple[str, ...] = ("mha", "mhd", "nrrd", "nhdr", "nii", "nii.gz")

    def __init__(
        self,
        channel_dim: str | int | None = None,
        reverse_indexing: bool = False,
        affine_lps_to_ras: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.reverse_indexing = reverse_indexing
        self.affine_lps_to_ras = affine_lps_to_ras
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every file in ``filename`` has a suffix this reader handles."""
        return is_supported_format(filename, self.suffixes)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """Read one image (or a list of images to stack as channels) with SimpleITK.

        Raises:
            ImageReadError: when a file is missing, empty or unreadable (the message names it).
        """
        import SimpleITK as sitk

        kwargs_ = {**self.kwargs, **kwargs}
        images = []
        for name in ensure_tuple(data):
            path = Path(f"{name}")
            if not path.is_file():
                raise ImageNotFoundError(path, "file not found")
            if path.stat().st_size == 0:
                raise ImageReadError(path, "file is empty (0 bytes)")
            try:
                img = sitk.ReadImage(f"{path}", **kwargs_)
            except RuntimeError as e:  # SimpleITK reports every failure as RuntimeError
                raise ImageReadError(path, f"SimpleITK cannot read it: {' '.join(str(e).split())[:300]}") from e
            images.append((path, img))
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Return the ``[x, y(, z)]`` array and its metadata; several images are stacked on axis 0."""
        import SimpleITK as sitk

        items = img if isinstance(img, list) else [img]
        arrays, metas = [], []
        for path, image in items:
            array = sitk.GetArrayFromImage(image)  # [z, y, x(, c)]
            n_comp = image.GetNumberOfComponentsPerPixel()
            if not self.reverse_indexing:
                array = array.T if n_comp == 1 else np.moveaxis(array.T, 0, -1)
            meta = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys() if not key.startswith("ITK_")}
            dim = image.GetDimension()
            rank = min(dim, 3)
            direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:rank, :rank]
            spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:rank]
            affine = np.eye(4)  # 4x4 also for 2D, like NibabelReader and MetaTensor's default
            affine[:rank, :rank] = direction @ np.diag(spacing)
            affine[:rank, 3] = np.asarray(image.GetOrigin(), dtype=np.float64)[:rank]
            if self.affine_lps_to_ras:
                affine = orientation_ras_lps(affine)
            spatial = np.asarray(image.GetSize(), dtype=np.int64)[:rank]
            meta[MetaKeys.ORIGINAL_AFFINE] = affine
            meta[MetaKeys.AFFINE] = affine.copy()
            meta[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            meta[MetaKeys.SPATIAL_SHAPE] = spatial if not self.reverse_indexing else spatial[::-1].copy()
            if self.channel_dim is None:
                meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if n_comp == 1 else -1
            else:
                meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
            meta["spacing"] = spacing if not self.reverse_indexing else spacing[::-1].copy()
            meta["spacing_known"] = True
            meta["spacing_source"] = "affine"
            meta["bits_stored"] = int(np.dtype(array.dtype).itemsize * 8)
            meta[ImageMetaKey.FILENAME_OR_OBJ] = f"{path}"
            arrays.append(np.ascontiguousarray(array))
            metas.append(meta)
        meta = metas[0]
        if len(arrays) == 1:
            return arrays[0], meta
        if any(a.shape != arrays[0].shape for a in arrays):
            raise ImageReadError(meta[ImageMetaKey.FILENAME_OR_OBJ], "images to stack as channels differ in shape")
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta


def _make_loader(reader: Any, dtype: Any, reader_kwargs: Mapping[str, Any]) -> LoadImage:
    from mimtl.io import readers  # readers.py imports this module

    if reader is None:
        reader = readers.MedicalImageReader
    elif isinstance(reader, str) and reader in readers.READERS_BY_NAME:  # short names without a global table
        reader = readers.READERS_BY_NAME[reader]
    return LoadImage(reader=reader, image_only=True, dtype=dtype, ensure_channel_first=True, **reader_kwargs)


@functools.lru_cache(maxsize=16)
def _cached_loader(reader: Any, dtype: Any, reader_kwargs: tuple[tuple[str, Any], ...]) -> LoadImage:
    # Building a LoadImage instantiates every registered reader (and MONAI logs a warning per
    # build when nvImageCodec is absent); datalist validation calls load_image per file.
    return _make_loader(reader, dtype, dict(reader_kwargs))


def load_image(
    path: PathLike | Sequence[PathLike],
    reader: str | ImageReader | type[ImageReader] | None = None,
    *,
    dtype: Any = np.float32,
    prune_meta: bool = False,
    **reader_kwargs: Any,
) -> MetaTensor:
    """Load an image channel-first with the mimtl metadata keys.

    Equivalent to ``LoadImage(reader, ensure_channel_first=True)`` followed by
    :func:`standardize_meta`: a 2D grayscale radiograph comes back as ``(1, X, Y)``, a
    NIfTI volume as ``(1, X, Y, Z)``. DICOM files go through
    :class:`~mimtl.io.DicomXrayReader` (float32, bright=dense, [0, 1] by default).

    Args:
        path: an image file (or a list of files to stack as channels, or a DICOM series folder).
        reader: a reader class, instance, dotted path, or the short name of a mimtl reader
            (``"DicomXrayReader"``); None uses :class:`~mimtl.io.MedicalImageReader`, which picks
            one by file name and content.
        dtype: output data type (None keeps the reader's).
        prune_meta: keep only :data:`STANDARD_META_KEYS` in the metadata.
        reader_kwargs: passed to the reader's constructor (e.g. ``normalize=False``).

    Raises:
        ImageNotFoundError: when a path does not exist.
        ImageReadError: when the file cannot be read (the message names the file and the reason).
    """
    for name in ensure_tuple(path):
        if not Path(f"{name}").exists():
            raise ImageNotFoundError(name, "file not found")
    try:
        loader = _cached_loader(reader, dtype, tuple(sorted(reader_kwargs.items())))
    except TypeError:  # an unhashable argument: build a fresh loader
        loader = _make_loader(reader, dtype, reader_kwargs)
    try:
        img = loader(path)
    except RuntimeError as e:
        if "cannot find a suitable reader" not in str(e):
            raise
        # LoadImage buries each reader's reason in tracebacks; surface ours (the first tried) if any.
        first = f"{ensure_tuple(path)[0]}"
        found = _OUR_ERROR_LINE.search(str(e))
        why = found.group(2).strip() if found else "no registered reader could read it"
        why = why[len(first) + 2 :] if why.startswith(f"{first}: ") else why
        raise ImageReadError(first, why) from e
    standardize_meta(img, img.meta, prune=prune_meta)
    return img
