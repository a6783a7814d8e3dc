"""Shenzhen chest X-rays with the 6 landmarks of Zhu et al. (MICCAI 2021, "You Only Learn Once").

The chest landmark set of Zhu et al. ("You Only Learn Once: Universal Anatomical Landmark
Detection", MICCAI 2021), also used by Di Via et al. ("Is in-domain data beneficial in transfer
learning for landmarks detection in x-ray images?", ISBI 2024): normal (non-TB) frontal chest
X-rays of the Shenzhen set (NLM / Shenzhen No. 3 People's Hospital) with 6 landmarks each.

Layout, as the README of ``MIRACLE-Center/YOLO_Universal_Anatomical_Landmark_Detection``
(formerly ``ICT-MIRACLE-lab/...``) asks for it::

    chest/pngs/CHNCXR_0001_0.png ...     the Shenzhen PNGs (NLM release or the Kaggle copy)
    chest/labels/CHNCXR_0001_0.txt ...   unzipped from the repository's data/chest_labels.zip

A label file, as that repository's reader (``universal_landmark_detection/model/datasets/chest.py``,
``Chest.readLandmark``) parses it and its evaluation (``evaluation.py``, ``saveLabels``) writes it::

    6                 first line: the number of points
    0.3021 0.2417     then one line per point: x / width and y / height, whitespace-separated
    ...

i.e. the coordinates are *ratios* of the image size, not pixels: ``x_px = rx * width`` (column)
and ``y_px = ry * height`` (row), 0-based, which is how that code scales them to its 512 x 512
grid (``round(r * size)``). This adapter converts them with each image's own size, read from the
PNG header (nothing is decoded).

The published split (the repository's ``config.yaml`` and ``Chest.__init__``): the PNG names in
``pngs/`` sorted; only Shenzhen (``CHNCXR``) normal (``_0``) images;
:data:`SHENZHEN_LANDMARKS_EXCLUDED` left out; then the first 195 are training, the next 34
validation and the rest (50 of 279) test. Di Via et al.'s ISBI 2024 paper reports the same 279
images as 229 (195 + 34) training and 50 test; their later code
(``Malga-Vision/DiffusionXray-FewShot-LandmarkDetection``, ``downstream_task/landmarks_datasets.py``)
keeps the same exclusions and 195 / 34 / rest split and measures the chest errors in pixels.

The sources number the 6 points but do not name them, so they are called ``L1`` ... ``L6``
(:data:`SHENZHEN_LANDMARK_NAMES`) in file order. The PNGs carry no pixel size: ``spacing`` is
unknown (NaN) and landmark errors come out in pixels. Note that both papers measure the chest
errors in pixels of the images resized to 512 x 512, while this datalist keeps the pixels of the
original films (``image_size`` gives each film's ``[width, height]`` for rescaling).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from mimtl.data.adapters._common import check_fraction, empty_datalist, find_dir, name_list, require_dir, seeded_split
from mimtl.data.validate import DataValidationError

__all__ = [
    "SHENZHEN_LANDMARKS_EXCLUDED",
    "SHENZHEN_LANDMARKS_SPLIT",
    "SHENZHEN_LANDMARK_NAMES",
    "read_ratio_landmarks",
    "shenzhen_landmarks_datalist",
]

#: The 6 landmarks in file order; the sources do not name them.
SHENZHEN_LANDMARK_NAMES: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5", "L6")
#: Images the published setup leaves out (``exclude_list`` of the repository's ``config.yaml``).
SHENZHEN_LANDMARKS_EXCLUDED: tuple[str, ...] = (
    "CHNCXR_0059_0",
    "CHNCXR_0178_0",
    "CHNCXR_0228_0",
    "CHNCXR_0267_0",
    "CHNCXR_0295_0",
    "CHNCXR_0310_0",
    "CHNCXR_0285_0",
    "CHNCXR_0276_0",
    "CHNCXR_0303_0",
)
#: The published split by position in the sorted list: training, validation, and the rest test.
SHENZHEN_LANDMARKS_SPLIT: dict[str, int] = {"training": 195, "validation": 34}
#: Images in the published set after the exclusions (195 / 34 / 50).
_PUBLISHED_TOTAL = 279

_DATASET = "Shenzhen landmarks"
_LAYOUT = (
    "chest/pngs/CHNCXR_NNNN_L.png and chest/labels/CHNCXR_NNNN_L.txt (first line the number of points, "
    "then one 'x/width y/height' ratio pair per line; labels from data/chest_labels.zip of "
    "YOLO_Universal_Anatomical_Landmark_Detection)"
)
_NAME = re.compile(r"^CHNCXR_(\d{4})_([01])$")
_SPLITS = ("published", "seeded")


def read_ratio_landmarks(
    path: str | os.PathLike, num_landmarks: int = len(SHENZHEN_LANDMARK_NAMES)
) -> tuple[list[list[float]], list[int], str | None]:
    """The landmark ratios of a label file: a point count, then one ``rx ry`` line per point.

    Args:
        path: the label file.
        num_landmarks: how many points to return; points beyond it are ignored.

    Returns:
        ``(ratios, missing, problem)``: ``[[rx, ry], ...]`` (fractions of the width and height)
        with NaN where a point is absent (the file declares or holds fewer points), unreadable,
        or outside ``[0, 1]`` (not a ratio); the indices of those points; a description of what
        was wrong, None when every point was read. An unreadable file, or one whose first line
        is not the point count, gives all-NaN points.
    """
    nan = float("nan")
    every = list(range(num_landmarks))
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
        return [[nan, nan] for _ in every], every, f"{path}: {reason}"
    lines = [line for line in lines if line]
    try:
        declared = int(lines[0]) if lines else None
    except ValueError:
        declared = None
    if declared is None:
        first = repr(lines[0][:40]) if lines else "nothing"
        return [[nan, nan] for _ in every], every, f"{path}: the first line is {first}, not the number of points"
    points: list[list[float]] = []
    absent: list[int] = []  # beyond the declared count or the end of the file
    unreadable: list[int] = []  # a line that is not two numbers
    not_ratio: list[int] = []  # numbers outside [0, 1]: pixels, not ratios
    for i in every:
        x, y = nan, nan
        if i >= declared or i + 1 >= len(lines):
            absent.append(i)
        else:
            fields = re.split(r"[\s,;]+", lines[i + 1])
            try:
                x, y = float(fields[0]), float(fields[1])
            except (IndexError, ValueError):
                x, y = nan, nan
            if not (math.isfinite(x) and math.isfinite(y)):
                unreadable.append(i)
                x, y = nan, nan
            elif not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                not_ratio.append(i)
                x, y = nan, nan
        points.append([x, y])
    missing = sorted(absent + unreadable + not_ratio)
    if not missing:
        return points, missing, None
    parts = []
    if absent:
        parts.append(f"declares {declared} and holds {len(lines) - 1} point line(s), point(s) {absent} absent")
    if unreadable:
        parts.append(f"point(s) {unreadable} not two numbers")
    if not_ratio:
        parts.append(f"point(s) {not_ratio} outside [0, 1] (ratios of the image size expected)")
    return points, missing, f"{path}: {'; '.join(parts)}"


def _image_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """``(width, height)`` from the image header (no pixels decoded), or ``(None, reason)``."""
    try:
        with Image.open(path) as image:
            return (int(image.size[0]), int(image.size[1])), None
    except Exception as e:
        return None, f"cannot read the image header ({type(e).__name__}: {' '.join(str(e).split())[:200]})"


def _is_root(folder: Path) -> bool:
    return (folder / "pngs").is_dir() and (folder / "labels").is_dir()


def shenzhen_landmarks_datalist(
    root: str | os.PathLike,
    split: str = "published",
    val_fraction: float | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    num_training: int = SHENZHEN_LANDMARKS_SPLIT["training"],
    num_validation: int = SHENZHEN_LANDMARKS_SPLIT["validation"],
    normal_only: bool = True,
    exclude: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """A MONAI datalist of the Shenzhen chest landmarks of Zhu et al. (6 points per image, in pixels).

    Images enter in sorted file-name order, as the published code lists them: ``CHNCXR`` PNGs
    in ``pngs/`` that have a label file, normal ones only (``normal_only``), without the
    ``exclude`` ids. Everything else found (abnormal or excluded images, images without a label
    file, label files without an image, other file names, unreadable images) is listed under
    ``skipped`` with the reason, never dropped silently.

    Splits: ``split="published"`` takes the first ``num_training`` images (195) as training,
    the next ``num_validation`` (34) as validation and the rest (50 of the published 279) as
    test; with ``val_fraction`` set, the validation images are instead that fraction of the
    first ``num_training + num_validation``, chosen with ``seed``. ``split="seeded"`` makes a
    seeded split of all images: ``test_fraction`` of them test and ``val_fraction`` (default 0.1)
    of them validation.

    Landmarks are ``[x, y]`` pixels of the original film (x = column, y = row, 0-based), the
    label file's ratios times the width and height read from the PNG header. A point a label
    file lacks or that cannot be read is ``[NaN, NaN]`` and its index is listed in the item's
    ``missing``; such images are also listed under ``incomplete`` with the reason.

    Args:
        root: the folder holding ``pngs/`` and ``labels/`` (the repository's ``data/chest``), or a
            parent of it up to two levels up.
        split: ``"published"`` or ``"seeded"`` (see above).
        val_fraction: None: the published validation images (``split="published"``) or 0.1
            (``split="seeded"``); else the fraction held out for validation, seeded (of the first
            ``num_training + num_validation`` images, or of all images with ``split="seeded"``).
        test_fraction: ``split="seeded"`` only: the fraction of the images used as test.
        seed: seed of the seeded choices.
        num_training: ``split="published"``: the number of leading images used for training.
        num_validation: ``split="published"``: the number of images after those used for validation.
        normal_only: keep only normal (``_0``) images, as the published setup (``use_abnormal: False``).
        exclude: image ids (file names without ``.png``) to leave out; a comma-separated string
            is split. None: the published :data:`SHENZHEN_LANDMARKS_EXCLUDED`; empty: none.

    Returns:
        ``{"training", "validation", "test": [{"image", "landmarks", "spacing", "spacing_source",
        "landmark_names", "missing", "id", "image_size"}], "landmark_names": ["L1", ...],
        "spacing": [NaN, NaN], "skipped": [...], "incomplete": [...]}``. ``spacing`` is
        ``[NaN, NaN]``: the films carry no pixel size, so errors are reported in pixels.

    Raises:
        DataValidationError: no ``pngs/`` + ``labels/`` folders under ``root``, no
            ``CHNCXR_NNNN_L.png`` in ``pngs/``, no image with a label file, or fewer images than
            the published split needs.
        ValueError: an unknown ``split`` or a fraction or count out of range.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {', '.join(repr(s) for s in _SPLITS)}, not {split!r}.")
    if val_fraction is not None:
        val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    num_training, num_validation = int(num_training), int(num_validation)
    if num_training < 1 or num_validation < 0:
        raise ValueError(
            f"num_training must be positive and num_validation not negative, got {num_training} and {num_validation}."
        )
    excluded = list(SHENZHEN_LANDMARKS_EXCLUDED) if exclude is None else name_list(exclude)
    excluded_set = {name[:-4] if name.lower().endswith(".png") else name for name in excluded}

    root = require_dir(root, _DATASET, _LAYOUT)
    base = find_dir(root, _is_root, depth=2)
    if base is None:
        hint = ""
        if find_dir(root, lambda f: (f / "CXR_png").is_dir(), depth=2) is not None:
            hint = (
                " (this looks like the Shenzhen release itself: put its PNGs in pngs/ and the label files "
                "of chest_labels.zip in labels/, side by side)"
            )
        raise DataValidationError(f"{_DATASET}: no pngs/ and labels/ folders under '{root}'{hint}; expected {_LAYOUT}.")
    image_dir, label_dir = base / "pngs", base / "labels"
    pngs = sorted((p for p in image_dir.iterdir() if p.suffix.lower() == ".png" and p.is_file()), key=lambda p: p.name)
    if not any(_NAME.match(p.stem) for p in pngs):
        raise DataValidationError(f"{_DATASET}: no CHNCXR_NNNN_L.png in '{image_dir}'; expected {_LAYOUT}.")
    labels = {p.stem: p for p in label_dir.iterdir() if p.suffix.lower() == ".txt" and p.is_file()}

    out = empty_datalist("shenzhen_landmarks", f"Shenzhen chest landmarks (Zhu et al. 2021) from {base}")
    spacing = [float("nan"), float("nan")]
    landmark_names = list(SHENZHEN_LANDMARK_NAMES)
    items: list[dict[str, Any]] = []
    unreadable: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for png in pngs:
        match = _NAME.match(png.stem)
        if match is None:
            out["skipped"].append({"image": str(png), "reason": "name is not CHNCXR_NNNN_L.png"})
        elif png.stem in excluded_set:
            out["skipped"].append({"image": str(png), "reason": "excluded (published exclude_list, or exclude=...)"})
        elif normal_only and match.group(2) != "0":
            out["skipped"].append(
                {
                    "image": str(png),
                    "reason": "abnormal (TB) image; the published set is normal only (normal_only=False)",
                }
            )
        elif png.stem not in labels:
            out["skipped"].append({"image": str(png), "reason": f"no label file {label_dir / (png.stem + '.txt')}"})
        else:
            ratios, missing, problem = read_ratio_landmarks(labels[png.stem], len(landmark_names))
            size, bad_image = _image_size(png)
            if size is None:
                unreadable[str(png)] = f"{bad_image}"
            width, height = size or (float("nan"), float("nan"))
            points = [
                [float("nan"), float("nan")] if i in missing else [rx * width, ry * height]
                for i, (rx, ry) in enumerate(ratios)
            ]
            items.append(
                {
                    "image": str(png),
                    "landmarks": points,
                    "spacing": list(spacing),
                    "spacing_source": "unknown: the Shenzhen PNGs and the label files record no pixel size (pixels)",
                    "landmark_names": landmark_names,
                    "missing": missing,
                    "id": png.stem,
                    "image_size": [width, height],
                }
            )
            if problem:
                reasons[str(png)] = problem
    images = {p.stem for p in pngs}
    for stem in sorted(set(labels) - images):
        out["skipped"].append({"image": str(labels[stem]), "reason": f"label file without an image in {image_dir}"})
    if not items:
        raise DataValidationError(
            f"{_DATASET}: no usable image with a label file under '{base}' ({len(out['skipped'])} skipped); "
            f"expected {_LAYOUT}."
        )

    if split == "published":
        if len(items) <= num_training + num_validation:
            raise DataValidationError(
                f"{_DATASET}: {len(items)} usable images under '{base}', but the published split takes the first "
                f"{num_training} for training and the next {num_validation} for validation, leaving none for test "
                f"(the published set has {_PUBLISHED_TOTAL}); use split='seeded' or smaller num_training/num_validation."
            )
        published = (num_training, num_validation) == tuple(SHENZHEN_LANDMARKS_SPLIT.values())
        if published and len(items) != _PUBLISHED_TOTAL:
            warnings.warn(
                f"{_DATASET}: {len(items)} usable images under '{base}', not the published {_PUBLISHED_TOTAL}; "
                f"the positional split (195 / 34 / rest) then differs from the published one.",
                stacklevel=2,
            )
        head = num_training + num_validation
        training, validation, test = items[:num_training], items[num_training:head], items[head:]
        out["description"] += f"; published split by sorted position: {num_training} / {num_validation} / rest"
        if val_fraction is not None:
            parts = seeded_split(items[:head], {"validation": val_fraction}, seed=seed, group=lambda i: i["id"])
            training, validation = parts["training"], parts["validation"]
            out["description"] += f", validation re-drawn as {val_fraction:g} of training + validation (seed {seed})"
    else:
        fraction = 0.1 if val_fraction is None else val_fraction
        parts = seeded_split(items, {"test": test_fraction, "validation": fraction}, seed=seed, group=lambda i: i["id"])
        training, validation, test = parts["training"], parts["validation"], parts["test"]
        out["description"] += f"; seeded split (seed {seed}): test {test_fraction:g}, validation {fraction:g}"

    # an image whose header cannot be read keeps its place (the others' split stays the published
    # one) but is not listed for training or testing: it could not be loaded
    def usable(part: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [item for item in part if item["image"] not in unreadable]

    out.update(training=usable(training), validation=usable(validation), test=usable(test))
    out["skipped"].extend({"image": image, "reason": reason} for image, reason in unreadable.items())
    out["incomplete"] = [
        {"image": item["image"], "missing": item["missing"], "reason": reasons[item["image"]]}
        for item in items
        if item["missing"] and item["image"] not in unreadable
    ]
    out["landmark_names"] = landmark_names
    out["spacing"] = spacing
    return out
