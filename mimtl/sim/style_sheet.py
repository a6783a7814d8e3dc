"""A contact sheet of what the film styles do (docs/simulator_styles.png).

Row 1: one film, then the same film with one knob of :class:`mimtl.sim.style.FilmSettings` turned
on at a time. Row 2: the findings (each inserted in 3D into the same CT). Rows 3 and 4: films of
the ``randomized`` and ``other_acquisition`` presets as their builders draw them.

    python -m mimtl.sim.style_sheet docs/simulator_styles.png
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from mimtl.sim import chest, drr, findings
from mimtl.sim.sheet import contact_sheet
from mimtl.sim.style import STYLES, FilmSettings, process

__all__ = ["style_sheet"]

_KNOBS = (
    ("default", FilmSettings()),
    ("tone s_hard", FilmSettings(tone_curve="s_hard")),
    ("gamma 1.4", FilmSettings(gamma=1.4)),
    ("multiscale 1.0", FilmSettings(multiscale=1.0)),
    ("unsharp 1.0/8mm", FilmSettings(unsharp=1.0, unsharp_mm=8.0)),
    ("equalize 0.6", FilmSettings(equalize=0.6)),
    ("collimation", FilmSettings(collimation=(0.1, 0.06, 0.12, 0.1), collimation_angle=2.0)),
    ("marker + text", FilmSettings(marker="R", marker_xy=(0.07, 0.07), text="AP PORTABLE  07:42")),
    ("child 0.65", FilmSettings(body_scale=0.65, child=True, field_scale=0.75)),
    ("AP portable", FilmSettings(portable=True, isocenter_to_detector=250.0, scatter=0.5)),
    ("low dose 10^3.6", FilmSettings(photons=10**3.6)),
    ("tilt 10, roll 6", FilmSettings(tilt_deg=10.0, roll_deg=6.0)),
)


def _film(volume, settings: FilmSettings, size, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = drr.Geometry(size=size, spacing=chest._spacing(size) * settings.field_scale).resolved(volume)
    geometry = chest._styled_geometry(base, settings)
    pose = chest._styled_pose(drr.Pose(), settings)
    exposure = chest._styled_exposure(drr.Exposure(), settings)
    film = drr.simulate(volume, rng, geometry, pose, exposure, bone_scale=chest._BONE_SCALE)
    return process(film.image, settings, geometry.spacing)


def style_sheet(out: str | Path, size: tuple[int, int] = (256, 256), seed: int = 0, tile: int = 128) -> Path:
    """Write the contact sheet to ``out`` (PNG) and return its path; the same seed gives the same bytes."""
    volume = drr.load_chest_volume()
    images, captions = [], []
    for caption, settings in _KNOBS:
        images.append(_film(volume, settings, size, seed))
        captions.append(caption)
    rng = np.random.default_rng(seed)
    for caption, insert in (
        ("consolidation", findings.insert_consolidation),
        ("atelectasis", findings.insert_atelectasis),
        ("edema", findings.insert_edema),
        ("cardiomegaly", drr.enlarge_heart),
        ("effusion", drr.insert_effusion),
        ("nodule", drr.insert_nodule),
    ):
        vol, _ = insert(volume, rng)
        # centred on the CT without findings: they relabel lung, which moves the default centre
        geometry = drr.Geometry(size=size, spacing=chest._spacing(size)).resolved(volume)
        film = drr.simulate(vol, rng, geometry, drr.Pose(), drr.Exposure(), bone_scale=chest._BONE_SCALE)
        images.append(film.image)
        captions.append(caption)
    for name in ("randomized", "other_acquisition"):
        for i in range(6):
            settings = chest._film_settings(STYLES[name], seed, "classification", i)
            images.append(_film(volume, replace(settings, dicom=False), size, seed + i))
            captions.append(f"{name[:10]} {settings.tone_curve}")
    tiles = [drr.to_uint8(image) for image in images]  # as an 8-bit film stores them
    sheet = contact_sheet(tiles, captions, columns=6, tile=tile, window=(0, 255))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.convert("L").save(out, optimize=True)  # gray films, gray captions: one channel is enough
    return Path(out)


if __name__ == "__main__":
    print(style_sheet(sys.argv[1] if len(sys.argv) > 1 else "simulator_styles.png"))
