"""One MONAI ``ImageReader`` for every format mimtl reads, named by configs, and an opt-in registration.

MONAI's ``LoadImage`` picks a reader from its global table ``SUPPORTED_READERS`` when none is
given. mimtl does not change that table on import: a config names the reader it wants,

.. code-block:: yaml

    - {_target_: LoadImaged, keys: image, reader: mimtl.io.MedicalImageReader, ensure_channel_first: true}

and :class:`MedicalImageReader` sends each file to the reader for its format: DICOM (by suffix,
or the 'DICM' marker of a file without one) to :class:`~mimtl.io.DicomXrayReader`, raw JSRT
``.IMG`` to :class:`~mimtl.io.JSRTReader`, MetaImage/NRRD to :class:`~mimtl.io.SimpleITKReader`,
NIfTI to MONAI's ``NibabelReader``, PNG/JPEG/BMP/TIFF to ``PILReader``, ``.npy``/``.npz`` to
``NumpyReader`` and anything else (a DICOM series folder) to ``PydicomReader``.

Users who call ``LoadImage()`` bare and want the same choice can opt in once with
:func:`register_readers`, which edits MONAI's table.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader, NibabelReader, NumpyReader, PILReader, PydicomReader
from monai.transforms.io.array import SUPPORTED_READERS
from monai.utils import MetaKeys, ensure_tuple, optional_import

from mimtl.io.dicom import DicomXrayReader, reduced_grid_affine
from mimtl.io.jsrt import JSRTReader
from mimtl.io.meta import ImageNotFoundError, ImageReadError, SimpleITKReader

__all__ = ["FORMAT_READERS", "READERS_BY_NAME", "MedicalImageReader", "register_readers"]

#: The readers :class:`MedicalImageReader` dispatches to, in the order their claims are checked.
#: DICOM first (a DICOM file may have any suffix), NIfTI with MONAI's usual reader (SimpleITK
#: reads it too), MONAI's ``PydicomReader`` (which claims any name, e.g. a series folder) last.
FORMAT_READERS: tuple[type[ImageReader], ...] = (
    DicomXrayReader,
    JSRTReader,
    NibabelReader,
    SimpleITKReader,
    PILReader,
    NumpyReader,
    PydicomReader,
)


def _accepted(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The part of ``kwargs`` that ``cls.__init__`` names (``**kwargs`` catch-alls don't count:
    ``PILReader`` passes them to ``Image.open``, where a DICOM option would fail)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in params and params[k].kind is not inspect.Parameter.VAR_KEYWORD}


class MedicalImageReader(ImageReader):
    """Read DICOM radiographs, JSRT raw, NIfTI, MetaImage/NRRD, PNG/JPEG and NumPy files.

    Each file goes to the first of :data:`FORMAT_READERS` that claims it (``verify_suffix``);
    that reader's errors (an :class:`~mimtl.io.ImageReadError` naming the file and the reason)
    reach the caller unchanged. MONAI's readers (PIL, nibabel, NumPy, pydicom) raise their
    libraries' own errors (``UnidentifiedImageError``, ``ImageFileError``, ``OSError: image file is
    truncated``, ...); those become an :class:`~mimtl.io.ImageReadError` that names the file, the
    reader and the original error (kept as ``__cause__``), and an empty file is refused by name
    before any reader opens it. They are raised from :meth:`get_data`, not :meth:`read`: when a
    named reader's ``read`` fails, ``LoadImage`` goes on to try every reader in MONAI's table,
    and one of them could read a file ours refused with other semantics (MONAI's
    ``PydicomReader`` reading a DICOM without mimtl's intensity conventions), or bury the reason
    in a list of tracebacks.

    Args:
        target_size: decode at reduced size where the format allows it, to the smallest size whose
            sides are still at least this (array-index order ``[x, y]``; one int for both), e.g. the
            network's input size: JPEG files with libjpeg's DCT scaling (1/2, 1/4, 1/8), DICOM
            JPEG 2000 at a resolution level and DICOM baseline JPEG; other DICOMs are averaged over
            blocks right after their decode (see :class:`~mimtl.io.DicomXrayReader`). Other
            formats decode whole. The metadata keep the
            file's geometry (``original_affine``, ``spatial_shape``, spacing), ``affine`` maps the
            decoded grid into it and ``decode_scale`` says by how much, so points decoded on the
            image come back in the file's pixels and mm. None (default): decode whole.
        kwargs: reader options (e.g. ``normalize=False`` for DICOM); each format's reader gets the
            ones its constructor names.

    Example::

        LoadImaged(keys="image", reader=MedicalImageReader, ensure_channel_first=True)
        LoadImaged(keys="image", reader=MedicalImageReader(normalize=False))
        LoadImaged(keys="image", reader=MedicalImageReader, target_size=[256, 256])  # inference at 256 px
    """

    def __init__(self, target_size: int | Sequence[int] | None = None, **kwargs: Any) -> None:
        super().__init__()
        if target_size is not None:
            kwargs["target_size"] = target_size  # DicomXrayReader's own option; PIL's is handled here
            target_size = [int(v) for v in ensure_tuple(target_size)] * (2 if isinstance(target_size, int) else 1)
        self.target_size = target_size
        self.kwargs = kwargs
        self._readers: dict[type, ImageReader] = {}

    def _reader(self, cls: type[ImageReader]) -> ImageReader:
        if cls not in self._readers:  # built on first use: most pipelines see one or two formats
            self._readers[cls] = cls(**_accepted(cls, self.kwargs))
        return self._readers[cls]

    def reader_for(self, filename: Sequence[PathLike] | PathLike) -> ImageReader:
        """The reader that handles ``filename`` (a file, a list of files, or a series folder)."""
        for cls in FORMAT_READERS:
            reader = self._reader(cls)
            if reader.verify_suffix(filename):
                return reader
        return self._reader(PydicomReader)  # unreachable: PydicomReader claims every name

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True: every name goes to one of the format readers (a series folder to ``PydicomReader``)."""
        return True

    def read(
        self, data: Sequence[PathLike] | PathLike, **kwargs: Any
    ) -> tuple[ImageReader, Any, Exception | None, Sequence[PathLike] | PathLike]:
        """Read ``data`` with the reader of its format.

        Returns:
            that reader, its image object, the error it raised (None when it read the file) and
            ``data``; :meth:`get_data` raises the error (see the class docstring for why).
        """
        reader = self.reader_for(data)
        try:
            for name in ensure_tuple(data):
                _check_file(name)
            image = reader.read(data, **kwargs)
            if self.target_size is not None and isinstance(reader, PILReader):
                _draft_jpeg(image, self.target_size, getattr(reader, "reverse_indexing", True))
            return reader, image, None, data
        except Exception as e:  # re-raised by get_data
            return reader, None, _named(e, reader, data), data

    def get_data(self, img: tuple[ImageReader, Any, Exception | None, Any]) -> tuple[Any, dict]:
        """The array and metadata, from the reader that read ``img``.

        Raises:
            the format reader's own error, e.g. :class:`~mimtl.io.ImageReadError` naming the file,
            or an :class:`~mimtl.io.ImageReadError` wrapping a MONAI reader's library error.
        """
        reader, image, error, data = img
        if error is not None:
            raise error
        try:
            array, meta = reader.get_data(image)
        except Exception as e:  # e.g. PIL and nibabel decode lazily: a truncated file fails here
            raise _named(e, reader, data) from e
        reduced = getattr(image, "_mimtl_reduced", None)
        if reduced is not None:  # a JPEG decoded by DCT scaling: say so in the file's geometry
            file_shape, scale, reverse = reduced
            shift = (scale - 1) / 2  # pixel n covers file pixels scale*n .. scale*n + scale - 1
            meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(file_shape if reverse else file_shape[::-1], dtype=np.int64)
            meta[MetaKeys.ORIGINAL_AFFINE] = np.eye(4)
            meta[MetaKeys.AFFINE] = reduced_grid_affine(np.eye(4), [scale] * 2, [shift] * 2)
            meta["decode_scale"] = np.array([scale, scale], dtype=np.float64)
        return array, meta


def _draft_jpeg(image: Any, target_size: Sequence[int], reverse_indexing: bool) -> None:
    """Ask a JPEG (PIL, not yet decoded) for its smallest DCT-scaled size still >= ``target_size``.

    Marks the image with ``(file size, scale, reverse_indexing)`` when it will decode smaller;
    anything but one JPEG is left alone.
    """
    if isinstance(image, (list, tuple)) or getattr(image, "format", None) != "JPEG":
        return
    width, height = image.size
    tw, th = target_size if reverse_indexing else target_size[::-1]
    result = image.draft(image.mode, (int(tw), int(th)))
    if result is None or image.size == (width, height):
        return
    scale = round(width / result[1][2])
    if scale > 1:
        image._mimtl_reduced = ((width, height), scale, reverse_indexing)


def _check_file(name: Any) -> None:
    """Refuse a missing or empty file by name, before a library reports it in its own words."""
    if not isinstance(name, (str, os.PathLike)):
        return
    path = Path(name)
    if not path.exists():
        raise ImageNotFoundError(path, "file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")


def _named(error: Exception, reader: ImageReader, data: Any) -> ImageReadError:
    """``error`` as an :class:`~mimtl.io.ImageReadError` naming the file and the reader (mimtl's own pass)."""
    if isinstance(error, ImageReadError):
        return error
    names = ensure_tuple(data)
    name = f"{names[0]}" if names else "<image>"
    message = " ".join(f"{error}".split())[:300]
    named = ImageReadError(
        name,
        f"cannot be read by {type(reader).__name__}, it may be truncated or corrupt ({type(error).__name__}: {message})",
    )
    named.__cause__ = error
    return named


def _insert_reader(key: str, reader: type[ImageReader], before: str | None = None) -> None:
    """Put ``reader`` into ``SUPPORTED_READERS`` just before ``before`` (else last), in place.

    ``LoadImage`` registers readers in this dict's order and, when choosing by file name, tries
    them from last to first: later means higher priority. The dict is mutated rather than
    replaced because MONAI modules hold references to it.
    """
    items = [(k, v) for k, v in SUPPORTED_READERS.items() if k != key]
    keys = [k for k, _ in items]
    index = keys.index(before) if before in keys else len(items)
    items.insert(index, (key, reader))
    SUPPORTED_READERS.clear()
    SUPPORTED_READERS.update(items)


def register_readers() -> None:
    """Opt in: register mimtl's readers in MONAI's global ``SUPPORTED_READERS`` (idempotent).

    Only for code that calls ``LoadImage()`` without a reader and wants mimtl's choice; configs
    name :class:`MedicalImageReader` instead. Afterwards ``LoadImage(reader="DicomXrayReader")``
    resolves by name, and automatic selection tries DicomXrayReader, JSRTReader, NibabelReader,
    SimpleITKReader, then MONAI's own (PILReader, NumpyReader, ..., PydicomReader last).
    """
    _insert_reader("simpleitkreader", SimpleITKReader, before="nibabelreader")
    _insert_reader("jsrtreader", JSRTReader)
    _insert_reader("dicomxrayreader", DicomXrayReader)
    # Without nvImageCodec, MONAI's NvImgCodecPydicomReader only falls back to plain pydicom and
    # logs a warning each time a LoadImage is built (every transform chain, every worker).
    if not optional_import("nvidia.nvimgcodec")[1]:
        SUPPORTED_READERS.pop("nvimgcodecpydicomreader", None)


#: mimtl's readers by class name, for :func:`~mimtl.io.load_image` (``reader="DicomXrayReader"``).
READERS_BY_NAME: dict[str, type[ImageReader]] = {
    cls.__name__: cls for cls in (MedicalImageReader, DicomXrayReader, JSRTReader, SimpleITKReader)
}
