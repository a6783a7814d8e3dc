"""Read single-frame projection radiographs (CR, DX, MG, RF, X-ray secondary captures) from DICOM.

:class:`DicomXrayReader` turns the stored pixel values into what a radiologist sees, in a form
that is comparable across files and vendors:

1. decode (uncompressed, RLE, JPEG, JPEG-LS, JPEG 2000 with the installed pydicom plugins);
2. Modality LUT: Rescale Slope/Intercept, or the Modality LUT Sequence;
3. VOI LUT: the VOI LUT Sequence, else the first Window Center/Width (``apply_voi``);
4. MONOCHROME1 is inverted so that bright = dense/attenuating, as in MONOCHROME2;
5. ``normalize`` maps the displayed range (the VOI output range, else the Bits Stored range
   through the Modality LUT) to [0, 1]; never the image's own min/max, which would make the
   same tissue a different value in every file.

The array is indexed ``[x, y]`` (shape ``(Columns, Rows)``) like MONAI's ``PILReader``, so a PNG
and a DICOM of the same pixels load identically, and the affine carries the pixel spacing in mm.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import PathLike
from monai.data import ImageReader
from monai.utils import ImageMetaKey, MetaKeys, ensure_tuple
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_windowing, get_decoder

from mimtl.io.meta import SPACING_UNKNOWN, ImageNotFoundError, ImageReadError, MissingDecoderError

__all__ = ["DICOM_SUFFIXES", "DicomXrayReader", "decoder_install_hint", "reduced_grid_affine"]

logger = logging.getLogger(__name__)

#: File suffixes :meth:`DicomXrayReader.verify_suffix` accepts without opening the file.
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".dic")

_LIBJPEG = "pylibjpeg pylibjpeg-libjpeg"
_OPENJPEG = "pylibjpeg pylibjpeg-openjpeg"
# pip packages that give pydicom a decoder for each compressed transfer syntax.
_DECODER_PACKAGES: dict[str, str] = {
    dcm_uid.JPEGBaseline8Bit: _LIBJPEG,
    dcm_uid.JPEGExtended12Bit: _LIBJPEG,
    dcm_uid.JPEGLossless: _LIBJPEG,
    dcm_uid.JPEGLosslessSV1: _LIBJPEG,
    dcm_uid.JPEGLSLossless: _LIBJPEG,
    dcm_uid.JPEGLSNearLossless: _LIBJPEG,
    dcm_uid.JPEG2000Lossless: _OPENJPEG,
    dcm_uid.JPEG2000: _OPENJPEG,
    dcm_uid.HTJ2KLossless: _OPENJPEG,
    dcm_uid.HTJ2KLosslessRPCL: _OPENJPEG,
    dcm_uid.HTJ2K: _OPENJPEG,
    dcm_uid.RLELossless: "pylibjpeg pylibjpeg-rle",  # pydicom decodes RLE natively; this is a fallback
}

# (Rescale or Modality LUT) -> VOI -> polarity; see the module docstring.
_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def decoder_install_hint(transfer_syntax: str) -> str:
    """The ``pip install`` command that adds a pydicom decoder for ``transfer_syntax`` (a UID)."""
    packages = _DECODER_PACKAGES.get(f"{transfer_syntax}")
    if packages is None:
        return "no pip package known to mimtl decodes it"
    extra = " (or `pip install mimtl[dicom]`)" if packages in (_LIBJPEG, _OPENJPEG) else ""
    return f"`pip install {packages}`{extra}"


# Transfer syntaxes whose pixel data can be decoded at a reduced size (see ``target_size``): JPEG 2000
# resolution levels (a level-r pixel n is the low-pass sample centred on file pixel 2**r * n) and
# baseline JPEG DCT scaling (an 8/k block: pixel n covers file pixels k*n .. k*n + k - 1).
_J2K_SYNTAXES = (
    dcm_uid.JPEG2000Lossless,
    dcm_uid.JPEG2000,
    dcm_uid.HTJ2KLossless,
    dcm_uid.HTJ2KLosslessRPCL,
    dcm_uid.HTJ2K,
)
_DCT_SYNTAXES = (dcm_uid.JPEGBaseline8Bit,)
#: Transfer syntaxes whose reduced decode Pillow cannot do here (built without OpenJPEG or libjpeg):
#: said once per syntax, then those files decode whole.
_REDUCED_WARNED: set[str] = set()


def _reduced_unavailable(tsyntax: Any, reason: str) -> None:
    name = getattr(tsyntax, "name", f"{tsyntax}")
    if name not in _REDUCED_WARNED:
        _REDUCED_WARNED.add(name)
        logger.warning(
            "Reduced-size decoding of '%s' pixel data is unavailable here (%s); such films are decoded "
            "whole, which is slower for large films.",
            name,
            reason,
        )


def reduced_grid_affine(affine: np.ndarray, scale: Sequence[float], shift: Sequence[float]) -> np.ndarray:
    """The affine of an image decoded at reduced size, from the affine of its file's pixel grid.

    Pixel ``n`` of the reduced image along axis ``i`` lies at file pixel ``scale[i] * n + shift[i]``
    (JPEG DCT scaling: ``shift = (scale - 1) / 2``, the centre of the block; JPEG 2000 resolution
    levels: ``shift = 0``), so world positions, and points mapped back through ``original_affine``,
    stay those of the file.
    """
    affine = np.asarray(affine, dtype=np.float64)
    grid = np.eye(affine.shape[0])
    for i, (k, c) in enumerate(zip(scale, shift)):
        grid[i, i], grid[i, -1] = float(k), float(c)
    return affine @ grid


def _j2k_header(codestream: bytes) -> tuple[int, int, int] | None:
    """(precision, signed, decomposition levels) of a single-component J2K codestream with no image
    offset; None for anything else (then the file is decoded whole)."""
    if codestream[:4] != b"\xff\x4f\xff\x51" or len(codestream) < 45:
        return None
    x_off, y_off = int.from_bytes(codestream[16:20], "big"), int.from_bytes(codestream[20:24], "big")
    if x_off or y_off or int.from_bytes(codestream[40:42], "big") != 1:
        return None
    ssiz = codestream[42]
    cod = codestream.find(b"\xff\x52", 4 + int.from_bytes(codestream[4:6], "big"))
    if cod < 0 or len(codestream) < cod + 10:
        return None
    return (ssiz & 0x7F) + 1, ssiz >> 7, codestream[cod + 9]


def _looks_like_dicom(name: Any) -> bool:
    """A DICOM suffix, or a Part 10 file: the 'DICM' marker after the 128-byte preamble."""
    if not isinstance(name, (str, os.PathLike)):
        return False
    path = Path(name)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return not path.is_dir()
    try:
        if not path.is_file():
            return False
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _numbers(ds: Dataset, keyword: str) -> list[float] | None:
    """All values of a numeric attribute as finite floats; None when absent or malformed."""
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed DS/IS string may raise while pydicom converts it
        return None
    if value is None or value == "":
        return None
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if out and all(math.isfinite(v) for v in out) else None


def _first_number(ds: Dataset, keyword: str) -> float | None:
    values = _numbers(ds, keyword)
    return values[0] if values else None


def _spacing_pair(ds: Dataset, keyword: str) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm, or None if absent, zero, negative or malformed.

    A present but unusable value is not skipped silently: it is warned about, naming the file.
    """
    values = _numbers(ds, keyword)
    if values is None or len(values) != 2 or min(values) <= 0:
        if keyword in ds and values is not None:
            filename = getattr(ds, "filename", None) or "<pydicom Dataset>"
            warnings.warn(f"{filename}: {keyword} {values} is not a pair of positive sizes (mm); ignored", stacklevel=2)
        return None
    return values[0], values[1]


