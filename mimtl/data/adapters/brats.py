"""BraTS training data (CBICA / MICCAI brain tumour segmentation challenges), 2018-2023 layouts.

Layouts as published::

    MICCAI_BraTS_2019_Data_Training/HGG/BraTS19_2013_10_1/BraTS19_2013_10_1_{t1,t1ce,t2,flair,seg}.nii.gz
    MICCAI_BraTS_2019_Data_Training/LGG/...            (2018: MICCAI_BraTS_2018_Data_Training, Brats18_*)

    MICCAI_BraTS2020_TrainingData/BraTS20_Training_001/BraTS20_Training_001_{t1,t1ce,t2,flair,seg}.nii.gz
    MICCAI_BraTS2020_TrainingData/name_mapping.csv
        (header: Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,
         BraTS_2019_subject_ID,BraTS_2020_subject_ID)

    BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz
    ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/
        BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz

The grade (HGG = high-grade glioma, LGG = lower-grade glioma) comes from the ``HGG``/``LGG``
folders (2018, 2019) or the ``Grade`` column of ``name_mapping.csv`` (2020). BraTS 2021 and
later publish no grade at all: those layouts need ``require_grade=False``. Known quirk: in the
Kaggle copy of 2020 the files are ``.nii`` and case 355's segmentation is named
``W39_1998.09.19_Segm.nii``; both are accepted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mimtl.data.adapters._common import (
    check_fraction,
    empty_datalist,
    find_dir,
    read_csv_rows,
    report_missing,
    require_columns,
    require_dir,
    seeded_split,
)
from mimtl.data.validate import DataValidationError

__all__ = ["BRATS_GRADES", "BRATS_MODALITIES", "brats_datalist"]

#: Image channel order of every item.
BRATS_MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
#: Grade -> grade_label.
BRATS_GRADES: dict[str, int] = {"HGG": 1, "LGG": 0}

# File-name suffix of each modality: up to 2021, and from 2023 on.
_SUFFIXES = {
    "flair": ("_flair", "-t2f"),
    "t1": ("_t1", "-t1n"),
    "t1ce": ("_t1ce", "-t1c"),
    "t2": ("_t2", "-t2w"),
    "seg": ("_seg", "-seg"),
}
_EXTENSIONS = (".nii.gz", ".nii")
_LAYOUT = (
    "case folders <case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz, in HGG/ and LGG/ (2018, 2019) or next to "
    "name_mapping.csv (2020)"
)
_NO_GRADE = (
    "BraTS 2021 and later (BraTS2021_*, BraTS-GLI-*) publish no tumour grade, so there is none to read and "
    "no grade to stratify by; pass require_grade=False to list the cases without a grade"
)


def _nifti(folder: Path, case: str, modality: str) -> Path | None:
    for suffix in _SUFFIXES[modality]:
        for ext in _EXTENSIONS:
            path = folder / f"{case}{suffix}{ext}"
            if path.is_file():
                return path
    if modality == "seg":  # e.g. BraTS20_Training_355/W39_1998.09.19_Segm.nii
        odd = sorted(
            p for p in folder.iterdir() if re.search(r"seg", p.name, re.IGNORECASE) and p.name.endswith(_EXTENSIONS)
        )
        if len(odd) == 1:
            return odd[0]
    return None


def _is_case(folder: Path) -> bool:
    return folder.is_dir() and _nifti(folder, folder.name, "flair") is not None


def _cases(base: Path) -> list[tuple[Path, str | None]]:
    """(case folder, grade from an HGG/LGG parent or None) for every case under ``base``."""
    found = []
    for grade in BRATS_GRADES:
        folder = base / grade
        if folder.is_dir():
            found += [(case, grade) for case in sorted(folder.iterdir()) if _is_case(case)]
    found += [(case, None) for case in sorted(base.iterdir()) if _is_case(case)]
    return found


def _name_mapping(path: Path) -> dict[str, str]:
    header, rows = read_csv_rows(path, "BraTS")
    require_columns(header, ["Grade"], path, "BraTS")
    ids = [i for i, name in enumerate(header) if name.endswith("subject_ID")]
    if not ids:
        raise DataValidationError(f"BraTS: '{path}' has no *_subject_ID column; header: {', '.join(header)}.")
    grade_col = header.index("Grade")
    grades = {}
    for row in rows:
        grade = row[grade_col].strip().upper() if grade_col < len(row) else ""
        for i in ids:
            if i < len(row) and row[i].strip() and row[i].strip().upper() != "NA":
                grades[row[i].strip()] = grade
    return grades


def brats_datalist(
    root: str | os.PathLike,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    require_grade: bool = True,
    on_missing: str = "error",
) -> dict[str, Any]:
    """A MONAI datalist of BraTS training cases, split by seed and stratified by grade.

    BraTS publishes labels for its training cases only, so validation and test are drawn from
    them: ``test_fraction`` and ``val_fraction`` of the cases of each grade.

    Args:
        root: the training data folder (e.g. ``MICCAI_BraTS2020_TrainingData``) or a parent of it.
        val_fraction: fraction of the cases for validation.
        test_fraction: fraction of the cases for test.
        seed: seed of the split.
        require_grade: raise when a case has no grade (always the case for 2021+). False lists
            such cases with ``grade`` None and ``grade_label`` -1 (split stratified where known).
        on_missing: a case lacking a modality or its segmentation: ``"error"`` (one error
            listing all) or ``"skip"`` (listed under ``skipped``).

    Returns:
        ``{"training", "validation", "test": [{"image": [flair, t1, t1ce, t2], "label": seg,
        "grade", "grade_label", "id"}], "modalities": [...], "grades": {...}, "skipped": [...]}``.

    Raises:
        DataValidationError: no case folders under ``root``, a grade that is not HGG/LGG, a
            case without a grade (see ``require_grade``) or incomplete cases.
    """
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    root = require_dir(root, "BraTS", _LAYOUT)
    base = find_dir(root, lambda f: bool(_cases(f)) if f.is_dir() else False, depth=2)
    if base is None:
        raise DataValidationError(f"BraTS: no case folders under '{root}': expected {_LAYOUT}.")
    cases = _cases(base)
    mapping_path = base / "name_mapping.csv"
    mapping = _name_mapping(mapping_path) if mapping_path.is_file() else {}

    out = empty_datalist("brats", f"BraTS training cases from {base}")
    items, missing, ungraded, bad_grade = [], [], [], []
    for folder, folder_grade in cases:
        case = folder.name
        paths = {m: _nifti(folder, case, m) for m in (*BRATS_MODALITIES, "seg")}
        lacking = [m for m, p in paths.items() if p is None]
        if lacking:
            missing.append((str(folder), f"no {', '.join(lacking)} file ({case}_<modality>.nii.gz)"))
            continue
        grade = folder_grade or mapping.get(case)
        if grade is not None and grade not in BRATS_GRADES:
            bad_grade.append(f"{case}: {grade!r}")
        if grade is None:
            ungraded.append(case)
        items.append(
            {
                "image": [str(paths[m]) for m in BRATS_MODALITIES],
                "label": str(paths["seg"]),
                "grade": grade,
                "grade_label": BRATS_GRADES.get(grade, -1) if grade else -1,
                "id": case,
            }
        )
    if bad_grade:
        raise DataValidationError(f"BraTS: grade(s) other than HGG/LGG in {mapping_path}: {', '.join(bad_grade[:20])}")
    if ungraded and require_grade:
        where = (
            f"{mapping_path} does not list them"
            if mapping
            else f"no HGG/ LGG/ folders and no name_mapping.csv in {base}"
        )
        raise DataValidationError(
            f"BraTS: {len(ungraded)} case(s) have no grade "
            f"({', '.join(ungraded[:5])}{', ...' if len(ungraded) > 5 else ''}): "
            f"{where}. {_NO_GRADE}."
        )
    report_missing(missing, on_missing, "BraTS", base, out["skipped"])  # incomplete cases were not listed
    if not items:
        raise DataValidationError(f"BraTS: no complete case under '{base}'; expected {_LAYOUT}.")
    parts = seeded_split(
        items,
        {"test": test_fraction, "validation": val_fraction},
        seed=seed,
        group=lambda item: item["id"],
        stratify=lambda item: item["grade_label"],
    )
    out.update(training=parts["training"], validation=parts["validation"], test=parts["test"])
    out["modalities"] = list(BRATS_MODALITIES)
    out["grades"] = dict(BRATS_GRADES)
    # Label values of the segmentations: enhancing tumour is 4 up to 2021 and 3 from 2023 on.
    enhancing = "3" if any(item["id"].startswith("BraTS-") for item in items) else "4"
    out["labels"] = {
        "0": "background",
        "1": "necrotic tumour core",
        "2": "peritumoral edema",
        enhancing: "enhancing tumour",
    }
    out["description"] += (
        f"; seeded split (seed {seed}) stratified by grade: test {test_fraction:g}, validation {val_fraction:g}"
    )
    return out
