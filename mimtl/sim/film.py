"""What happens to a radiograph after the detector: vendor-style processing, overlays, storage.

The functions here act on a display-ready film (float ``(H, W)`` in [0, 1], bright = dense, the
output of :func:`mimtl.sim.drr.expose`) and are what :mod:`mimtl.sim.style` applies, per film,
with the settings it draws:

* processing: :func:`multiscale_enhance` (band gains of a Gaussian pyramid, as multi-scale
  processing does), :func:`unsharp_mask`, :func:`equalize` (histogram equalisation),
  :func:`tone_curve` (a named look-up table) and gamma;
* overlays: :func:`collimate` (a rotated rectangular field, black or white outside),
  :func:`burn_in` (a lead side marker and burned-in text, white as lead and annotations are);
* storage: :func:`stored_values` (8 to 16 bits, MONOCHROME1 or MONOCHROME2) and
  :func:`write_dicom` (a DX "for presentation" file that :class:`mimtl.io.DicomXrayReader` reads
  back to the same film).

Everything is deterministic; randomness lives in the settings drawn by :mod:`mimtl.sim.style`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = [
    "TONE_CURVES",
    "burn_in",
    "collimate",
    "equalize",
    "multiscale_enhance",
    "stored_values",
    "tone_curve",
    "unsharp_mask",
    "write_dicom",
]


def _logistic(t):
    return 1.0 / (1.0 + np.exp(-t))


def _s_curve(x: np.ndarray, slope: float, mid: float = 0.5, fog: float = 0.0) -> np.ndarray:
    """A logistic through ``mid`` rescaled to [0, 1] at 0 and 1, then lifted by ``fog``."""
    lo, hi = _logistic(-slope * mid), _logistic(slope * (1 - mid))
    return fog + (1 - fog) * (_logistic(slope * (x - mid)) - lo) / (hi - lo)


#: Named tone curves (look-up tables from [0, 1] to [0, 1]): generic shapes of the display LUTs
#: vendors ship (no vendor's actual table). ``film_hd`` imitates a screen-film characteristic
#: curve (with base-plus-fog), which digital systems no longer use; ``s_late`` centres its contrast
#: on denser tissue than the others.
TONE_CURVES = {
    "linear": lambda x: x,
    "s_soft": lambda x: _s_curve(x, 4.0),
    "s_hard": lambda x: _s_curve(x, 8.0),
    "shoulder": lambda x: np.log1p(4.0 * x) / math.log1p(4.0),
    "toe": lambda x: np.expm1(1.6 * x) / math.expm1(1.6),
    "film_hd": lambda x: _s_curve(x, 6.0, mid=0.55, fog=0.08),
    "s_late": lambda x: _s_curve(x, 5.0, mid=0.62),
}


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma_px, mode="nearest", truncate=3.0) if sigma_px > 0.05 else image


def tone_curve(image: np.ndarray, name: str, gamma: float = 1.0) -> np.ndarray:
    """``TONE_CURVES[name](x) ** gamma`` on a [0, 1] image (clipped first)."""
    if name not in TONE_CURVES:
        raise ValueError(f"Unknown tone curve {name!r}; choose from {sorted(TONE_CURVES)}.")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, not {gamma}.")
    x = np.clip(np.asarray(image, dtype=np.float64), 0, 1)
    return np.clip(TONE_CURVES[name](x), 0, 1) ** gamma


def unsharp_mask(image: np.ndarray, amount: float, sigma_mm: float, spacing: float) -> np.ndarray:
    """``x + amount (x - G(x))`` with a Gaussian ``G`` of ``sigma_mm`` (edge enhancement)."""
    x = np.asarray(image, dtype=np.float64)
    return x + amount * (x - _blur(x, sigma_mm / spacing)) if amount else x


#: Sigmas (mm) that split a film into detail bands, and the relative gain of each band in
#: :func:`multiscale_enhance`: fine and medium detail (edges, vessels, ribs) most.
_BANDS_MM = (0.7, 1.5, 3.0, 6.0, 12.0)
_BAND_WEIGHTS = (0.6, 1.0, 0.8, 0.4)


def multiscale_enhance(image: np.ndarray, amount: float, spacing: float) -> np.ndarray:
    """Multi-scale edge enhancement: the differences of a Gaussian pyramid (detail bands of
    :data:`_BANDS_MM`) are added back with gain ``amount x`` :data:`_BAND_WEIGHTS`."""
    x = np.asarray(image, dtype=np.float64)
    if not amount:
        return x
    levels = [_blur(x, s / spacing) for s in _BANDS_MM]
    out = x.copy()
    for w, fine, coarse in zip(_BAND_WEIGHTS, levels[:-1], levels[1:]):
        out += amount * w * (fine - coarse)
    return out


def equalize(image: np.ndarray, weight: float) -> np.ndarray:
    """Histogram equalisation (256 bins, scikit-image) blended with the film: ``weight`` 0..1."""
    from skimage import exposure

    x = np.clip(np.asarray(image, dtype=np.float64), 0, 1)
    if not weight:
        return x
    return (1 - weight) * x + weight * exposure.equalize_hist(x, nbins=256)


def collimate(
    image: np.ndarray,
    insets: Sequence[float],
    angle_deg: float = 0.0,
    fill: str = "black",
    penumbra_px: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Keep a rectangular field, rotated by ``angle_deg`` about its centre; return (film, field mask).

    ``insets`` = (top, bottom, left, right): the fraction of the height / width outside the
    field on each side. Outside it the film is 0 (``fill="black"``: the vendor's electronic
    shutter) or near 1 (``"white"``: unexposed detector, which shows as dense), with a soft edge
    ``penumbra_px`` wide. The mask is True inside the field.
    """
    if fill not in ("black", "white"):
        raise ValueError(f"fill must be 'black' or 'white', not {fill!r}.")
    top, bottom, left, right = (float(v) for v in insets)
    if not all(0 <= v < 0.5 for v in (top, bottom, left, right)):
        raise ValueError(f"insets must each be in [0, 0.5), not {tuple(insets)}.")
    x = np.asarray(image, dtype=np.float64)
    h, w = x.shape
    cy, cx = (top * h + (1 - bottom) * h) / 2, (left * w + (1 - right) * w) / 2
    half_h, half_w = (1 - top - bottom) * h / 2, (1 - left - right) * w / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    a = math.radians(angle_deg)
    u = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
    v = -(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a)
    inside = np.minimum(half_w - np.abs(u), half_h - np.abs(v))  # signed distance to the edge, px
    field = np.clip(inside / max(penumbra_px, 1e-6) + 0.5, 0, 1)
    outside = 0.0 if fill == "black" else 0.97
    return field * x + (1 - field) * outside, inside > 0


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=max(6, int(size)))