def _physical_spacing(ds: Dataset) -> tuple[tuple[float, float], str]:
    """(row spacing, column spacing) in mm and the attribute it came from."""
    pair = _spacing_pair(ds, "PixelSpacing")
    if pair is not None:
        return pair, "PixelSpacing"
    pair = _spacing_pair(ds, "ImagerPixelSpacing")
    if pair is not None:
        # Imager Pixel Spacing is measured at the detector; the body lies between source and
        # detector, so it is projected larger. Dividing by the magnification estimate gives the
        # size at the patient plane, which is what anatomy measurements need.
        magnification = _first_number(ds, "EstimatedRadiographicMagnificationFactor")
        if magnification is not None and magnification > 0:
            return (pair[0] / magnification, pair[1] / magnification), (
                "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
            )
        return pair, "ImagerPixelSpacing"
    pair = _spacing_pair(ds, "NominalScannedPixelSpacing")
    if pair is not None:
        return pair, "NominalScannedPixelSpacing"
    return (1.0, 1.0), SPACING_UNKNOWN


def _is_little_endian(ds: Dataset) -> bool:
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is not None and tsyntax.is_transfer_syntax:
        return bool(tsyntax.is_little_endian)
    encoding = getattr(ds, "original_encoding", (None, True))
    return encoding[1] is not False


