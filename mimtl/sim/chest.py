"""Demo chest radiograph data sets, simulated from one real chest CT (see docs/demo_data.md).

Three builders, each writing the on-disk layout of a public data set so that code written for
the real one runs on the demo unchanged, plus a MONAI datalist (``datalist.json``: "training",
"validation", "test"; paths relative to the JSON's folder) and a ``contact_sheet.png``:

* :func:`build_classification`: CheXpert-v1.0-small (multi-label findings: nodule -> "Lung
  Lesion", pleural effusion, cardiomegaly, or "No Finding").
* :func:`build_landmarks`: ISBI 2015 cephalometric layout with chest landmarks and two
  simulated annotators.
* :func:`build_segmentation`: Shenzhen "CXR_png" + "mask" layout with binary lung masks, SCR-style
  per-structure masks (left lung, right lung, heart) and a multi-class label map.

Every film is drawn from its own generator, seeded by ``(seed, task, index)``, so sample ``i``
is the same whatever ``n`` is (only which split it falls in depends on ``n``), and the same
seed gives the same bytes. A data set is built in a hidden folder next to ``out_dir`` and
renamed into place when complete.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mimtl.data.adapters.chexpert import CHEXPERT_OBSERVATIONS
from mimtl.sim import drr, findings
from mimtl.sim.sheet import contact_sheet
from mimtl.sim.style import FilmSettings, FilmStyle, get_style, process, save_film, settings_record

__all__ = [
    "CHEXPERT_CLASSES",
    "CHEXPERT_COLUMNS",
    "CLASSES",
    "DEFAULT_PREVALENCE",
    "EXTRA_PREVALENCE",
    "LANDMARKS",
    "SEGMENTATION_LABELS",
    "build_classification",
    "build_landmarks",
    "build_segmentation",
    "chest_landmarks",
    "split_sizes",
]

#: The header of CheXpert's train.csv / valid.csv, in its order.
CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS)
#: The classes of the classification demo, in CheXpert's column order (the datalist's "label" order).
CLASSES = ("No Finding", "Cardiomegaly", "Lung Lesion", "Pleural Effusion")
#: Default probability of each finding per film (independent, so findings co-occur).
DEFAULT_PREVALENCE = {"Cardiomegaly": 0.25, "Lung Lesion": 0.3, "Pleural Effusion": 0.25}
#: The five findings of the CheXpert competition (Morra et al.'s released models), in their
#: order, after "No Finding": pass ``classes=CHEXPERT_CLASSES`` to :func:`build_classification`.
CHEXPERT_CLASSES = ("No Finding", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
#: Default prevalence of the findings that :data:`DEFAULT_PREVALENCE` leaves out.
EXTRA_PREVALENCE = {"Atelectasis": 0.2, "Consolidation": 0.2, "Edema": 0.15}
#: Landmark names of the landmark demo, in file-line order.
LANDMARKS = (
    "right_lung_apex",
    "left_lung_apex",
    "carina",
    "aortic_knob",
    "right_costophrenic_angle",
    "left_costophrenic_angle",
    "cardiac_apex",
    "right_hemidiaphragm_dome",
    "T1_body",
    "T8_body",
    "T12_body",
)
#: Values of the segmentation demo's multi-class label maps.
SEGMENTATION_LABELS = {0: "background", 1: "left lung", 2: "right lung", 3: "heart"}

_TASK_CODE = {"classification": 1, "landmarks": 2, "segmentation": 3}
_BONE_SCALE = 1.5  # bone a little denser than linear in HU, as at ~100 kVp: ribs show as on real films
_SIZE = (256, 256)
_FIELD_MM = 320.0  # field of view in the patient (at the isocentre): 1.25 mm pixels at 256 x 256


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------
def split_sizes(n: int, fractions: tuple[float, float] = (0.15, 0.15)) -> tuple[int, int, int]:
    """``(training, validation, test)`` sizes: 70/15/15 by default, validation and test at
    least one sample each once ``n >= 3``. Samples are assigned in index order."""
    if n < 3:
        return n, 0, 0
    n_val = max(1, round(fractions[0] * n))
    n_test = max(1, round(fractions[1] * n))
    return n - n_val - n_test, n_val, n_test


def _split_of(i: int, sizes: tuple[int, int, int]) -> str:
    return "training" if i < sizes[0] else "validation" if i < sizes[0] + sizes[1] else "test"


def _generators(seed: int, task: str, index: int, k: int = 4) -> list[np.random.Generator]:
    """Independent generators for one sample (metadata, findings, pose/exposure, noise...)."""
    ss = np.random.SeedSequence([int(seed), _TASK_CODE[task], int(index)])
    return [np.random.default_rng(s) for s in ss.spawn(k)]


def _film_settings(film_style: FilmStyle, seed: int, task: str, index: int) -> FilmSettings | None:
    """One film's style settings from a fifth generator of the sample (the first four, and so
    every default film, are untouched); ``None`` for the default style."""
    if film_style.is_default:
        return None
    ss = np.random.SeedSequence([int(seed), _TASK_CODE[task], int(index)])
    return film_style.sample(np.random.default_rng(ss.spawn(5)[4]))


def _styled_pose(pose: drr.Pose, settings: FilmSettings | None) -> drr.Pose:
    """The pose with the style's tilt and roll added and its body size applied."""
    if settings is None:
        return pose
    rx, ry, rz = pose.rotation
    return replace(
        pose, rotation=(rx + settings.tilt_deg, ry + settings.roll_deg, rz), scale=pose.scale * settings.body_scale
    )


