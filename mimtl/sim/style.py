"""Acquisition and film styles: seeded, opt-in randomisation of how a simulated film is taken,
processed and stored (see docs/simulator.md).

A :class:`FilmStyle` holds the *ranges* of every knob; :meth:`FilmStyle.sample` draws one
:class:`FilmSettings` per film from that film's own generator, so film ``i`` gets the same
settings whatever ``n`` is, and the same seed gives the same bytes. Three named presets
(:data:`STYLES`):

* ``default``: every knob off: the demo data sets exactly as before styles existed (the shipped
  models were trained on them);
* ``randomized``: training-time randomisation over the range of ordinary chest films;
* ``other_acquisition``: settings held *out* of ``randomized`` (other tone curves, stronger
  processing, larger tilts, lower dose, smaller children, other bit depths), for a sim-to-sim
  transfer split: train on ``randomized`` (or ``default``), test here.

The builders in :mod:`mimtl.sim.chest` take ``style=`` (a name or a :class:`FilmStyle`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from mimtl.sim import film

__all__ = ["STYLES", "FilmSettings", "FilmStyle", "get_style", "process", "save_film", "settings_record"]

Range = tuple[float, float]


@dataclass(frozen=True)
class FilmSettings:
    """The concrete settings of one film (drawn by :meth:`FilmStyle.sample`; JSON-able with ``asdict``)."""

    # processing, in this order: multi-scale enhancement, unsharp mask, equalisation, tone curve, gamma
    multiscale: float = 0.0
    unsharp: float = 0.0
    unsharp_mm: float = 5.0
    equalize: float = 0.0
    tone_curve: str = "linear"
    gamma: float = 1.0
    # acquisition
    photons: float | None = None  # quanta per pixel; None: the builder's own exposure
    scatter: float | None = None  # scatter-to-primary ratio; None: the builder's own
    portable: bool = False  # AP supine portable: source 1 m from the detector, no grid
    isocenter_to_detector: float = 200.0
    body_scale: float = 1.0
    child: bool = False
    field_scale: float = 1.0  # field of view relative to the builder's (< 1: a smaller field)
    roll_deg: float = 0.0  # in-plane rotation added to the pose
    tilt_deg: float = 0.0  # lordotic / kyphotic tilt added to the pose
    # overlays
    collimation: tuple[float, float, float, float] | None = None  # (top, bottom, left, right) insets
    collimation_angle: float = 0.0
    collimation_fill: str = "black"
    marker: str | None = None  # "L" or "R"
    marker_xy: tuple[float, float] = (0.1, 0.1)
    text: str | None = None
    # storage
    dicom: bool = False
    bits: int = 8
    photometric: str = "MONOCHROME2"


@dataclass(frozen=True)
class FilmStyle:
    """Ranges of the per-film settings. Ranges are ``(low, high)``, drawn uniformly; a
    probability is the chance that a film gets the knob at all; ``()`` / 0 turns a knob off.

    Args:
        name: the preset's name (recorded in the datalist).
        multiscale: gain range of multi-scale edge enhancement (:func:`film.multiscale_enhance`).
        unsharp: amount range of the unsharp mask; ``unsharp_mm`` its sigma range.
        equalize: probability of histogram equalisation; ``equalize_weight`` its blend range.
        tone_curves: names in :data:`film.TONE_CURVES` to choose from (uniformly).
        gamma: gamma range after the tone curve.
        log10_photons: range of log10(quanta per pixel); ``None``: the builder's (4.3-5.3).
        portable: probability of an AP supine portable film (1 m source-detector distance,
            detector ``portable_iso`` mm behind the isocentre, no grid: scatter ``portable_scatter``).
        body_scale: range of the adult patient's size factor (on top of the pose's ±7 %).
        child: probability of a child; ``child_scale`` the size range (a 0.6 thorax is a
            small child's); the field of view shrinks by ``child_field`` (the thorax fills
            more of the film, as a radiographer collimates to a child).
        roll_deg, tilt_deg: ``(low, high)`` of the magnitude (either sign) of the extra in-plane
            rotation and lordotic tilt.
        collimation: probability of a collimated field; ``collimation_inset`` the range of each
            side's inset (fraction), ``collimation_angle`` of its rotation (degrees, either sign),
            ``collimation_white`` the probability the outside is white (unexposed) not black.
        marker: probability of a lead side marker; ``text``: of a line of burned-in text.
        dicom: probability the film is stored as DICOM (else the layout's own 8-bit format);
            ``bits`` and ``photometric`` are chosen from (DICOM films only).
    """

    name: str = "default"
    multiscale: Range = (0.0, 0.0)
    unsharp: Range = (0.0, 0.0)
    unsharp_mm: Range = (3.0, 8.0)
    equalize: float = 0.0
    equalize_weight: Range = (0.2, 0.6)
    tone_curves: tuple[str, ...] = ()
    gamma: Range = (1.0, 1.0)
    log10_photons: Range | None = None
    portable: float = 0.0
    portable_iso: Range = (150.0, 250.0)
    portable_scatter: Range = (0.3, 0.6)
    body_scale: Range = (1.0, 1.0)
    child: float = 0.0
    child_scale: Range = (0.62, 0.8)
    child_field: Range = (0.75, 0.9)
    roll_deg: Range = (0.0, 0.0)
    tilt_deg: Range = (0.0, 0.0)
    collimation: float = 0.0
    collimation_inset: Range = (0.02, 0.1)
    collimation_angle: Range = (0.0, 2.0)
    collimation_white: float = 0.3
    marker: float = 0.0
    text: float = 0.0
    dicom: float = 0.0
    bits: tuple[int, ...] = (8,)
    photometric: tuple[str, ...] = ("MONOCHROME2",)

    def __post_init__(self) -> None:
        unknown = set(self.tone_curves) - set(film.TONE_CURVES)
        if unknown:
            raise ValueError(f"tone_curves: unknown {sorted(unknown)}; choose from {sorted(film.TONE_CURVES)}.")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and not 0 <= value <= 1:
                raise ValueError(f"{f.name} is a probability: it must be in [0, 1], not {value}.")
            if f.type in ("Range", "Range | None") and value is not None and value[0] > value[1]:
                raise ValueError(f"{f.name} must be (low, high) with low <= high, not {value}.")
        if any(not 8 <= b <= 16 for b in self.bits) or not self.bits:
            raise ValueError(f"bits must be 8 to 16, not {self.bits}.")
        if not self.photometric or set(self.photometric) - {"MONOCHROME1", "MONOCHROME2"}:
            raise ValueError(f"photometric must be MONOCHROME1 and/or MONOCHROME2, not {self.photometric}.")

    @property
    def is_default(self) -> bool:
        """True when every knob is off (the builders then run exactly their pre-style code)."""
        return replace(self, name="default") == FilmStyle()

    def sample(self, rng: np.random.Generator) -> FilmSettings:
        """One film's settings. Always draws the same numbers from ``rng`` in the same order,
        whatever the knobs, so turning one knob off leaves the others' draws unchanged."""
        u = rng.uniform(size=32)  # one uniform per decision, in a fixed order
        insets = rng.uniform(size=4)

        def between(r: Range, t: float) -> float:
            return float(r[0] + (r[1] - r[0]) * t)

        def signed(r: Range, t: float) -> float:
            magnitude = between(r, abs(2 * t - 1))
            return magnitude if t >= 0.5 else -magnitude

        child = bool(u[9] < self.child)
        portable = bool(u[6] < self.portable)
        collimated = bool(u[13] < self.collimation)
        dicom = bool(u[20] < self.dicom)
        curves = self.tone_curves or ("linear",)
        side = "R" if u[17] < 0.5 else "L"
        return FilmSettings(
            multiscale=between(self.multiscale, u[0]),
            unsharp=between(self.unsharp, u[1]),
            unsharp_mm=between(self.unsharp_mm, u[2]),
            equalize=between(self.equalize_weight, u[4]) if u[3] < self.equalize else 0.0,
            tone_curve=curves[min(int(u[5] * len(curves)), len(curves) - 1)],
            gamma=between(self.gamma, u[23]),
            photons=None if self.log10_photons is None else float(10 ** between(self.log10_photons, u[7])),
            scatter=between(self.portable_scatter, u[8]) if portable else None,
            portable=portable,
            isocenter_to_detector=between(self.portable_iso, u[26]) if portable else 200.0,
            body_scale=between(self.child_scale, u[10]) if child else between(self.body_scale, u[10]),
            child=child,
            field_scale=between(self.child_field, u[12]) if child else 1.0,
            roll_deg=signed(self.roll_deg, u[11]),
            tilt_deg=signed(self.tilt_deg, u[22]),
            collimation=tuple(between(self.collimation_inset, t) for t in insets) if collimated else None,
            collimation_angle=signed(self.collimation_angle, u[14]) if collimated else 0.0,
            collimation_fill="white" if collimated and u[15] < self.collimation_white else "black",
            marker=side if u[16] < self.marker else None,
            marker_xy=(0.06 + 0.04 * u[18], 0.06 + 0.04 * u[19])
            if side == "R"
            else (0.84 + 0.04 * u[18], 0.06 + 0.04 * u[19]),
            text=_text(portable, u[27]) if u[21] < self.text else None,
            dicom=dicom,
            bits=self.bits[min(int(u[24] * len(self.bits)), len(self.bits) - 1)] if dicom else 8,
            photometric=self.photometric[min(int(u[25] * len(self.photometric)), len(self.photometric) - 1)]
            if dicom
            else "MONOCHROME2",
        )


def _text(portable: bool, t: float) -> str:
    view = "AP PORTABLE" if portable else "PA ERECT"
    return f"{view}  {int(t * 1e6) % 24:02d}:{int(t * 1e8) % 60:02d}"


#: The named presets. See docs/simulator.md for why each range is what it is.
STYLES: dict[str, FilmStyle] = {
    "default": FilmStyle(),
    "randomized": FilmStyle(
        name="randomized",
        multiscale=(0.0, 0.8),
        unsharp=(0.0, 0.8),
        unsharp_mm=(3.0, 8.0),
        equalize=0.2,
        equalize_weight=(0.2, 0.5),
        tone_curves=("linear", "s_soft", "s_hard", "shoulder", "toe"),
        gamma=(0.8, 1.25),
        log10_photons=(3.8, 5.3),
        portable=0.25,
        body_scale=(0.88, 1.15),
        child=0.1,
        child_scale=(0.7, 0.85),
        child_field=(0.8, 0.95),
        roll_deg=(0.0, 4.0),
        tilt_deg=(0.0, 7.0),
        collimation=0.5,
        collimation_inset=(0.01, 0.08),
        collimation_angle=(0.0, 2.0),
        collimation_white=0.3,
        marker=0.6,
        text=0.4,
        dicom=0.5,
        bits=(8, 12, 16),
        photometric=("MONOCHROME1", "MONOCHROME2"),
    ),
    # everything outside randomized's ranges (or at its far end), never inside them
    "other_acquisition": FilmStyle(
        name="other_acquisition",
        multiscale=(0.8, 1.0),
        unsharp=(0.8, 1.0),
        unsharp_mm=(8.5, 11.0),
        equalize=0.35,
        equalize_weight=(0.5, 0.6),
        tone_curves=("film_hd", "s_late"),
        gamma=(1.26, 1.32),
        log10_photons=(3.65, 3.78),
        portable=0.5,
        portable_iso=(250.0, 300.0),
        portable_scatter=(0.6, 0.8),
        body_scale=(1.15, 1.22),
        child=0.3,
        child_scale=(0.58, 0.68),
        child_field=(0.68, 0.78),
        roll_deg=(4.5, 7.0),
        tilt_deg=(7.5, 11.0),
        collimation=0.8,
        collimation_inset=(0.08, 0.14),
        collimation_angle=(2.0, 4.0),
        collimation_white=0.5,
        marker=0.8,
        text=0.8,
        dicom=1.0,
        bits=(10, 14),
        photometric=("MONOCHROME1", "MONOCHROME2"),
    ),
}


def get_style(style: str | FilmStyle | None) -> FilmStyle:
    """A :class:`FilmStyle` from a preset name (:data:`STYLES`), a style, or ``None`` (default)."""
    if style is None:
        return STYLES["default"]
    if isinstance(style, FilmStyle):
        return style
    if style not in STYLES:
        raise ValueError(f"style: unknown preset {style!r}; choose one of {', '.join(STYLES)}.")
    return STYLES[style]


def process(
    image: np.ndarray,
    settings: FilmSettings,
    spacing: float,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Apply one film's processing and overlays to a [0, 1] film (bright = dense).

    ``spacing`` is the pixel spacing in mm (for the filter widths). ``keep``: ``(N, 2)`` pixel
    ``(x, y)`` points the collimated field must contain (with a 2 % margin), e.g. the lungs'
    projected corners or the landmarks: a radiographer collimates to the region of interest,
    so the insets shrink where they would cut into it.
    """
    x = film.multiscale_enhance(image, settings.multiscale, spacing)
    x = film.unsharp_mask(x, settings.unsharp, settings.unsharp_mm, spacing)
    x = film.equalize(np.clip(x, 0, 1), settings.equalize)
    x = film.tone_curve(x, settings.tone_curve, settings.gamma)
    if settings.collimation is not None:
        insets = _fit_insets(settings.collimation, x.shape, keep)
        x, _ = film.collimate(x, insets, settings.collimation_angle, settings.collimation_fill)
    if settings.marker or settings.text:
        x, _ = film.burn_in(x, settings.marker, settings.marker_xy, settings.text)
    return np.clip(x, 0, 1).astype(np.float32)


def _fit_insets(insets, shape, keep) -> tuple[float, float, float, float]:
    top, bottom, left, right = insets
    if keep is None or len(keep) == 0:
        return top, bottom, left, right
    h, w = shape
    pts = np.asarray(keep, dtype=np.float64)
    lo_x, hi_x = np.clip(pts[:, 0].min() / w - 0.02, 0, 1), np.clip(pts[:, 0].max() / w + 0.02, 0, 1)
    lo_y, hi_y = np.clip(pts[:, 1].min() / h - 0.02, 0, 1), np.clip(pts[:, 1].max() / h + 0.02, 0, 1)
    return min(top, lo_y), min(bottom, 1 - hi_y), min(left, lo_x), min(right, 1 - hi_x)


def save_film(
    root: Path,
    rel_stem: str,
    image: np.ndarray,
    settings: FilmSettings | None,
    suffix: str,
    spacing: float,
    imager_spacing: float | None = None,
    view: str = "PA",
    **save_kwargs,
) -> str:
    """Save a [0, 1] film as ``rel_stem + suffix`` (8-bit, the layout's format) or, when the
    settings say so, as ``rel_stem + ".dcm"``; return the relative path written."""
    from PIL import Image

    if settings is not None and settings.dicom:
        rel = rel_stem + ".dcm"
        film.write_dicom(root / rel, image, settings.bits, settings.photometric, spacing, imager_spacing, view)
        return rel
    rel = rel_stem + suffix
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(film.stored_values(image, 8)).save(root / rel, **save_kwargs)
    return rel


def settings_record(settings: FilmSettings) -> dict:
    """The settings as plain JSON values (floats rounded to 4 digits)."""
    out = {}
    for k, v in asdict(settings).items():
        if isinstance(v, float):
            v = round(v, 4)
        elif isinstance(v, tuple):
            v = [round(float(t), 4) for t in v]
        out[k] = v
    return out