def _lut_table(item: Dataset, ds: Dataset) -> tuple[np.ndarray, int, int]:
    """(table, first mapped input value, bits per entry) of a Modality or VOI LUT item."""
    descriptor = [int(v) for v in item.LUTDescriptor]
    n_entries = descriptor[0] or 2**16  # 0 means 65536 entries
    first_map, bits = descriptor[1], descriptor[2]
    data = item["LUTData"].value
    if isinstance(data, (bytes, bytearray)):  # OW: 16-bit words in the data set's byte order
        table = np.frombuffer(data, dtype="<u2" if _is_little_endian(ds) else ">u2")
    else:  # US: already integers
        table = np.atleast_1d(np.asarray(data))
    table = table[:n_entries].astype(np.int64)
    if table.size == 0:
        raise ValueError("empty LUT Data")
    return table, first_map, bits


def _apply_lut(values: np.ndarray, table: np.ndarray, first_map: int) -> np.ndarray:
    # Own lookup rather than pydicom's: pydicom 3.0 indexes through an array of the LUT's output
    # dtype, which wraps for 8-bit LUTs with more than 256 entries and rejects 12-bit entries.
    index = np.clip(np.rint(values).astype(np.int64) - first_map, 0, table.size - 1)
    return table[index].astype(np.float64)


def _stored_range(ds: Dataset, bits_stored: int) -> tuple[int, int]:
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