def burn_in(
    image: np.ndarray,
    marker: str | None = None,
    marker_xy: tuple[float, float] = (0.1, 0.1),
    text: str | None = None,
    text_xy: tuple[float, float] = (0.05, 0.92),
    level: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a lead side marker (``"L"`` / ``"R"``, in a bordered box) and a line of text; return
    (film, mask of the drawn pixels).

    Positions are fractions (x, y) of the width / height (top-left corner of the drawing); the
    marker is about 8 % and the text 4 % of the film's height. Both are drawn at ``level``
    (white: lead stops the beam; burned-in annotations are white on MONOCHROME2).
    """
    from PIL import Image, ImageDraw

    x = np.asarray(image, dtype=np.float64)
    h, w = x.shape
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if marker:
        size = max(6, round(0.08 * h))
        x0, y0 = marker_xy[0] * w, marker_xy[1] * h
        draw.rectangle((x0, y0, x0 + 0.8 * size, y0 + 1.1 * size), outline=255, width=max(1, size // 10))
        centre = (x0 + 0.4 * size, y0 + 0.55 * size)
        draw.text(centre, marker, fill=255, font=_font(round(0.8 * size)), anchor="mm")
    if text:
        draw.text((text_xy[0] * w, text_xy[1] * h - 0.04 * h), text, fill=255, font=_font(round(0.04 * h)))
    mask = np.asarray(canvas, dtype=np.float64) / 255
    return (1 - mask) * x + mask * level, mask > 0.5


def stored_values(image: np.ndarray, bits: int = 8, photometric: str = "MONOCHROME2") -> np.ndarray:
    """A [0, 1] film (bright = dense) as stored pixel values of ``bits`` bits.

    MONOCHROME2 stores ``round(x (2**bits - 1))``; MONOCHROME1 (bright = less dense) stores its
    complement, ``2**bits - 1`` minus that. dtype uint8 for 8 bits, else uint16.
    """
    if not 8 <= int(bits) <= 16:
        raise ValueError(f"bits must be 8 to 16, not {bits}.")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be 'MONOCHROME1' or 'MONOCHROME2', not {photometric!r}.")
    top = 2 ** int(bits) - 1
    values = np.round(np.clip(np.asarray(image, dtype=np.float64), 0, 1) * top).astype(np.int64)
    if photometric == "MONOCHROME1":
        values = top - values
    return values.astype(np.uint8 if bits == 8 else np.uint16)


def _pair(spacing: float | Sequence[float]) -> list[float]:
    return [float(v) for v in (spacing if isinstance(spacing, (tuple, list)) else (spacing, spacing))]


def write_dicom(
    path: str | Path,
    image: np.ndarray,
    bits: int = 12,
    photometric: str = "MONOCHROME2",
    spacing: float | tuple[float, float] = 1.0,
    imager_spacing: float | tuple[float, float] | None = None,
    view: str = "PA",
    window: bool = True,
    tags: dict | None = None,
) -> Path:
    """Write a [0, 1] film (bright = dense) as an uncompressed DX "for presentation" DICOM.

    Stored values are :func:`stored_values` (``bits`` stored in 8 or 16 allocated bits).
    ``spacing`` (mm, rows then columns) becomes Pixel Spacing, ``imager_spacing`` (default: the
    same) Imager Pixel Spacing. ``window`` adds a Window Center / Width over the full stored
    range (most vendors write one). UIDs are derived from the file name and the pixels, so the
    same film gives the same bytes. Returns ``path``.
    """
    from pydicom import uid
    from pydicom.dataset import FileDataset, FileMetaDataset

    path = Path(path)
    values = stored_values(image, bits, photometric)
    digest = int(hashlib.sha256(path.name.encode() + values.tobytes()).hexdigest()[:24], 16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = f"2.25.{digest}"
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"2.25.{digest + 1}", f"2.25.{digest + 2}"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "mimtl simulator"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = int(bits), int(bits) - 1, 0
    ds.PixelSpacing = _pair(spacing)
    ds.ImagerPixelSpacing = _pair(spacing if imager_spacing is None else imager_spacing)
    if window:
        ds.WindowCenter, ds.WindowWidth = 2 ** (int(bits) - 1), 2 ** int(bits)
    for key, value in (tags or {}).items():
        setattr(ds, key, value)
    ds.PixelData = values.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
