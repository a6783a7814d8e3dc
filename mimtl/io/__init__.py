"""Medical image input: DICOM radiographs, NIfTI, MetaImage/NRRD, JSRT raw and PNG with one set of metadata keys.

Importing this package changes nothing global. Configs name their reader,
``LoadImaged: {reader: mimtl.io.MedicalImageReader}`` (one reader that sends each file to the
reader of its format), or one of the format readers by dotted path
(``mimtl.io.DicomXrayReader``). :func:`register_readers` is an explicit opt-in for code that
calls ``LoadImage()`` bare. See ``docs/data_formats.md``.

Datalists, datasets and validation moved to :mod:`mimtl.data`, the demo data to :mod:`mimtl.sim`;
the old names still resolve here for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import importlib
import warnings

from mimtl.io.dicom import DICOM_SUFFIXES, DicomXrayReader, decoder_install_hint
from mimtl.io.jsrt import JSRTReader
from mimtl.io.meta import (
    SPACING_UNKNOWN,
    STANDARD_META_KEYS,
    ImageNotFoundError,
    ImageReadError,
    MissingDecoderError,
    SimpleITKReader,
    load_image,
    standardize_meta,
)
from mimtl.io.readers import FORMAT_READERS, MedicalImageReader, register_readers

__all__ = [
    "DICOM_SUFFIXES",
    "FORMAT_READERS",
    "SPACING_UNKNOWN",
    "STANDARD_META_KEYS",
    "DicomXrayReader",
    "ImageNotFoundError",
    "ImageReadError",
    "JSRTReader",
    "MedicalImageReader",
    "MissingDecoderError",
    "SimpleITKReader",
    "decoder_install_hint",
    "load_image",
    "register_readers",
    "standardize_meta",
]

# old name -> its new home (one release of grace; importing the new home stays lazy)
_MOVED = {
    "TolerantDataset": "mimtl.data.dataset",
    "StandardizeImageMeta": "mimtl.transforms.meta",
    "StandardizeImageMetad": "mimtl.transforms.meta",
}


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(
            f"mimtl.io.{name} moved to {_MOVED[name]}.{name}; the old name goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'mimtl.io' has no attribute {name!r}")
