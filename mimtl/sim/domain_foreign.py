"""Inputs that are clearly *not* frontal chest films, to test an out-of-domain guard with.

:func:`foreign_inputs` writes, deterministically, sets of image files a chest-film model should
refuse (:class:`~mimtl.handlers.DomainCheck`), each from what mimtl already depends on:

* ``natural photos``: scikit-image's bundled photographs (``skimage.data``), in gray;
* ``brain MRI``: axial, coronal and sagittal slices of the MNI152 T1 template (:mod:`mimtl.sim.sources`);
* ``lateral chest / abdomen``: lateral projections of the chest CT, and crops of frontal
  projections to the upper abdomen (:mod:`mimtl.sim.drr`);
* ``inverted films``, ``rotated 90°`` and ``DICOM with foreign tags`` (the film's pixels, but
  Modality / BodyPartExamined / ViewPosition saying MR, knee, lateral ...): made from the films
  given (a bundle's test films);
* ``blank``: constant images and smooth ramps; ``noise``: uniform, Gaussian, salt-and-pepper and
  smooth noise.

The sets that do not depend on the films are cached in ``<cache>/domain-foreign-v1`` (the CT
projections take ~20 s the first time).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["FOREIGN_SETS", "foreign_inputs"]

#: The sets, in report order.
FOREIGN_SETS = (
    "natural photos",
    "brain MRI",
    "lateral chest / abdomen",
    "inverted films",
    "rotated 90°",
    "blank",
    "noise",
    "DICOM with foreign tags",
)
_VERSION = "domain-foreign-v1"
_PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "moon",
    "page",
    "text",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "clock",
    "retina",
    "cell",
    "colorwheel",
    "microaneurysms",
)
_FOREIGN_TAGS = (
    {"Modality": "MR"},
    {"Modality": "CT"},
    {"BodyPartExamined": "KNEE"},
    {"BodyPartExamined": "ABDOMEN"},
    {"ViewPosition": "LL"},
    {"ViewPosition": "LATERAL"},
)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _save(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    a = np.asarray(image, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)
    if lo == hi:  # keep a constant image constant at its own level
        a = np.full(image.shape, min(max(lo, 0.0), 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(a * 255).astype(np.uint8)).save(path)
    return path


def _photos(out: Path) -> list[Path]:
    from skimage import color, data

    paths = []
    for name in _PHOTOS:
        image = getattr(data, name)()
        if image.ndim == 3:
            image = color.rgb2gray(image[..., :3])
        paths.append(_save(out / f"{name}.png", image))
    return paths


def _brain(out: Path) -> list[Path]:
    import nibabel as nib

    from mimtl.sim.sources import fetch

    volume = np.asarray(nib.load(fetch("mni_t1")).get_fdata(), dtype=np.float64)
    paths = []
    for axis, fractions in ((2, (0.35, 0.45, 0.55, 0.65)), (1, (0.4, 0.5, 0.6, 0.7)), (0, (0.3, 0.4, 0.5, 0.6))):
        for f in fractions:
            index = round(f * (volume.shape[axis] - 1))
            image = np.rot90(np.take(volume, index, axis=axis))
            paths.append(_save(out / f"mni_t1_axis{axis}_{index:03d}.png", image))
    return paths


def _ct(out: Path, n: int = 6) -> list[Path]:
    from mimtl.sim import drr
    from mimtl.sim.chest import _FIELD_MM

    volume = drr.load_chest_volume()
    geometry = drr.Geometry(size=(256, 256), spacing=_FIELD_MM / 256)
    rng = np.random.default_rng(20240)
    paths = []
    for i in range(n):  # lateral films: the patient turned 90 degrees about the head-feet axis
        pose = drr.random_pose(rng)
        pose.rotation = (pose.rotation[0], pose.rotation[1], 90.0 + pose.rotation[2])
        film = drr.simulate(volume, rng, geometry, pose=pose)
        paths.append(_save(out / f"lateral_{i}.png", film.image))
    for i in range(n):  # the upper abdomen alone: the lower 40 % of a frontal film, filling the field
        from PIL import Image

        film = drr.simulate(volume, rng, geometry)
        crop = film.image[int(0.6 * film.image.shape[0]) :, :]
        crop = np.asarray(
            Image.fromarray(crop.astype(np.float32), mode="F").resize((256, 256), Image.Resampling.BILINEAR)
        )
        paths.append(_save(out / f"abdomen_{i}.png", crop))
    return paths


def _blank(out: Path) -> list[Path]:
    ramp = np.linspace(0.0, 1.0, 256)
    yy, xx = np.mgrid[-1:1:256j, -1:1:256j]
    images = {
        "black": np.zeros((256, 256)),
        "white": np.ones((256, 256)),
        "gray": np.full((256, 256), 0.5),
        "ramp_rows": np.repeat(ramp[:, None], 256, axis=1),
        "ramp_columns": np.repeat(ramp[None, :], 256, axis=0),
        "disc": np.exp(-(xx**2 + yy**2) / 0.3),
    }
    return [_save(out / f"{k}.png", v) for k, v in images.items()]


def _noise(out: Path) -> list[Path]:
    from scipy import ndimage

    paths = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        paths.append(_save(out / f"uniform_{seed}.png", rng.uniform(size=(256, 256))))
        paths.append(_save(out / f"gaussian_{seed}.png", np.clip(rng.normal(0.5, 0.15, (256, 256)), 0, 1)))
        paths.append(_save(out / f"salt_pepper_{seed}.png", (rng.uniform(size=(256, 256)) < 0.5).astype(float)))
        paths.append(_save(out / f"smooth_{seed}.png", ndimage.gaussian_filter(rng.normal(size=(256, 256)), 6)))
    return paths


def _read_gray(path: Path) -> np.ndarray:
    from mimtl.io import load_image

    a = np.asarray(load_image(str(path)), dtype=np.float64)
    a = a.reshape(a.shape[-2:]) if a.ndim > 2 else a
    return a.T  # MONAI's [x, y] -> rows, columns as the film is viewed


def _write_dicom(path: Path, image: np.ndarray, tags: dict[str, str]) -> Path:
    from pydicom import uid
    from pydicom.dataset import FileDataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    digest = int(hashlib.sha256(path.name.encode()).hexdigest()[:12], 16)
    meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{digest}"
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    for k, v in tags.items():
        setattr(ds, k, v)
    a = np.asarray(image, dtype=np.float64)
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
    pixels = np.round(a * 4095).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _from_films(films: Sequence[Path], out: Path, n: int) -> dict[str, list[Path]]:
    chosen = sorted(Path(f) for f in films)[:n]
    sets: dict[str, list[Path]] = {"inverted films": [], "rotated 90°": [], "DICOM with foreign tags": []}
    for i, f in enumerate(chosen):
        film = _read_gray(f)
        sets["inverted films"].append(_save(out / "inverted" / f"{i:02d}_{f.stem}.png", film.max() - film))
        sets["rotated 90°"].append(_save(out / "rotated" / f"{i:02d}_{f.stem}.png", np.rot90(film)))
        if i < len(_FOREIGN_TAGS):
            tags = _FOREIGN_TAGS[i]
            name = f"{i:02d}_{f.stem}_{_slug('_'.join(tags.values()))}.dcm"
            sets["DICOM with foreign tags"].append(_write_dicom(out / "dicom" / name, film, tags))
    return sets


def foreign_inputs(films: Sequence[str | Path], out: str | Path, n_from_films: int = 10) -> dict[str, list[Path]]:
    """Write the foreign sets (see the module) under ``out``; return ``{set name: files}`` in :data:`FOREIGN_SETS` order.

    Args:
        films: in-distribution films (e.g. a bundle's test split); the first ``n_from_films`` of them,
            sorted, are inverted, rotated and re-tagged.
        out: the folder the film-derived sets are written to (the others come from the cache).
    """
    from mimtl.sim.sources import cache_dir

    out = Path(out)
    cached = cache_dir() / _VERSION
    builders = {
        "natural photos": _photos,
        "brain MRI": _brain,
        "lateral chest / abdomen": _ct,
        "blank": _blank,
        "noise": _noise,
    }
    sets: dict[str, list[Path]] = {}
    for name, build in builders.items():
        folder = cached / _slug(name)
        done = folder / ".complete"
        if not done.is_file():
            tmp = cached / f".{_slug(name)}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            build(tmp)
            (tmp / ".complete").write_text("ok\n")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        sets[name] = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    sets.update(_from_films([Path(f) for f in films], out, n_from_films))
    return {name: sets[name] for name in FOREIGN_SETS}
