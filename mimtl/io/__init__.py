"""Medical image input: DICOM radiographs, NIfTI, MetaImage/NRRD and PNG with one set of metadata keys.

Importing this package registers :class:`DicomXrayReader` and :class:`SimpleITKReader` with MONAI's
``LoadImage`` (``monai.transforms.io.array.SUPPORTED_READERS``), so that

- ``LoadImage(reader="DicomXrayReader")`` / ``"SimpleITKReader"`` resolve by name,
- ``LoadImage()`` picks :class:`DicomXrayReader` for DICOM files (``.dcm``, or any file with the
  'DICM' marker) and :class:`SimpleITKReader` for ``.mha``/``.mhd``/``.nrrd``/``.nhdr``.

The dotted paths ``"mimtl.io.DicomXrayReader"`` / ``"mimtl.io.SimpleITKReader"`` work without a
prior import (``LoadImage`` imports them). See ``docs/data_formats.md``.
"""

from __future__ import annotations

from monai.data import ImageReader
from monai.utils import optional_import
from monai.transforms.io.array import SUPPORTED_READERS

from mimtl.io.dataset import TolerantDataset
from mimtl.io.dicom import DICOM_SUFFIXES, DicomXrayReader, decoder_install_hint
from mimtl.io.meta import (
    SPACING_UNKNOWN,
    STANDARD_META_KEYS,
    ImageNotFoundError,
    ImageReadError,
    MissingDecoderError,
    SimpleITKReader,
    StandardizeImageMeta,
    StandardizeImageMetad,
    load_image,
)

_, has_nvimgcodec = optional_import("nvidia.nvimgcodec")

__all__ = [
    "DICOM_SUFFIXES",
    "DicomXrayReader",
    "ImageNotFoundError",
    "ImageReadError",
    "MissingDecoderError",
    "SPACING_UNKNOWN",
    "STANDARD_META_KEYS",
    "SimpleITKReader",
    "StandardizeImageMeta",
    "StandardizeImageMetad",
    "TolerantDataset",
    "decoder_install_hint",
    "load_image",
    "register_readers",
]


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
    """Register mimtl's readers with MONAI's ``LoadImage`` (done on ``import mimtl.io``; idempotent).

    Priority for automatic selection (first tried first): DicomXrayReader, NibabelReader,
    SimpleITKReader, then MONAI's own (PILReader, NumpyReader, NrrdReader, ..., PydicomReader).
    NibabelReader stays ahead of SimpleITKReader so NIfTI keeps MONAI's usual reader; MONAI's
    PydicomReader, which accepts any file name, stays the last resort.
    """
    _insert_reader("simpleitkreader", SimpleITKReader, before="nibabelreader")
    _insert_reader("dicomxrayreader", DicomXrayReader)
    # Without nvImageCodec, MONAI's NvImgCodecPydicomReader only falls back to plain pydicom and
    # logs a warning each time a LoadImage is built (every transform chain, every worker).
    if not has_nvimgcodec:
        SUPPORTED_READERS.pop("nvimgcodecpydicomreader", None)


register_readers()

# The JSRT raw-file reader lives beside its adapter; importing it registers it for .IMG files,
# so every LoadImage (mimtl check-data included) reads JSRT as-is.
from mimtl.io.adapters import jsrt as _jsrt  # noqa: E402,F401
