"""ISBI 2015 cephalometric landmark challenge (Wang et al. 2016), and data in the same layout.

Layout as published (the challenge's ``RawImage.zip`` / ``AnnotationsByMD.zip``)::

    RawImage/TrainingData/001.bmp ... 150.bmp      (1935 x 2400 pixels, 0.1 mm/pixel)
    RawImage/Test1Data/151.bmp ... 300.bmp
    RawImage/Test2Data/301.bmp ... 400.bmp
    AnnotationsByMD/400_senior/001.txt ... 400.txt
    AnnotationsByMD/400_junior/001.txt ... 400.txt

An annotation file starts with one ``x,y`` line (pixels) per landmark, in the order of
:data:`ISBI2015_LANDMARKS`; further lines (the classification labels of the challenge's second
task) follow and are ignored.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimtl.data.adapters._common import empty_datalist, find_dir, require_dir
from mimtl.data.validate import DataValidationError

__all__ = ["ANNOTATORS", "ISBI2015_LANDMARKS", "ISBI2015_SUBSETS", "isbi2015_ceph_datalist", "read_landmark_txt"]

#: The 19 landmarks, in file order (Wang et al. 2016, Table 1).
ISBI2015_LANDMARKS: tuple[str, ...] = (
    "sella",
    "nasion",
    "orbitale",
    "porion",
    "subspinale (A point)",
    "supramentale (B point)",
    "pogonion",
    "menton",
    "gnathion",
    "gonion",
    "lower incisal incision",
    "upper incisal incision",
    "upper lip",
    "lower lip",
    "subnasale",
    "soft tissue pogonion",
    "posterior nasal spine",
    "anterior nasal spine",
    "articulare",
)
#: Image folder -> subset of the official split.
ISBI2015_SUBSETS: dict[str, str] = {"TrainingData": "training", "Test1Data": "test1", "Test2Data": "test2"}
#: Annotation folder of each annotator.
ANNOTATORS: dict[str, str] = {"senior": "400_senior", "junior": "400_junior"}

_LAYOUT = "RawImage/{TrainingData,Test1Data,Test2Data}/NNN.bmp and AnnotationsByMD/{400_senior,400_junior}/NNN.txt"
_IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_landmark_txt(path: str | os.PathLike, num_landmarks: int) -> tuple[list[list[float]], list[int], str | None]:
    """The first ``num_landmarks`` ``x,y`` lines of an annotation file.

    Returns:
        ``(landmarks, missing, problem)``: ``[[x, y], ...]`` with NaN where a line is absent or
        not ``x,y``; the indices of those landmarks; a description of what was wrong (None when
        all were read). A missing file gives all-NaN landmarks.
    """
    nan = float("nan")
    try:
        lines = Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as e:
        return [[nan, nan] for _ in range(num_landmarks)], list(range(num_landmarks)), f"{path}: {e.strerror or e}"
    points, missing = [], []
    for i in range(num_landmarks):
        fields = lines[i].replace(";", ",").split(",") if i < len(lines) else []
        try:
            x, y = (float(v) for v in fields[:2]) if len(fields) >= 2 else (nan, nan)
        except ValueError:
            x, y = nan, nan
        if not (math.isfinite(x) and math.isfinite(y)):
            x, y = nan, nan
            missing.append(i)
        points.append([x, y])
    problem = None
    if missing:
        short = len([line for line in lines[:num_landmarks] if line.strip()]) < num_landmarks
        what = f"only {len(lines)} line(s)" if short else "unreadable line(s)"
        problem = f"{path}: {what}, landmark(s) {missing} missing"
    return points, missing, problem


def _is_root(folder: Path) -> bool:
    return (folder / "RawImage").is_dir() and (folder / "AnnotationsByMD").is_dir()


def isbi2015_ceph_datalist(
    root: str | os.PathLike,
    annotator: str = "mean",
    num_validation: int = 0,
    seed: int = 0,
    num_landmarks: int = 19,
    spacing: Sequence[float] = (0.1, 0.1),
    landmark_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A MONAI datalist of the ISBI 2015 cephalometric data: TrainingData / Test1Data / Test2Data.

    ``training`` is ``TrainingData`` (150), ``test`` is ``Test1Data`` + ``Test2Data`` (250), also
    given separately as ``test1`` (150) and ``test2`` (100). ``num_validation=20`` gives the
    130/20/250 protocol: 20 training images, chosen with ``seed``, become ``validation``.

    Landmarks are in pixels, ``[x, y]`` with x along the image width (columns) and y down the
    rows, as written in the annotation files. A landmark that an annotation file lacks (short or
    missing file, unreadable line) is ``[NaN, NaN]`` and its index is listed in the item's
    ``missing``; such images are also listed under ``incomplete`` in the result. They are never
    dropped silently. With ``annotator="mean"`` a landmark is missing when either annotator
    lacks it (the mean of one is not the published ground truth).

    Args:
        root: the folder holding ``RawImage/`` and ``AnnotationsByMD/`` (or a parent of it).
        annotator: ``"mean"`` (mean of the two, the challenge's definition), ``"senior"`` or ``"junior"``.
        num_validation: number of ``TrainingData`` images moved to ``validation``.
        seed: seed of that choice.
        num_landmarks: landmarks per file, for data in this layout with another number of points.
        spacing: pixel size ``[x, y]`` in mm.
        landmark_names: names of the landmarks (default: :data:`ISBI2015_LANDMARKS` for 19,
            else ``L1``...``Ln``).

    Returns:
        ``{"training", "validation", "test", "test1", "test2": [{"image", "landmarks", "spacing",
        "landmark_names", "missing", "id", "subset"}], "landmark_names": [...], "incomplete": [...]}``.

    Raises:
        DataValidationError: no ``RawImage/`` + ``AnnotationsByMD/`` under ``root``, no image
            folders, or no annotation folder of the chosen annotator(s).
    """
    if annotator not in ("mean", *ANNOTATORS):
        raise ValueError(f"annotator must be 'mean', 'senior' or 'junior', not {annotator!r}.")
    if num_landmarks < 1:
        raise ValueError(f"num_landmarks must be positive, got {num_landmarks}.")
    if landmark_names is None:
        landmark_names = ISBI2015_LANDMARKS if num_landmarks == 19 else tuple(f"L{i + 1}" for i in range(num_landmarks))
    landmark_names = list(landmark_names)
    if len(landmark_names) != num_landmarks:
        raise ValueError(f"{len(landmark_names)} landmark_names for {num_landmarks} landmarks.")
    spacing = [float(s) for s in spacing]
    root = require_dir(root, "ISBI 2015 cephalometric", _LAYOUT)
    base = find_dir(root, _is_root, depth=2)
    if base is None:
        raise DataValidationError(
            f"ISBI 2015 cephalometric: no RawImage/ and AnnotationsByMD/ folders under '{root}': expected {_LAYOUT}."
        )
    chosen = list(ANNOTATORS) if annotator == "mean" else [annotator]
    for who in chosen:
        if not (base / "AnnotationsByMD" / ANNOTATORS[who]).is_dir():
            raise DataValidationError(
                f"ISBI 2015 cephalometric: no {base / 'AnnotationsByMD' / ANNOTATORS[who]} folder "
                f"(annotator={annotator!r} needs {' and '.join(ANNOTATORS[w] for w in chosen)}); expected {_LAYOUT}."
            )
    if not any((base / "RawImage" / folder).is_dir() for folder in ISBI2015_SUBSETS):
        raise DataValidationError(
            f"ISBI 2015 cephalometric: none of {', '.join(ISBI2015_SUBSETS)} in {base / 'RawImage'}; "
            f"expected {_LAYOUT}."
        )

    out = empty_datalist("isbi2015_ceph", f"ISBI 2015 cephalometric from {base}: official split, annotator {annotator}")
    subsets: dict[str, list[dict]] = {"training": [], "test1": [], "test2": []}
    incomplete = []
    for folder, subset in ISBI2015_SUBSETS.items():
        directory = base / "RawImage" / folder
        if not directory.is_dir():
            continue
        for image in sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES):
            reads = [
                read_landmark_txt(base / "AnnotationsByMD" / ANNOTATORS[w] / f"{image.stem}.txt", num_landmarks)
                for w in chosen
            ]
            missing = sorted(set().union(*(set(r[1]) for r in reads)))
            points = [
                [float("nan"), float("nan")]
                if i in missing
                else [sum(r[0][i][k] for r in reads) / len(reads) for k in (0, 1)]
                for i in range(num_landmarks)
            ]
            item = {
                "image": str(image),
                "landmarks": points,
                "spacing": spacing,
                "landmark_names": landmark_names,
                "missing": missing,
                "id": image.stem,
                "subset": folder,
            }
            subsets[subset].append(item)
            if missing:
                problems = [r[2] for r in reads if r[2]]
                incomplete.append({"image": str(image), "missing": missing, "reason": "; ".join(problems)})
    if num_validation:
        if not 0 < num_validation < len(subsets["training"]):
            raise ValueError(
                f"num_validation={num_validation} must be below the {len(subsets['training'])} training images."
            )
        order = sorted(range(len(subsets["training"])), key=lambda i: subsets["training"][i]["id"])
        random.Random(f"{seed}:isbi2015").shuffle(order)
        held = set(order[:num_validation])
        out["validation"] = [item for i, item in enumerate(subsets["training"]) if i in held]
        subsets["training"] = [item for i, item in enumerate(subsets["training"]) if i not in held]
        out["description"] += f"; {num_validation} training images as validation (seed {seed})"
    out["training"] = subsets["training"]
    out["test"] = subsets["test1"] + subsets["test2"]
    out["test1"], out["test2"] = subsets["test1"], subsets["test2"]
    out["landmark_names"] = landmark_names
    out["spacing"] = spacing
    out["incomplete"] = incomplete
    return out