class DicomXrayReader(ImageReader):
    """MONAI ``ImageReader`` for single-frame grayscale projection radiographs, using pydicom.

    Output intensities (float32), in this order:

    - **Modality LUT**: Rescale Slope/Intercept, or the Modality LUT Sequence.
    - **VOI** (``apply_voi=True``): the VOI LUT Sequence when present (preferred, as in pydicom),
      else the *first* Window Center/Width with the VOI LUT Function (LINEAR, LINEAR_EXACT,
      SIGMOID). A malformed window (width < 1, not a number) is ignored with a warning.
    - **Polarity**: MONOCHROME1 is inverted within its output range so that bright =
      dense/attenuating, like MONOCHROME2 (``invert_monochrome1``). Presentation LUT Shape is not
      applied on top: in DX/MG/CR it only restates the Photometric Interpretation.
    - **Scale** (``normalize=True``): [0, 1] over the displayed range: the VOI window's output
      range, the VOI LUT's output range (min..max of its LUT Data), or, without VOI, the Bits
      Stored range (signed or unsigned) mapped through the Modality LUT. Never the image
      min/max, so the same value means the same thing in every file. ``normalize=False`` keeps
      the modality/VOI values (MONOCHROME1 mirrored within the same range).

    Geometry: the array is ``[x, y]`` (shape ``(Columns, Rows)``) like ``PILReader``; spacing (mm,
    same order) comes from Pixel Spacing, else Imager Pixel Spacing divided by the Estimated
    Radiographic Magnification Factor when given, else Nominal Scanned Pixel Spacing; otherwise
    it is ``(1.0, 1.0)`` with ``spacing_known=False``. The affine is ``diag(sx, sy, 1, 1)``: a
    projection image has no patient coordinate system, so no origin or orientation is implied.

    Metadata keys: ``filename_or_obj``, ``spatial_shape``, ``original_channel_dim``, ``affine``,
    ``original_affine``, ``spacing``, ``spacing_known``, ``spacing_source``,
    ``intensity_convention``, ``photometric_interpretation`` (as stored), ``modality``,
    ``bits_stored``, ``window`` (``[center, width]`` applied, else ``[nan, nan]``).

    Args:
        apply_voi: apply the VOI LUT Sequence / Window Center-Width when present.
        normalize: scale the displayed range to [0, 1] (see above).
        invert_monochrome1: invert MONOCHROME1 images to the MONOCHROME2 polarity.
        channel_dim: recorded as ``original_channel_dim``; None means no channel (a radiograph is
            2D grayscale; ``EnsureChannelFirst`` then adds one), ``"no_channel"`` is the same.
        reverse_indexing: True (default) gives ``[x, y]`` arrays like MONAI's ``PILReader``;
            False gives numpy/pydicom ``[row, column]`` order.
        target_size: decode JPEG 2000 (a resolution level) and baseline JPEG (DCT scaling) pixel
            data at the smallest size whose sides are still at least this (array-index order, one
            int for every axis), e.g. the network's input size: a 2048 px JPEG 2000 film needed
            for 256 px decodes 64 times fewer pixels. Other transfer syntaxes (uncompressed, RLE,
            JPEG lossless, ...) and signed data decode whole, then average k x k blocks of stored
            values (the largest integer k that keeps the size) before the LUTs and the float
            conversion, which cost more than the decode (not with a Modality or VOI LUT table,
            which indexes stored integers). A reduced decode keeps the file's geometry:
            ``original_affine``, ``spatial_shape`` and ``spacing`` describe the file's pixel grid,
            ``affine`` the decoded one (see :func:`reduced_grid_affine`), ``decode_scale`` says by
            how much, so points decoded on it (``DecodeLandmarksd``) come back in the file's pixels
            and mm. Intensities are those of the low-pass image (the LUTs apply after it). None
            (default): decode whole.
        kwargs: passed to ``pydicom.dcmread`` (e.g. ``force=True`` for files without the Part 10
            header).

    Raises (from ``read``/``get_data``):
        ImageReadError: missing, empty, non-DICOM, truncated, multi-frame, colour or non-image
            files; the message names the file and the reason.
        MissingDecoderError: compressed pixel data and no installed plugin decodes it; the
            message names the transfer syntax, its UID and the package to install.
    """

    def __init__(
        self,
        apply_voi: bool = True,
        normalize: bool = True,
        invert_monochrome1: bool = True,
        channel_dim: str | int | None = None,
        reverse_indexing: bool = True,
        target_size: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.target_size = None if target_size is None else [int(v) for v in np.broadcast_to(target_size, (2,))]
        self.apply_voi = apply_voi
        self.normalize = normalize
        self.invert_monochrome1 = invert_monochrome1
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.reverse_indexing = reverse_indexing
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every file is DICOM: a ``.dcm``/``.dicom``/``.dic`` suffix, or 'DICM' at byte 128.

        Folders (DICOM series) are left to MONAI's ``PydicomReader``/``ITKReader``.
        """
        names = ensure_tuple(filename)
        return bool(names) and all(_looks_like_dicom(name) for name in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Dataset | list[Dataset]:
        """Read the DICOM header(s); pixel data is decoded in :meth:`get_data`.

        Args:
            data: a file, or a list of files to stack as channels.
            kwargs: passed to ``pydicom.dcmread``, overriding the constructor's.

        Raises:
            ImageNotFoundError: a file does not exist.
            ImageReadError: a file is a folder, is empty, is not DICOM or its header is corrupt.
        """
        kwargs_ = {**self.kwargs, **kwargs}
        datasets = []
        for name in ensure_tuple(data):
            if isinstance(name, (str, os.PathLike)):
                path = Path(name)
                if not path.exists():
                    raise ImageNotFoundError(path, "file not found")
                if path.is_dir():
                    raise ImageReadError(
                        path, "is a folder; DicomXrayReader reads single files (use PydicomReader for a DICOM series)"
                    )
                if path.stat().st_size == 0:
                    raise ImageReadError(path, "file is empty (0 bytes)")
                name = f"{path}"
            try:
                ds = pydicom.dcmread(name, **kwargs_)
            except InvalidDicomError as e:
                raise ImageReadError(
                    name,
                    "not a DICOM file: no 'DICM' marker at byte 128 (pass force=True to read a "
                    "DICOM data set stored without the Part 10 header)",
                ) from e
            except Exception as e:  # pydicom raises many types on a corrupt header
                reason = f"cannot parse the DICOM file, it may be truncated or corrupt ({type(e).__name__}: {e})"
                raise ImageReadError(name, reason) from e
            datasets.append(ds)
        return datasets if len(datasets) > 1 else datasets[0]

    def get_data(self, img: Dataset | list[Dataset]) -> tuple[np.ndarray, dict]:
        """Decode and convert the pixel data; return the float32 array and its metadata.

        Several data sets (from a list of files) are stacked on a new first (channel) axis; they
        must have the same shape, and the metadata of the first one is returned.
        """
        datasets = img if isinstance(img, list) else [img]
        results = [self._convert(ds) for ds in datasets]
        array, meta = results[0]
        if len(results) == 1:
            return array, meta
        for other, other_meta in results[1:]:
            if other.shape != array.shape or not np.allclose(other_meta["spacing"], meta["spacing"]):
                raise ImageReadError(
                    other_meta[ImageMetaKey.FILENAME_OR_OBJ],
                    f"cannot stack with {meta[ImageMetaKey.FILENAME_OR_OBJ]}: shape or spacing differs",
                )
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack([r[0] for r in results], axis=0), meta

    # -- steps --------------------------------------------------------------------------------

    def _convert(self, ds: Dataset) -> tuple[np.ndarray, dict]:
        filename = f"{getattr(ds, 'filename', None) or '<pydicom Dataset>'}"
        photometric = self._check_supported(ds, filename)
        reduced = self._decode_reduced(ds) if self.target_size is not None else None
        if reduced is None:
            stored = self._decode(ds, filename)
            reduced = self._box_reduce(ds, stored) if self.target_size is not None else None
        stored, grid_scale, grid_shift = reduced if reduced is not None else (stored, 1, 0.0)
        bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
        try:
            values, low, high, scale = self._modality(ds, stored, bits_stored)
            window = np.array([np.nan, np.nan])
            if self.apply_voi:
                values, low, high, scale, window = self._voi(ds, values, low, high, scale, filename)
        except ImageReadError:
            raise
        except Exception as e:  # malformed LUT / rescale attributes
            raise ImageReadError(filename, f"cannot apply the Modality/VOI LUT ({type(e).__name__}: {e})") from e

        polarity = "bright=dense"
        if photometric == "MONOCHROME1":
            if self.invert_monochrome1:
                values = (low + high) - values  # mirror within the range, which is kept
            else:
                polarity = "bright=less dense (MONOCHROME1, not inverted)"
        if self.normalize:
            values = (values - low) / (high - low) if high != low else np.zeros_like(values)
            values = np.clip(values, 0.0, 1.0)
            convention = f"{polarity}, [0,1] over {scale}"
        else:
            convention = f"{polarity}, {scale} values"
        array = np.ascontiguousarray(values, dtype=np.float32)

        (row_spacing, col_spacing), source = _physical_spacing(ds)
        file_shape = np.array([int(ds.Rows), int(ds.Columns)], dtype=np.int64)
        if self.reverse_indexing:
            array = np.ascontiguousarray(array.T)  # [row, col] -> [x, y], as PILReader does
            spacing = np.array([col_spacing, row_spacing], dtype=np.float64)
            file_shape = file_shape[::-1].copy()
        else:
            spacing = np.array([row_spacing, col_spacing], dtype=np.float64)
        file_affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
        reduced = grid_scale != 1
        affine = reduced_grid_affine(file_affine, [grid_scale] * 2, [grid_shift] * 2) if reduced else file_affine.copy()
        meta: dict[str, Any] = {
            ImageMetaKey.FILENAME_OR_OBJ: filename,
            MetaKeys.SPATIAL_SHAPE: file_shape if reduced else np.asarray(array.shape, dtype=np.int64),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if self.channel_dim is None else self.channel_dim,
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: file_affine,
            "spacing": spacing,
            "spacing_known": source != SPACING_UNKNOWN,
            "spacing_source": source,
            "intensity_convention": convention,
            "photometric_interpretation": photometric,
            "modality": f"{ds.get('Modality', '') or ''}".strip(),
            "bits_stored": bits_stored,
            "window": window,
        }
        if reduced:
            meta["decode_scale"] = np.array([grid_scale, grid_scale], dtype=np.float64)
        return array, meta

    def _decode_reduced(self, ds: Dataset) -> tuple[np.ndarray, int, float] | None:
        """Stored values decoded at reduced size, with the scale and the shift of the grid; None when
        the transfer syntax, the data or the target size allow no reduction (the caller decodes whole).

        Pillow decodes the frame's codestream (JPEG 2000 through OpenJPEG's resolution levels,
        baseline JPEG with libjpeg's DCT scaling); anything it cannot do falls back to the whole
        decode, whose errors name the file.
        """
        from PIL import Image

        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        j2k, dct = tsyntax in _J2K_SYNTAXES, tsyntax in _DCT_SYNTAXES
        if not (j2k or dct) or int(ds.get("PixelRepresentation", 0) or 0) != 0:
            return None
        rows, cols = int(ds.Rows), int(ds.Columns)
        t_rows, t_cols = self.target_size[::-1] if self.reverse_indexing else self.target_size
        if rows < 2 * t_rows or cols < 2 * t_cols:
            return None  # no level of reduction would keep the target size
        from PIL import features

        if not features.check("jpg_2000" if j2k else "jpg"):
            _reduced_unavailable(tsyntax, f"Pillow was built without {'OpenJPEG' if j2k else 'libjpeg'}")
            return None
        try:
            from pydicom.encaps import generate_frames

            frame = next(generate_frames(ds.PixelData, number_of_frames=1))
            image = Image.open(io.BytesIO(frame))
            if j2k:
                header = _j2k_header(frame)
                if header is None or header[1]:
                    return None
                precision, _, levels = header
                level = 0
                while (
                    level < levels and -(-rows // 2 ** (level + 1)) >= t_rows and -(-cols // 2 ** (level + 1)) >= t_cols
                ):
                    level += 1
                image.reduce = level
                scale, shift = 2**level, 0.0
            else:
                precision = 8
                _, box = image.draft(image.mode, (t_cols, t_rows)) or (None, (0, 0, cols, rows))
                scale = round(cols / box[2])
                shift = (scale - 1) / 2
            if scale == 1 or image.mode not in ("L", "I;16"):
                return None
            array = np.asarray(image)
        except Exception:
            return None
        if image.mode == "I;16" and precision < 16:
            array = array >> (16 - precision)  # Pillow scales J2K samples up to 16 bits
        expected = (-(-rows // scale), -(-cols // scale))
        if array.shape != expected:
            return None
        return array, scale, shift

    def _box_reduce(self, ds: Dataset, stored: np.ndarray) -> tuple[np.ndarray, int, float] | None:
        """Stored values of a film decoded whole, averaged over k x k blocks (the largest integer k
        that keeps the target size) before the LUTs and the float conversion of every pixel; None
        when no k >= 2 keeps it, or a Modality/VOI LUT table (which indexes stored integers) applies.

        Block n covers file pixels k*n .. k*n + k - 1 (centre ``k*n + (k-1)/2``, as JPEG DCT
        scaling); a last, partial block averages the pixels it has.
        """
        if ds.get("ModalityLUTSequence") or (self.apply_voi and ds.get("VOILUTSequence")):
            return None
        rows, cols = stored.shape
        t_rows, t_cols = self.target_size[::-1] if self.reverse_indexing else self.target_size
        k = min(rows // max(1, t_rows), cols // max(1, t_cols))
        if k < 2:
            return None
        pixels = torch.from_numpy(np.ascontiguousarray(stored, dtype=np.float32))[None, None]
        return torch.nn.functional.avg_pool2d(pixels, k, ceil_mode=True)[0, 0].numpy(), k, (k - 1) / 2

    @staticmethod
    def _check_supported(ds: Dataset, filename: str) -> str:
        """Reject what is not a single-frame grayscale image; return the Photometric Interpretation."""
        if "PixelData" not in ds:
            if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
                reason = "holds floating-point pixel data (e.g. a parametric map), not a radiograph"
            elif "Rows" in ds and "Columns" in ds:
                reason = "describes an image but has no Pixel Data (7FE0,0010): the file is probably truncated"
            else:
                sop = ds.get("SOPClassUID")
                name = f"{getattr(sop, 'name', sop)}" if sop else ""
                if "Image Storage" in name:  # an image SOP class without pixels: cut short
                    kind = f"a '{name}' object, so the file is probably truncated"
                elif name:
                    kind = f"it is a '{name}' object, not an image"
                else:
                    kind = "not an image, or the file is truncated"
                reason = f"has no Pixel Data (7FE0,0010): {kind}"
            raise ImageReadError(filename, reason)
        frames = _first_number(ds, "NumberOfFrames")
        if frames is not None and frames > 1:
            raise ImageReadError(
                filename,
                f"is a multi-frame image ({int(frames)} frames); DicomXrayReader reads single-frame "
                "radiographs (split the frames, or use monai.data.PydicomReader for the volume)",
            )
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        photometric = f"{ds.get('PhotometricInterpretation', '') or ''}".strip().upper()
        if spp == 1 and not photometric:
            # A required attribute, and the only one that says which way the gray runs: guessing
            # MONOCHROME2 would silently feed a MONOCHROME1 film to the model inverted.
            raise ImageReadError(
                filename,
                "has no Photometric Interpretation (0028,0004), so MONOCHROME1 (bright = less dense) "
                "cannot be told from MONOCHROME2; add the attribute to the file if you know the polarity",
            )
        if spp != 1 or photometric not in _GRAYSCALE:
            raise ImageReadError(
                filename,
                f"is a colour image (Photometric Interpretation '{photometric}', {spp} samples per pixel); "
                "DicomXrayReader reads grayscale radiographs only",
            )
        return photometric

    @staticmethod
    def _decode(ds: Dataset, filename: str) -> np.ndarray:
        """Stored pixel values, shape (Rows, Columns), decompressing with pydicom's plugins."""
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_text = ""
        if tsyntax is not None:
            if not tsyntax.is_transfer_syntax:
                raise ImageReadError(filename, f"unknown Transfer Syntax UID '{tsyntax}'")
            ts_text = f" '{tsyntax.name}' ({tsyntax})"
            if tsyntax.is_encapsulated:
                try:
                    decoder = get_decoder(tsyntax)
                except NotImplementedError as e:
                    raise ImageReadError(
                        filename, f"pixel data uses transfer syntax{ts_text}, which pydicom cannot decode"
                    ) from e
                if not decoder.is_available:
                    raise MissingDecoderError(
                        filename,
                        f"pixel data is compressed with{ts_text} and no installed pydicom plugin decodes it; "
                        f"install one with {decoder_install_hint(tsyntax)}",
                    )
        try:
            array = ds.pixel_array
        except Exception as e:
            message = " ".join(f"{e}".split())
            if "less than expected" in message or "truncated" in message.lower():
                reason = f"pixel data is truncated ({message})"
            else:
                reason = f"cannot decode the pixel data{ts_text} ({type(e).__name__}: {message})"
            raise ImageReadError(filename, reason) from e
        if array.ndim != 2:
            raise ImageReadError(filename, f"decoded pixel data has shape {array.shape}, expected one 2D frame")
        return array

    @staticmethod
    def _modality(ds: Dataset, stored: np.ndarray, bits_stored: int) -> tuple[np.ndarray, float, float, str]:
        """Modality values and the (black, white) ends of their range for MONOCHROME2."""
        smin, smax = _stored_range(ds, bits_stored)
        sequence = ds.get("ModalityLUTSequence")
        if sequence:
            table, first_map, bits = _lut_table(sequence[0], ds)
            # same output range as pydicom's windowing assumes after a Modality LUT
            return _apply_lut(stored, table, first_map), 0.0, float(2**bits - 1), "the Modality LUT output range"
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            low, high = sorted((smin * slope + intercept, smax * slope + intercept))
            return apply_modality_lut(stored, ds), low, high, "the Bits Stored range after Rescale Slope/Intercept"
        return stored.astype(np.float64), float(smin), float(smax), "the Bits Stored range"

    @staticmethod
    def _voi(
        ds: Dataset, values: np.ndarray, low: float, high: float, scale: str, filename: str
    ) -> tuple[np.ndarray, float, float, str, np.ndarray]:
        """Apply the VOI LUT Sequence or the first window; return values, range, description, window."""
        no_window = np.array([np.nan, np.nan])
        sequence = ds.get("VOILUTSequence")
        if sequence and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]:
            table, first_map, _ = _lut_table(sequence[0], ds)
            voi_values = _apply_lut(values, table, first_map)
            return voi_values, float(table.min()), float(table.max()), "the VOI LUT output range", no_window

        center, width = _first_number(ds, "WindowCenter"), _first_number(ds, "WindowWidth")
        if center is None and width is None:
            return values, low, high, scale, no_window
        function = f"{ds.get('VOILUTFunction', 'LINEAR') or 'LINEAR'}".strip().upper()
        problem = None
        if center is None or width is None:
            problem = "Window Center/Width is incomplete or not a number"
        elif function not in _VOI_FUNCTIONS:
            problem = f"VOI LUT Function '{function}' is not supported"
        elif width < (1 if function == "LINEAR" else 0) or width == 0:
            problem = f"Window Width {width} is not valid for {function}"
        if problem is not None:
            warnings.warn(f"{filename}: {problem}; VOI windowing skipped.", stacklevel=3)
            return values, low, high, scale, no_window
        # pydicom maps the window onto the modality output range, signed and rescaled as stored;
        # its ends are the (black, white) of the result, whatever the rescale slope's sign.
        smin, smax = _stored_range(ds, int(ds.BitsStored))
        if ds.get("ModalityLUTSequence"):
            y_black, y_white = low, high
        elif "RescaleSlope" in ds and "RescaleIntercept" in ds:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            y_black, y_white = smin * slope + intercept, smax * slope + intercept
        else:
            y_black, y_white = float(smin), float(smax)
        windowed = apply_windowing(values, ds, index=0)
        return windowed, y_black, y_white, "the VOI window", np.array([center, width], dtype=np.float64)