def _styled_exposure(exposure: drr.Exposure, settings: FilmSettings | None) -> drr.Exposure:
    """The exposure with the style's dose and (portable, no grid) scatter."""
    if settings is None:
        return exposure
    if settings.photons is not None:
        exposure = replace(exposure, photons=settings.photons)
    if settings.scatter is not None:
        exposure = replace(exposure, scatter=settings.scatter)
    return exposure


def _styled_geometry(geometry: drr.Geometry, settings: FilmSettings | None) -> drr.Geometry:
    """Parallel-beam films become AP portable cone-beam films (1 m, detector behind the
    patient) when the style says so; the spacing at the isocentre is kept."""
    if settings is None or not settings.portable or geometry.beam == "cone":
        return geometry
    cone = replace(
        geometry,
        beam="cone",
        view="AP",
        source_to_detector=1000.0,
        isocenter_to_detector=settings.isocenter_to_detector,
    )
    return replace(cone, spacing=round(geometry.spacing * cone.magnification, 4))


def _lung_corners(volume: drr.ChestVolume, geometry: drr.Geometry, pose: drr.Pose) -> np.ndarray:
    """Pixel ``(x, y)`` of the 8 corners of the lungs' bounding box (what collimation must keep)."""
    lo, hi = volume.bounds(drr.LUNG_LABELS["left"] + drr.LUNG_LABELS["right"])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    return drr.project_points(volume, corners, geometry, pose)


@contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """Build into a hidden folder beside ``out_dir``; on success replace ``out_dir`` with it.

    An interrupted build leaves only the hidden ``.NAME.*.partial`` folder (removed on an
    exception), never a half data set under ``out_dir``. An existing ``out_dir`` is replaced only
    if it is empty or a previous build (holds a ``datalist.json``).
    """
    out_dir = Path(out_dir)
    earlier_build = out_dir.is_dir() and (not any(out_dir.iterdir()) or (out_dir / "datalist.json").is_file())
    if out_dir.exists() and not earlier_build:
        raise FileExistsError(f"'{out_dir}' exists and is not an earlier demo build; refusing to replace it.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, old / "data")
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _progress(n: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=n, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


def _save_gray(path: Path, image: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, **kwargs)


def _write_datalist(root: Path, items: Sequence[dict], splits: Sequence[str], **header) -> Path:
    content = dict(header)
    for key in ("training", "validation", "test"):
        content[key] = [item for item, split in zip(items, splits) if split == key]
    path = root / "datalist.json"
    path.write_text(json.dumps(content, indent=1) + "\n")
    return path


def _round(values, ndigits: int = 3):
    """Nested floats rounded, as plain Python numbers (stable JSON)."""
    if isinstance(values, (list, tuple, np.ndarray)):
        return [_round(v, ndigits) for v in values]
    if isinstance(values, dict):
        return {k: _round(v, ndigits) for k, v in values.items()}
    if isinstance(values, (float, np.floating)):
        return round(float(values), ndigits)
    if isinstance(values, np.integer):
        return int(values)
    return values


def _spacing(size: tuple[int, int]) -> float:
    """Pixel spacing (mm, in the patient) that makes ``size`` cover the :data:`_FIELD_MM` field."""
    return _FIELD_MM / max(size)


def _parallel_geometry(volume: drr.ChestVolume, spacing: float, size: tuple[int, int]) -> drr.Geometry:
    return drr.Geometry(size=size, spacing=spacing).resolved(volume)


# ----------------------------------------------------------------------------------------------
# Landmarks in 3D
# ----------------------------------------------------------------------------------------------
_ABDOMEN = (5, 1, 6, 2, 3, 7, 18, 19, 20)  # liver, spleen, stomach, kidneys, pancreas, bowel


def _carina(volume: drr.ChestVolume, trachea: int, min_voxels: int = 5) -> np.ndarray:
    """Mean centroid of the two bronchi in the highest axial slice where the airway is split in two."""
    from scipy import ndimage

    mask = volume.mask(trachea).numpy()
    seen_single = False
    for k in range(mask.shape[0] - 1, -1, -1):  # from the head down
        parts, _ = ndimage.label(mask[k])
        sizes = np.bincount(parts.ravel())[1:]
        big = np.flatnonzero(sizes >= min_voxels) + 1
        if len(big) == 1:
            seen_single = True
        elif len(big) >= 2 and seen_single:
            two = big[np.argsort(sizes[big - 1])[-2:]]
            centres = [np.argwhere(parts == b).mean(0) for b in two]  # (j, i) in the slice
            j, i = np.mean(centres, axis=0)
            return volume.voxel_to_world(np.array([[i, j, k]]))[0]
    p = volume.voxels(trachea)  # never splits: its lowest point
    return p[p[:, 2] <= p[:, 2].min() + 4].mean(0)


def chest_landmarks(volume: drr.ChestVolume | None = None) -> dict[str, np.ndarray]:
    """The :data:`LANDMARKS` in world RAS mm, computed from the label map.

    * lung apices: centroid of each lung's top 5 mm;
    * costophrenic angles: of the lung voxels seen clear of the upper abdomen on a frontal film
      (no liver, spleen, stomach, kidney or bowel along their antero-posterior line), those
      furthest out along (lateral + down), within 3 mm;
    * carina: where the trachea divides: the mean of the centroids of the two main bronchi in
      the highest axial slice in which the airway is two separate parts;
    * aortic knob: the left-most aorta voxels (within 3 mm) of the arch's top 20 mm;
    * cardiac apex: the heart voxels furthest out along (patient's left + down), within 3 mm;
    * right hemidiaphragm dome: centroid of the liver's top 4 mm;
    * T1 / T8 / T12 body: centroid of the front 45 % (in y) of the vertebra's voxels.
    """
    volume = volume or drr.load_chest_volume()
    names = volume.names
    right = drr.LUNG_LABELS["right"]
    left = drr.LUNG_LABELS["left"]

    def top(ids, mm):
        p = volume.voxels(ids)
        return p[p[:, 2] >= p[:, 2].max() - mm].mean(0)

    def furthest(p, direction, mm=3.0):
        d = np.asarray(direction, dtype=np.float64)
        score = p @ (d / np.linalg.norm(d))
        return p[score >= score.max() - mm].mean(0)

    def body(ids):
        p = volume.voxels(ids)
        return p[p[:, 1] >= np.percentile(p[:, 1], 55)].mean(0)

    abdomen = volume.mask(_ABDOMEN).any(1).numpy()  # (Z, X): columns that cross the upper abdomen

    def clear_of_abdomen(ids):
        kji = torch.nonzero(volume.mask(ids)).numpy()
        kji = kji[~abdomen[kji[:, 0], kji[:, 2]]]
        return volume.voxel_to_world(kji[:, ::-1])

    aorta = volume.voxels(names.get("aorta", 52))
    arch = aorta[aorta[:, 2] >= aorta[:, 2].max() - 20]
    points = {
        "right_lung_apex": top(right, 5),
        "left_lung_apex": top(left, 5),
        "carina": _carina(volume, names.get("trachea", 16)),
        "aortic_knob": furthest(arch, (-1, 0, 0)),
        "right_costophrenic_angle": furthest(clear_of_abdomen(right), (1, 0, -1)),
        "left_costophrenic_angle": furthest(clear_of_abdomen(left), (-1, 0, -1)),
        "cardiac_apex": furthest(volume.voxels(names.get("heart", 51)), (-1, 0, -1)),
        "right_hemidiaphragm_dome": top(names.get("liver", 5), 4),
        "T1_body": body(names.get("vertebrae_T1", 43)),
        "T8_body": body(names.get("vertebrae_T8", 36)),
        "T12_body": body(names.get("vertebrae_T12", 32)),
    }
    return {k: points[k] for k in LANDMARKS}


# ----------------------------------------------------------------------------------------------
# Classification: CheXpert-v1.0-small
# ----------------------------------------------------------------------------------------------
_TAGS = (("CM", "Cardiomegaly"), ("LL", "Lung Lesion"), ("AT", "Atelectasis"), ("CO", "Consolidation"), ("ED", "Edema"))


def _short(findings: Mapping[str, bool], view: str, effusion_side: str | None) -> str:
    tags = [t for t, c in _TAGS if findings.get(c)]
    if findings.get("Pleural Effusion"):
        tags.append(f"EF{'(' + effusion_side[0].upper() + ')' if effusion_side else ''}")
    return f"{view} " + (" ".join(tags) if tags else "no finding")


#: Finding -> its 3D insertion, in the order they are inserted (each draws from the finding generator).
_INSERT = {
    "Cardiomegaly": drr.enlarge_heart,
    "Pleural Effusion": drr.insert_effusion,
    "Lung Lesion": drr.insert_nodule,
    "Atelectasis": findings.insert_atelectasis,
    "Consolidation": findings.insert_consolidation,
    "Edema": findings.insert_edema,
}


def build_classification(
    out_dir: str | Path,
    n: int = 400,
    seed: int = 0,
    progress: bool = True,
    prevalence: Mapping[str, float] | None = None,
    uncertain: float = 0.0,
    size: tuple[int, int] = _SIZE,
    style: str | FilmStyle = "default",
    classes: Sequence[str] = CLASSES,
) -> Path:
    """Frontal chest films with findings, in the CheXpert-v1.0-small layout.

    Writes ``CheXpert-v1.0-small/{train,valid,test}.csv`` (CheXpert's header,
    :data:`CHEXPERT_COLUMNS`; positives ``1.0``, negatives blank, as in CheXpert; ``test.csv``
    is an addition for the held-out split) and
    ``CheXpert-v1.0-small/{train,valid,test}/patientNNNNN/study1/view1_frontal.jpg`` (8-bit
    JPEG, ``size``, default 256x256; the field is 320 mm in the patient, so 1.25 mm pixels at
    the isocentre, recorded at the detector: 1.41 mm PA, 1.47 mm AP). Each film is a cone-beam
    projection (PA at 1.8 m, 70 %, or AP at 1 m) with a random pose and exposure; each finding is
    present independently with its ``prevalence`` (default :data:`DEFAULT_PREVALENCE`): a
    5-20 mm lung nodule ("Lung Lesion"), a pleural effusion, cardiomegaly; with
    ``classes=CHEXPERT_CLASSES`` also atelectasis, consolidation and edema
    (:mod:`mimtl.sim.findings`, default prevalence :data:`EXTRA_PREVALENCE`). "No Finding" is
    1.0 when none is present.

    A ``style`` other than ``"default"`` (:mod:`mimtl.sim.style`, docs/simulator.md) draws per
    film how it is acquired, processed and stored (AP portable films, children, tone curves, edge
    enhancement, collimation, markers, DICOM of 8-16 bits in MONOCHROME1 or 2: ``.dcm`` instead
    of ``.jpg``); each datalist item then records its settings under ``"style"``.

    Args:
        out_dir: the data set folder (replaced if it holds an earlier build).
        n: number of films (400 builds in under 2 minutes on 2 CPU cores).
        seed: the same seed gives the same bytes; film ``i`` does not depend on ``n``.
        progress: show a progress bar.
        prevalence: probability of each of "Cardiomegaly", "Lung Lesion", "Pleural Effusion".
        uncertain: probability that a positive finding is written as ``-1.0`` (CheXpert's
            "uncertain") in the CSV; the datalist keeps the true label.
        size: image ``(rows, columns)``.
        style: a preset name of :data:`mimtl.sim.style.STYLES` or a :class:`FilmStyle`.
        classes: "No Finding" then the findings to simulate, any of "Atelectasis",
            "Cardiomegaly", "Consolidation", "Edema", "Lung Lesion", "Pleural Effusion".

    Returns:
        The datalist path. Items: ``{"image", "label": [float per class in ``classes`` order],
        "view", "sex", "age", "spacing": [sx, sy] mm at the detector, "findings": [...],
        "uncertain": [class names written as -1.0]}``; the JSON's "labels" gives the class order.
    """
    classes = tuple(classes)
    if not classes or classes[0] != "No Finding" or set(classes[1:]) - set(_INSERT) or len(set(classes)) < len(classes):
        raise ValueError(f"classes must be 'No Finding' then distinct findings of {sorted(_INSERT)}, not {classes}.")
    defaults = {c: p for c, p in (DEFAULT_PREVALENCE | EXTRA_PREVALENCE).items() if c in classes}
    prevalence = dict(defaults if prevalence is None else prevalence)
    unknown = set(prevalence) - set(classes[1:])
    if unknown:
        raise ValueError(f"Unknown findings {sorted(unknown)}; choose from {list(classes[1:])}.")
    film_style = get_style(style)
    volume = drr.load_chest_volume()
    sizes = split_sizes(n)
    folder = {"training": "train", "validation": "valid", "test": "test"}
    csv_name = {"training": "train.csv", "validation": "valid.csv", "test": "test.csv"}
    items, splits, rows, sheet = [], [], {k: [] for k in folder}, ([], [], [])
    with _staged(Path(out_dir)) as root, _progress(n, "CheXpert demo", progress) as bar:
        base = root / "CheXpert-v1.0-small"
        for i in range(n):
            meta_rng, finding_rng, pose_rng, noise_rng = _generators(seed, "classification", i)
            split = _split_of(i, sizes)
            sex = "Female" if meta_rng.random() < 0.5 else "Male"
            age = int(meta_rng.integers(18, 91))
            view = "PA" if meta_rng.random() < 0.7 else "AP"
            present = {c: bool(meta_rng.random() < prevalence.get(c, 0.0)) for c in classes[1:]}
            unsure = [c for c in classes[1:] if present[c] and meta_rng.random() < uncertain]
            settings = _film_settings(film_style, seed, "classification", i)
            vol, inserted, side = volume, [], None
            for name, insert in _INSERT.items():
                if present.get(name):
                    vol, info = insert(vol, finding_rng)
                    side = info["side"] if name == "Pleural Effusion" else side
                    inserted.append(info)
            sdd, iso = (1800.0, 200.0) if view == "PA" else (1000.0, 150.0)
            if settings is not None and settings.portable:
                view, sdd, iso = "AP", 1000.0, settings.isocenter_to_detector
            geometry = drr.Geometry(
                size=size, beam="cone", view=view, source_to_detector=sdd, isocenter_to_detector=iso
            )
            # detector spacing = spacing in the patient x magnification: the same 320 mm field
            field = _spacing(size) * (settings.field_scale if settings is not None else 1.0)
            geometry = replace(geometry, spacing=round(field * geometry.magnification, 4)).resolved(volume)
            pose, exposure = drr.random_pose(pose_rng), drr.random_exposure(pose_rng)
            pose, exposure = _styled_pose(pose, settings), _styled_exposure(exposure, settings)
            film = drr.simulate(vol, noise_rng, geometry, pose, exposure, bone_scale=_BONE_SCALE)
            for info in inserted:
                if info["finding"] == "nodule":
                    info["center_px"] = drr.project_points(vol, np.array([info["center"]]), geometry, pose)[0].tolist()
            stem = f"{folder[split]}/patient{i + 1:05d}/study1/view1_frontal"
            if settings is None:
                image = drr.to_uint8(film.image)
                sub = f"{stem}.jpg"
                _save_gray(base / sub, image, quality=90)
            else:
                shown = process(film.image, settings, geometry.spacing, keep=_lung_corners(volume, geometry, pose))
                image = drr.to_uint8(shown)
                sub = save_film(
                    base,
                    stem,
                    shown,
                    settings,
                    ".jpg",
                    geometry.spacing / geometry.magnification,
                    geometry.spacing,
                    view,
                    quality=90,
                )
            path = f"CheXpert-v1.0-small/{sub}"
            labels = {"No Finding": not any(present.values()), **present}
            values = {c: ("-1.0" if c in unsure else "1.0") if labels.get(c) else "" for c in CHEXPERT_COLUMNS[5:]}
            rows[split].append([path, sex, age, "Frontal", view, *values.values()])
            items.append(
                {
                    "image": path,
                    "label": [float(labels[c]) for c in classes],
                    "view": view,
                    "sex": sex,
                    "age": age,
                    "spacing": [geometry.spacing, geometry.spacing],
                    "findings": _round(inserted),
                    "uncertain": unsure,
                }
                | ({} if settings is None else {"style": settings_record(settings)})
            )
            splits.append(split)
            if i < 24:
                nodules = [f["center_px"] for f in inserted if f["finding"] == "nodule"]
                sheet[0].append(image)
                sheet[1].append(_short(present, view, side))
                sheet[2].append(np.array(nodules) if nodules else None)
            bar.update()
        for split, name in csv_name.items():
            with (base / name).open("w", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(CHEXPERT_COLUMNS)
                writer.writerows(rows[split])
        contact_sheet(sheet[0], sheet[1], points=sheet[2], out=root / "contact_sheet.png")
        path = _write_datalist(
            root,
            items,
            splits,
            name="chest_classification_demo",
            description="Simulated frontal chest films (CheXpert-v1.0-small layout) from one real chest CT; "
            "see docs/demo_data.md.",
            layout="CheXpert-v1.0-small",
            seed=seed,
            n=n,
            labels=list(classes),
            prevalence=prevalence,
            image_size=list(size),
            **({} if film_style.is_default else {"style": film_style.name}),
        )
    return Path(out_dir) / path.name


# ----------------------------------------------------------------------------------------------
# Landmarks: ISBI 2015 cephalometric layout
# ----------------------------------------------------------------------------------------------
def build_landmarks(
    out_dir: str | Path,
    n: int = 400,
    seed: int = 0,
    progress: bool = True,
    size: tuple[int, int] = _SIZE,
    annotator_sd_mm: tuple[float, float] = (1.0, 1.6),
    style: str | FilmStyle = "default",
) -> Path:
    """Chest films with anatomical landmarks, in the ISBI 2015 cephalometric layout.

    Writes ``RawImage/{TrainingData,Test1Data,Test2Data}/NNN.bmp`` (8-bit grayscale BMP; the
    training / validation / test splits, numbered on across them as in ISBI 2015) and
    ``AnnotationsByMD/400_senior/NNN.txt`` and ``400_junior/NNN.txt``: one ``x,y`` line per
    landmark (:data:`LANDMARKS` order), integer pixel coordinates (0-based column, row). The
    two annotators click the true point (the 3D landmark projected with the film's geometry)
    with independent Gaussian errors of ``annotator_sd_mm`` (senior, junior), so the mean of
    the two is the usual ground truth. ``landmarks.json`` and ``pixel_spacing.csv`` give the
    landmark names and each image's pixel spacing (it varies, 1.15-1.35 mm at 256x256; parallel
    beam, so it is the spacing in the patient). Pose and spacing are drawn again (up to 50
    times) until every landmark lies on the film, at least 3 % of its size from the edges.

    ``style`` (a preset of :data:`mimtl.sim.style.STYLES` or a :class:`FilmStyle`) randomises
    acquisition, processing and storage per film as in :func:`build_classification`; an AP
    portable film is then a cone-beam projection and ``spacing`` stays the spacing in the
    patient (at the isocentre); collimation never hides a landmark.

    Returns:
        The datalist path. Items: ``{"image", "landmarks": [[x, y], ...] (px, mean of the two
        annotators), "spacing": [sx, sy] (mm), "landmarks_mm": [[x, y], ...],
        "landmarks_true": [[x, y], ...] (px, exact projection)}``.
    """
    film_style = get_style(style)
    volume = drr.load_chest_volume()
    points3d = np.stack(list(chest_landmarks(volume).values()))
    sizes = split_sizes(n)
    folder = {"training": "TrainingData", "validation": "Test1Data", "test": "Test2Data"}
    width = max(3, len(str(n)))
    items, splits, records, sheet = [], [], [], ([], [], [])
    with _staged(Path(out_dir)) as root, _progress(n, "landmark demo", progress) as bar:
        for i in range(n):
            meta_rng, click_rng, pose_rng, noise_rng = _generators(seed, "landmarks", i)
            split = _split_of(i, sizes)
            settings = _film_settings(film_style, seed, "landmarks", i)
            field = _spacing(size) * (settings.field_scale if settings is not None else 1.0)
            for _ in range(50):  # every landmark on the film, 3 % of its size from the edges
                spacing = round(float(meta_rng.uniform(0.92, 1.08)) * field, 3)
                geometry = _styled_geometry(_parallel_geometry(volume, spacing, size), settings)
                pose = _styled_pose(drr.random_pose(pose_rng), settings)
                truth = drr.project_points(volume, points3d, geometry, pose)
                margin = 0.03 * np.array(size[::-1])
                if ((truth >= margin) & (truth <= np.array(size[::-1]) - 1 - margin)).all():
                    break
            exposure = _styled_exposure(drr.random_exposure(pose_rng), settings)
            film = drr.simulate(volume, noise_rng, geometry, pose, exposure, points=points3d, bone_scale=_BONE_SCALE)
            truth = film.points
            clicks = []
            for sd in annotator_sd_mm:
                click = np.round(truth + click_rng.normal(0, sd / spacing, truth.shape)).astype(int)
                clicks.append(np.clip(click, 0, np.array(size[::-1]) - 1))
            name = f"{i + 1:0{width}d}"
            if settings is None:
                image = drr.to_uint8(film.image)
                rel = f"RawImage/{folder[split]}/{name}.bmp"
                _save_gray(root / rel, image)
            else:
                shown = process(film.image, settings, geometry.spacing, keep=truth)
                image = drr.to_uint8(shown)
                rel = save_film(
                    root,
                    f"RawImage/{folder[split]}/{name}",
                    shown,
                    settings,
                    ".bmp",
                    spacing,
                    geometry.spacing,
                    geometry.view,
                )
            for who, pts in zip(("400_senior", "400_junior"), clicks):
                txt = root / "AnnotationsByMD" / who / f"{name}.txt"
                txt.parent.mkdir(parents=True, exist_ok=True)
                txt.write_text("".join(f"{x},{y}\n" for x, y in pts))
            mean = (clicks[0] + clicks[1]) / 2
            items.append(
                {
                    "image": rel,
                    "landmarks": mean.tolist(),
                    "spacing": [spacing, spacing],
                    "landmarks_mm": _round(mean * spacing),
                    "landmarks_true": _round(truth),
                    "annotations": [f"AnnotationsByMD/400_senior/{name}.txt", f"AnnotationsByMD/400_junior/{name}.txt"],
                }
                | ({} if settings is None else {"style": settings_record(settings)})
            )
            splits.append(split)
            records.append({"image": rel, "split": split, "spacing": [spacing, spacing]})
            if i < 24:
                sheet[0].append(image)
                sheet[1].append(f"{name} {spacing:.2f}mm")
                sheet[2].append(mean)
            bar.update()
        (root / "landmarks.json").write_text(
            json.dumps(
                {
                    "landmarks": list(LANDMARKS),
                    "coordinates": "pixels, 0-based; x = column (towards the patient's left), y = row (towards the feet)",
                    "annotators": {"400_senior": annotator_sd_mm[0], "400_junior": annotator_sd_mm[1]},
                    "annotator_sd_mm_note": "standard deviation of each annotator's click error, mm",
                    "landmarks_3d_ras_mm": {k: _round(v) for k, v in zip(LANDMARKS, points3d)},
                    "images": records,
                },
                indent=1,
            )
            + "\n"
        )
        with (root / "pixel_spacing.csv").open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["image", "pixel_spacing_x_mm", "pixel_spacing_y_mm"])
            writer.writerows([r["image"], *r["spacing"]] for r in records)
        contact_sheet(sheet[0], sheet[1], points=sheet[2], out=root / "contact_sheet.png")
        path = _write_datalist(
            root,
            items,
            splits,
            name="chest_landmark_demo",
            description="Simulated frontal chest films with 11 anatomical landmarks (ISBI 2015 cephalometric "
            "layout) from one real chest CT; see docs/demo_data.md.",
            layout="ISBI 2015 cephalometric",
            seed=seed,
            n=n,
            landmark_names=list(LANDMARKS),
            image_size=list(size),
            **({} if film_style.is_default else {"style": film_style.name}),
        )
    return Path(out_dir) / path.name


# ----------------------------------------------------------------------------------------------
# Segmentation: Shenzhen CXR_png + masks, SCR per-structure masks
# ----------------------------------------------------------------------------------------------
#: Structures projected for the segmentation masks (label ids of the source map).
_SEG_STRUCTURES = {
    "left lung": drr.LUNG_LABELS["left"],
    "right lung": drr.LUNG_LABELS["right"],
    "heart": (51,),
    # SCR's lung fields leave out what the beam also crosses of the mediastinum and below the
    # diaphragm: aorta, trachea, oesophagus, spine, liver, spleen, stomach, kidneys, bowel
    "exclude": (52, 16, 15, *range(25, 51), 5, 1, 6, 2, 3, 7, 18, 19, 20),
}
_LUNG_MM, _HEART_MM, _EXCLUDE_MM = 5.0, 5.0, 15.0
_LABEL_SAMPLING = ((3.0, 3.0), 4.0)  # path lengths for masks on a 3 mm grid, 4 mm steps: half the time


def _largest(mask: np.ndarray) -> np.ndarray:
    """The largest connected part of a 2D mask, holes filled."""
    from scipy import ndimage

    parts, n = ndimage.label(mask)
    if n > 1:
        mask = parts == (np.argmax(np.bincount(parts.ravel())[1:]) + 1)
    return ndimage.binary_fill_holes(mask)


def _segmentation_map(lengths: Mapping[str, np.ndarray]) -> np.ndarray:
    """Multi-class map from path lengths: heart over lungs; lungs only where clear of the rest."""
    heart = _largest(lengths["heart"] >= _HEART_MM)
    clear = ~heart & (lengths["exclude"] < _EXCLUDE_MM)
    label = np.zeros(heart.shape, dtype=np.uint8)
    label[_largest(clear & (lengths["right lung"] >= _LUNG_MM))] = 2
    label[_largest(clear & (lengths["left lung"] >= _LUNG_MM))] = 1
    label[heart] = 3
    return label


def build_segmentation(
    out_dir: str | Path,
    n: int = 200,
    seed: int = 0,
    progress: bool = True,
    size: tuple[int, int] = _SIZE,
    style: str | FilmStyle = "default",
) -> Path:
    """Chest films with lung and heart masks, in the Shenzhen-with-masks and SCR layouts.

    Writes ``CXR_png/CHNCXR_NNNN_0.png`` (8-bit grayscale; ``_0`` = normal, as in Shenzhen),
    ``ClinicalReadings/CHNCXR_NNNN_0.txt`` (``male 35yrs`` / ``normal``, as in Shenzhen),
    ``mask/CHNCXR_NNNN_0_mask.png`` (binary lung mask, 0 / 255, both lungs, as in the
    Stirenko et al. Shenzhen mask set), SCR-style
    per-structure masks ``scr/masks/{left lung,right lung,heart}/CHNCXR_NNNN_0.gif`` (0 / 255;
    "left" is the patient's left, on the image's right) and multi-class label maps
    ``labels/CHNCXR_NNNN_0_label.png`` (:data:`SEGMENTATION_LABELS`: 0 background, 1 left lung,
    2 right lung, 3 heart). Masks follow SCR's definitions: a pixel is heart if its ray
    crosses >= 5 mm of heart; lung if it crosses >= 5 mm of that lung, is not heart, and
    crosses < 15 mm of mediastinum (aorta, airway, oesophagus, spine) and upper-abdominal
    organs together; each structure is then its largest connected part, holes filled.

    ``style`` randomises acquisition, processing and storage per film as in
    :func:`build_landmarks` (films may become ``.dcm``; masks stay PNG / GIF; collimation never
    cuts into the lungs or heart).

    Returns:
        The datalist path. Items: ``{"image", "label": multi-class map, "lung_mask": binary mask,
        "spacing": [sx, sy] (mm)}``; the JSON's "labels" maps values to names.
    """
    film_style = get_style(style)
    volume = drr.load_chest_volume()
    channels = drr.label_channels(volume, _SEG_STRUCTURES)
    sizes = split_sizes(n)
    width = max(4, len(str(n)))
    items, splits, sheet = [], [], ([], [], [])
    with _staged(Path(out_dir)) as root, _progress(n, "segmentation demo", progress) as bar:
        for i in range(n):
            meta_rng, _, pose_rng, noise_rng = _generators(seed, "segmentation", i)
            split = _split_of(i, sizes)
            settings = _film_settings(film_style, seed, "segmentation", i)
            field = _spacing(size) * (settings.field_scale if settings is not None else 1.0)
            geometry = _styled_geometry(_parallel_geometry(volume, field, size), settings)
            pose, exposure = drr.random_pose(pose_rng), drr.random_exposure(pose_rng)
            pose, exposure = _styled_pose(pose, settings), _styled_exposure(exposure, settings)
            film = drr.simulate(
                volume,
                noise_rng,
                geometry,
                pose,
                exposure,
                structures=_SEG_STRUCTURES,
                bone_scale=_BONE_SCALE,
                channels=channels,
                label_sampling=_LABEL_SAMPLING,
            )
            label = _segmentation_map(film.lengths)
            stem = f"CHNCXR_{i + 1:0{width}d}_0"
            if settings is None:
                image = drr.to_uint8(film.image)
                _save_gray(root / "CXR_png" / f"{stem}.png", image)
                rel = f"CXR_png/{stem}.png"
            else:
                yx = np.argwhere(label > 0)
                shown = process(film.image, settings, geometry.spacing, keep=yx[:, ::-1] if len(yx) else None)
                image = drr.to_uint8(shown)
                rel = save_film(
                    root, f"CXR_png/{stem}", shown, settings, ".png", field, geometry.spacing, geometry.view
                )
            _save_gray(root / "mask" / f"{stem}_mask.png", np.where((label == 1) | (label == 2), 255, 0))
            sex, age = ("male" if meta_rng.random() < 0.5 else "female"), int(meta_rng.integers(18, 80))
            reading = root / "ClinicalReadings" / f"{stem}.txt"
            reading.parent.mkdir(exist_ok=True)
            reading.write_text(f"{sex} {age}yrs\nnormal\n")
            for value, structure in ((1, "left lung"), (2, "right lung"), (3, "heart")):
                _save_gray(root / "scr" / "masks" / structure / f"{stem}.gif", np.where(label == value, 255, 0))
            _save_gray(root / "labels" / f"{stem}_label.png", label)
            items.append(
                {
                    "image": rel,
                    "label": f"labels/{stem}_label.png",
                    "lung_mask": f"mask/{stem}_mask.png",
                    "spacing": [geometry.spacing, geometry.spacing],
                }
                | ({} if settings is None else {"style": settings_record(settings)})
            )
            splits.append(split)
            if i < 24:
                sheet[0].append(image)
                sheet[1].append(stem)
                sheet[2].append(label)
            bar.update()
        contact_sheet(sheet[0], sheet[1], masks=sheet[2], out=root / "contact_sheet.png")
        path = _write_datalist(
            root,
            items,
            splits,
            name="chest_segmentation_demo",
            description="Simulated frontal chest films with left lung / right lung / heart masks (Shenzhen + "
            "SCR layouts) from one real chest CT; see docs/demo_data.md.",
            layout="Shenzhen CXR_png + mask (+ SCR-style scr/masks)",
            seed=seed,
            n=n,
            labels={str(k): v for k, v in SEGMENTATION_LABELS.items()},
            image_size=list(size),
            **({} if film_style.is_default else {"style": film_style.name}),
        )
    return Path(out_dir) / path.name
