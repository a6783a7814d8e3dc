"""NIH ChestX-ray14 (NIH Clinical Center): ``Data_Entry_2017(_v2020).csv`` and the official lists.

Layout as published (NIH Box, and the Kaggle copy that keeps one sub-folder per archive)::

    Data_Entry_2017_v2020.csv        (or the original Data_Entry_2017.csv)
    train_val_list.txt  test_list.txt
    images/00000001_000.png ...                    (the 12 images_NNN.tar.gz unpacked), or
    images_001/images/00000001_000.png ... images_012/images/...

The CSV header is ``Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient
Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]``: the two
bracketed names contain a comma, so each spans two columns (``OriginalImage[Width`` /
``Height]``, ``OriginalImagePixelSpacing[x`` / ``y]``), and the 2017 file ends every line with an
extra comma. ``Finding Labels`` is ``|``-separated, ``No Finding`` for none.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimtl.data.adapters._common import (
    check_fraction,
    empty_datalist,
    find_file,
    image_index,
    listing,
    name_list,
    parse_float,
    read_csv_rows,
    report_missing,
    require_columns,
    require_dir,
    seeded_split,
)
from mimtl.data.validate import DataValidationError

__all__ = ["NIH_CSV_NAMES", "NIH_LABELS", "nih_chestxray14_datalist"]

#: The 14 findings, in the order of Wang et al. 2017 (the multi-hot vector's order).
NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
#: Label file names, in order of preference (the 2020 revision corrected ages and labels).
NIH_CSV_NAMES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")

_NO_FINDING = "No Finding"
_LAYOUT = (
    "Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv), train_val_list.txt and test_list.txt, "
    "and the PNGs in images/ or images_001/images/ ... images_012/images/"
)
_REQUIRED = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "View Position")
_SPLIT_COLUMNS = ("OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]")


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def _image_folders(root: Path) -> list[Path]:
    folders = []
    for base in [root, *(p for p in sorted(root.glob("images_*")) if p.is_dir())]:
        for candidate in (base / "images", base):
            if candidate.is_dir() and candidate != root:
                folders.append(candidate)
    return folders


def _age(text: str) -> int | None:
    match = re.match(r"^\s*0*(\d+)\s*[YyMmDdWw]?\s*$", text)  # 58, or the 2017 file's '058Y'
    return int(match.group(1)) if match else None


def nih_chestxray14_datalist(
    root: str | os.PathLike,
    labels: Sequence[str] = NIH_LABELS,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
    on_missing: str = "error",
) -> dict[str, Any]:
    """A MONAI datalist of ChestX-ray14: official test list as test, patient-level validation from train_val.

    Args:
        root: the folder holding ``Data_Entry_2017*.csv`` (or a parent of it).
        labels: the findings of the multi-hot ``label`` vector, in this order (default: all 14).
        val_fraction: fraction of the ``train_val_list.txt`` *patients* that become validation
            (seeded; no patient in two splits).
        seed: seed of that split.
        check_files: look up every image (the image folders are indexed once).
        on_missing: ``"error"`` raises one error listing every missing image; ``"skip"`` lists
            them under ``"skipped"``.

    Returns:
        ``{"training", "validation", "test": [{"image", "label", "findings", "patient_id",
        "follow_up", "age", "sex", "view", "spacing", "original_size"}], "labels": [...], ...}``.
        ``spacing`` is ``OriginalImagePixelSpacing[x, y]`` (mm) of the *original* image; the
        PNGs were resized to 1024x1024, so the PNG's spacing is that times original size / 1024.

    Raises:
        DataValidationError: no label CSV or split lists under ``root``, a CSV without the
            published columns, an unknown finding, an image in no list, or missing images.
    """
    root = require_dir(root, "ChestX-ray14", _LAYOUT)
    labels = name_list(labels)
    bad = [name for name in labels if name not in NIH_LABELS]
    if bad or not labels:
        raise ValueError(f"labels {bad or labels} are not ChestX-ray14 findings; choose from {NIH_LABELS}.")
    val_fraction = check_fraction("val_fraction", val_fraction)
    csv_path = find_file(root, NIH_CSV_NAMES, depth=2)
    if csv_path is None:
        raise DataValidationError(
            f"ChestX-ray14: no {' or '.join(NIH_CSV_NAMES)} under '{root}': expected the NIH layout {_LAYOUT}."
        )
    base = csv_path.parent
    lists = {}
    for name in ("train_val_list.txt", "test_list.txt"):
        found = find_file(base, [name], depth=1) or find_file(root, [name], depth=2)
        if found is None:
            raise DataValidationError(
                f"ChestX-ray14: no {name} beside '{csv_path}' (or under '{root}'): the official split needs "
                f"train_val_list.txt and test_list.txt, one image file name per line."
            )
        lists[name] = set(_read_list(found))

    header, rows = read_csv_rows(csv_path, "ChestX-ray14")
    sex_column = "Patient Gender" if "Patient Gender" in header else "Patient Sex"
    cols = require_columns(header, (*_REQUIRED, sex_column, *_SPLIT_COLUMNS), csv_path, "ChestX-ray14")
    wanted = {name: i for i, name in enumerate(labels)}

    items, unknown, unlisted = [], [], []
    for line, row in enumerate(rows, start=2):
        row = [cell.strip() for cell in row]
        if len(row) < cols["y]"] + 1:
            raise DataValidationError(
                f"ChestX-ray14: {csv_path.name} line {line} has {len(row)} fields, expected {cols['y]'] + 1}."
            )
        name = row[cols["Image Index"]]
        findings = [f.strip() for f in row[cols["Finding Labels"]].split("|") if f.strip()]
        for finding in findings:
            if finding != _NO_FINDING and finding not in NIH_LABELS:
                unknown.append(f"line {line} ({name}): {finding!r}")
        label = [0.0] * len(labels)
        for finding in findings:
            if finding in wanted:
                label[wanted[finding]] = 1.0
        split = (
            "test" if name in lists["test_list.txt"] else "train_val" if name in lists["train_val_list.txt"] else None
        )
        if split is None:
            unlisted.append(name)
        items.append(
            {
                "image": name,
                "label": label,
                "findings": [f for f in findings if f != _NO_FINDING],
                "patient_id": row[cols["Patient ID"]],
                "follow_up": int(row[cols["Follow-up #"]]) if row[cols["Follow-up #"]].isdigit() else None,
                "age": _age(row[cols["Patient Age"]]),
                "sex": row[cols[sex_column]],
                "view": row[cols["View Position"]],
                "spacing": [parse_float(row[cols["OriginalImagePixelSpacing[x"]]), parse_float(row[cols["y]"]])],
                "original_size": [
                    int(parse_float(row[cols["OriginalImage[Width"]])),
                    int(parse_float(row[cols["Height]"]])),
                ],
                "_split": split,
            }
        )
    if unknown:
        raise DataValidationError(
            f"ChestX-ray14: {csv_path.name} has finding(s) outside the 14 classes and 'No Finding':" + listing(unknown)
        )
    if unlisted:
        raise DataValidationError(
            f"ChestX-ray14: {len(unlisted)} image(s) of {csv_path.name} are in neither train_val_list.txt nor "
            f"test_list.txt:" + listing(unlisted)
        )

    out = empty_datalist("ChestX-ray14", f"NIH ChestX-ray14 from {base}: official test_list.txt as test")
    folders = _image_folders(root) or _image_folders(base)
    if check_files:
        index = image_index(folders, (".png",))
        if not index:
            raise DataValidationError(
                f"ChestX-ray14: no PNG images under '{root}': expected images/ or images_001/images/ ... "
                f"images_012/images/ (the unpacked images_NNN.tar.gz archives)."
            )
        missing = []
        for item in items:
            path = index.get(item["image"])
            if path is None:
                missing.append((item["image"], f"not found in {', '.join(str(f) for f in folders)}"))
            else:
                item["image"] = str(path)
        dropped = report_missing(missing, on_missing, "ChestX-ray14", root, out["skipped"])
        items = [item for item in items if item["image"] not in dropped]
    else:
        folder = next((f for f in folders if f.name == "images"), root / "images")
        for item in items:
            item["image"] = str(folder / item["image"])

    test = [item for item in items if item["_split"] == "test"]
    train_val = [item for item in items if item["_split"] == "train_val"]
    for item in items:
        del item["_split"]
    parts = seeded_split(train_val, {"validation": val_fraction}, seed=seed, group=lambda item: item["patient_id"])
    out.update(training=parts["training"], validation=parts["validation"], test=test, labels=labels)
    out["description"] += f"; validation = {val_fraction:g} of the train_val patients (seed {seed})"
    return out
