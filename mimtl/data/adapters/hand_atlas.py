"""Digital Hand Atlas (USC IPILab) with the 37 landmarks of Payer et al. (MICCAI 2016, MedIA 2019).

Layout, as in the setup of Payer's MedicalDataAugmentationTool (``hand_xray_dataset/``)::

    images/3142.jpg ...                 (or .mha/.png/...; any sub-folder, file stem = image id)
    setup/all.csv                       one row per image, no header: id,x1,y1,...,x37,y37 (pixels)
    setup/cv/set1/train.txt, test.txt   optional 3-fold cross-validation: one id per line
    setup/cv/set2/..., setup/cv/set3/...

The radiographs carry no pixel size. Following Payer et al., the distance between two wrist
landmarks is taken to be 50 mm, which gives each image its own isotropic spacing
``50 / |p_a - p_b|`` mm/pixel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimtl.data.adapters._common import (
    check_fraction,
    empty_datalist,
    find_dir,
    listing,
    parse_float,
    read_csv_rows,
    require_dir,
    seeded_split,
)
from mimtl.data.validate import DataValidationError

__all__ = ["HAND_ATLAS_NUM_LANDMARKS", "HAND_WRIST_DISTANCE_MM", "hand_atlas_datalist"]

#: Landmarks per image in Payer et al.'s annotation.
HAND_ATLAS_NUM_LANDMARKS = 37
#: The physical distance assumed between the two wrist landmarks.
HAND_WRIST_DISTANCE_MM = 50.0

_LAYOUT = (
    "images/<id>.jpg and setup/all.csv (rows id,x1,y1,...,x37,y37, no header), "
    "optionally setup/cv/setN/{train,test}.txt"
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".mha", ".mhd", ".nii.gz", ".nii", ".tif", ".tiff", ".bmp")


def _stem(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in _IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _find_csv(root: Path) -> Path | None:
    folder = find_dir(root, lambda f: (f / "setup" / "all.csv").is_file() or (f / "all.csv").is_file(), depth=2)
    if folder is None:
        return None
    return folder / "setup" / "all.csv" if (folder / "setup" / "all.csv").is_file() else folder / "all.csv"


def _read_ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def hand_atlas_datalist(
    root: str | os.PathLike,
    cv_set: int | str | None = "auto",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    num_landmarks: int = HAND_ATLAS_NUM_LANDMARKS,
    wrist_indices: Sequence[int] = (0, 4),
    wrist_distance_mm: float = HAND_WRIST_DISTANCE_MM,
    image_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """A MONAI datalist of the Digital Hand Atlas landmarks, with a per-image spacing from the wrist.

    Splits: with ``cv_set`` = 1, 2 or 3, ``setup/cv/set{cv_set}/train.txt`` is training and
    ``test.txt`` is test (when there is no ``test.txt``, every other annotated image); ``"auto"``
    uses set 1 when those files exist and a seeded split otherwise; None always uses the seeded
    split (``test_fraction`` of the images as test). In both cases ``val_fraction`` of the
    training images become validation (seeded).

    Args:
        root: the folder holding ``setup/all.csv`` (or ``all.csv``) and the images.
        cv_set: the cross-validation fold, ``"auto"`` or None (see above).
        val_fraction: fraction of the training images moved to validation.
        test_fraction: fraction of the images used as test when no cross-validation fold is used.
        seed: seed of the seeded splits.
        num_landmarks: landmarks per row of ``all.csv``.
        wrist_indices: the 0-based indices of the two wrist landmarks whose distance is
            ``wrist_distance_mm``. The default ``(0, 4)`` are the first and fifth landmark. Note
            that Payer's published evaluation code (``hand_xray/main.py``,
            ``normalization_indizes=[1, 5]``) indexes from 0 as well, i.e. uses the second and
            sixth landmark: pass ``(1, 5)`` to reproduce its millimetre figures.
        wrist_distance_mm: the assumed wrist distance.
        image_dir: where the images are when not under the folder holding ``setup/`` (searched
            recursively; an image's file name without suffix is its id).

    Returns:
        ``{"training", "validation", "test": [{"image", "landmarks", "spacing", "spacing_source",
        "missing", "id"}], "skipped": [...], "incomplete": [...], "landmark_names": ["L1", ...]}``. ``landmarks`` are ``[x, y]``
        pixels; ``spacing`` is ``[s, s]`` mm/pixel, NaN when a wrist landmark is missing.
        Annotated ids without an image are listed under ``skipped``; images with NaN
        coordinates under ``incomplete``.

    Raises:
        DataValidationError: no ``all.csv``, a row with the wrong number of values, no images,
            or a requested cross-validation fold that is not there.
    """
    root = require_dir(root, "Digital Hand Atlas", _LAYOUT)
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    a, b = (int(i) for i in wrist_indices)
    if not (0 <= a < num_landmarks and 0 <= b < num_landmarks and a != b):
        raise ValueError(f"wrist_indices {tuple(wrist_indices)} must be two different indices below {num_landmarks}.")
    csv_path = _find_csv(root)
    if csv_path is None:
        raise DataValidationError(f"Digital Hand Atlas: no setup/all.csv under '{root}': expected {_LAYOUT}.")
    setup = csv_path.parent
    base = setup.parent if setup.name == "setup" else setup

    # all.csv has no header: read every line as data.
    header, rows = read_csv_rows(csv_path, "Digital Hand Atlas")
    rows = [header, *rows]
    for row in rows:
        while row and not row[-1].strip():  # a trailing comma
            row.pop()
    width = 1 + 2 * num_landmarks
    bad = [f"line {i}: {len(row)} values" for i, row in enumerate(rows, start=1) if len(row) != width]
    if bad:
        raise DataValidationError(
            f"Digital Hand Atlas: {csv_path} rows must be id,x1,y1,...,x{num_landmarks},y{num_landmarks} "
            f"({width} values, no header):" + listing(bad)
        )
    if image_dir is not None:
        base = require_dir(image_dir, "Digital Hand Atlas", _LAYOUT)
    images: dict[str, Path] = {}
    for path in sorted(base.rglob("*")):
        stem = _stem(path)
        if stem is not None and path.is_file() and setup not in path.parents:
            images.setdefault(stem, path)
    if not images:
        raise DataValidationError(
            f"Digital Hand Atlas: no images ({', '.join(_IMAGE_SUFFIXES)}) under '{base}'; expected {_LAYOUT}."
        )

    out = empty_datalist("hand_atlas", f"Digital Hand Atlas from {base}: {num_landmarks} landmarks of Payer et al.")
    items, incomplete = [], []
    for row in rows:
        image_id = row[0].strip()
        values = [parse_float(v) for v in row[1:width]]
        points = [[values[2 * i], values[2 * i + 1]] for i in range(num_landmarks)]
        missing = [i for i, (x, y) in enumerate(points) if not (math.isfinite(x) and math.isfinite(y))]
        for i in missing:
            points[i] = [float("nan"), float("nan")]
        if image_id not in images:
            out["skipped"].append(
                {"image": image_id, "reason": f"annotated in {csv_path.name} but no image file found under {base}"}
            )
            continue
        distance = math.dist(points[a], points[b]) if a not in missing and b not in missing else float("nan")
        size = wrist_distance_mm / distance if distance > 0 else float("nan")
        item = {
            "image": str(images[image_id]),
            "landmarks": points,
            "spacing": [size, size],
            "spacing_source": f"landmarks {a} and {b} taken as {wrist_distance_mm:g} mm apart",
            "missing": missing,
            "id": image_id,
        }
        items.append(item)
        if missing or not math.isfinite(size):
            reason = f"landmark(s) {missing} missing" + (
                "; no spacing (a wrist landmark is missing)" if not math.isfinite(size) else ""
            )
            incomplete.append({"image": item["image"], "missing": missing, "reason": reason})

    cv_dir = setup / "cv"
    use_cv = cv_set
    if cv_set == "auto":
        use_cv = 1 if (cv_dir / "set1" / "train.txt").is_file() else None
    if use_cv is not None:
        fold = cv_dir / f"set{int(use_cv)}"
        if not (fold / "train.txt").is_file():
            raise DataValidationError(f"Digital Hand Atlas: cv_set={cv_set!r} but there is no {fold / 'train.txt'}.")
        train_ids = set(_read_ids(fold / "train.txt"))
        test_ids = set(_read_ids(fold / "test.txt")) if (fold / "test.txt").is_file() else None
        training = [item for item in items if item["id"] in train_ids]
        test = [
            item for item in items if (item["id"] in test_ids if test_ids is not None else item["id"] not in train_ids)
        ]
        out["description"] += f"; cross-validation fold {fold}"
    else:
        parts = seeded_split(items, {"test": test_fraction}, seed=seed, group=lambda item: item["id"])
        training, test = parts["training"], parts["test"]
        out["description"] += f"; test = {test_fraction:g} of the images (seed {seed})"
    parts = seeded_split(training, {"validation": val_fraction}, seed=seed, group=lambda item: item["id"])
    out.update(training=parts["training"], validation=parts["validation"], test=test)
    out["incomplete"] = incomplete
    out["wrist_indices"] = [a, b]
    # the published annotations number the points only; landmark bundles read the names from here
    out["landmark_names"] = [f"L{i + 1}" for i in range(num_landmarks)]
    return out
