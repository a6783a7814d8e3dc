"""CheXpert (Stanford ML Group / AIMI): ``CheXpert-v1.0-small`` and ``CheXpert-v1.0``.

Layout as published::

    CheXpert-v1.0-small/
        train.csv   valid.csv
        train/patient00001/study1/view1_frontal.jpg
        valid/patient64541/study1/view1_frontal.jpg

Both CSVs have the header ``Path,Sex,Age,Frontal/Lateral,AP/PA`` followed by the 14
observations (:data:`CHEXPERT_OBSERVATIONS`); an observation cell is ``1.0`` (positive),
``0.0`` (negative), ``-1.0`` (uncertain) or empty (not mentioned). ``Path`` starts with the data
set's own folder name (``CheXpert-v1.0-small/train/...``), i.e. it is relative to the folder that
*contains* ``CheXpert-v1.0-small``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mimtl.data.adapters._common import (
    check_fraction,
    empty_datalist,
    find_dir,
    name_list,
    read_csv_rows,
    report_missing,
    require_columns,
    require_dir,
    seeded_split,
)
from mimtl.data.validate import DataValidationError

__all__ = [
    "CHEXPERT_COMPETITION_LABELS",
    "CHEXPERT_HEADER",
    "CHEXPERT_OBSERVATIONS",
    "UNCERTAIN_POLICIES",
    "chexpert_datalist",
]

#: The 14 observations, in the order of the CSV columns.
CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
#: The published header of ``train.csv`` / ``valid.csv``.
CHEXPERT_HEADER: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS)
#: The five labels of the CheXpert competition (Irvin et al. 2019).
CHEXPERT_COMPETITION_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)
#: What to do with an uncertain (-1) label.
UNCERTAIN_POLICIES: tuple[str, ...] = ("zeros", "ones", "ignore", "multiclass")

_LAYOUT = (
    "CheXpert-v1.0-small/train.csv and valid.csv (or CheXpert-v1.0/...), with the train/ and valid/ "
    "image folders beside them"
)
_PATIENT = re.compile(r"^patient\d+$")


def _find_csv_dir(root: Path) -> Path:
    folder = find_dir(root, lambda f: (f / "train.csv").is_file() and (f / "valid.csv").is_file(), depth=2)
    if folder is None:
        single = find_dir(root, lambda f: (f / "train.csv").is_file() or (f / "valid.csv").is_file(), depth=2)
        if single is not None:
            have = "train.csv" if (single / "train.csv").is_file() else "valid.csv"
            need = "valid.csv" if have == "train.csv" else "train.csv"
            raise DataValidationError(f"CheXpert: found {single / have} but no {need} beside it; expected {_LAYOUT}.")
        raise DataValidationError(f"CheXpert: no train.csv under '{root}': expected the CheXpert layout {_LAYOUT}.")
    return folder


def _policies(labels: Sequence[str], uncertain: str | Mapping[str, str]) -> list[str]:
    if isinstance(uncertain, str):
        policies = [uncertain] * len(labels)
    else:
        unknown = sorted(set(uncertain) - set(labels))
        if unknown:
            raise ValueError(f"uncertain names labels that are not selected: {unknown} (labels: {list(labels)}).")
        policies = [uncertain.get(name, "zeros") for name in labels]
    bad = sorted({p for p in policies if p not in UNCERTAIN_POLICIES})
    if bad:
        raise ValueError(f"uncertain policy {bad} is not one of {UNCERTAIN_POLICIES}.")
    return policies


def _value(cell: str, where: str) -> float:
    text = cell.strip()
    if not text:
        return 0.0  # not mentioned in the report: negative
    try:
        value = float(text)
    except ValueError:
        raise DataValidationError(f"CheXpert: {where}: label {cell!r} is not 1.0, 0.0, -1.0 or empty.") from None
    if value not in (1.0, 0.0, -1.0):
        raise DataValidationError(f"CheXpert: {where}: label {cell!r} is not 1.0, 0.0, -1.0 or empty.")
    return value


def _encode(value: float, policy: str) -> tuple[float, float]:
    """(label, mask) for one observation under ``policy``."""
    if value != -1.0:
        return value, 1.0
    if policy == "zeros":
        return 0.0, 1.0
    if policy == "ones":
        return 1.0, 1.0
    if policy == "ignore":
        return -1.0, 0.0
    return 2.0, 1.0  # multiclass: 0 negative, 1 positive, 2 uncertain


def _read(
    csv_path: Path,
    labels: Sequence[str],
    policies: Sequence[str],
    frontal_only: bool,
) -> list[dict]:
    header, rows = read_csv_rows(csv_path, "CheXpert")
    cols = require_columns(header, CHEXPERT_HEADER, csv_path, "CheXpert")
    csv_dir = csv_path.parent
    ignore = "ignore" in policies
    items = []
    for line, row in enumerate(rows, start=2):
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        rel = row[cols["Path"]].strip().replace("\\", "/")
        view = row[cols["Frontal/Lateral"]].strip()
        if frontal_only and view != "Frontal":
            continue
        parts = [p for p in rel.split("/") if p]
        if not parts:
            raise DataValidationError(f"CheXpert: {csv_path} line {line}: empty Path.")
        # Published: 'CheXpert-v1.0-small/train/...' relative to the folder holding the data set
        # folder. When that folder was renamed on unpacking (Kaggle's 'archive/'), drop the prefix.
        if parts[0] == csv_dir.name:
            image = csv_dir.parent.joinpath(*parts)
        elif parts[0].lower().startswith("chexpert"):
            image = csv_dir.joinpath(*parts[1:])
        else:
            image = csv_dir.joinpath(*parts)
        values = [_value(row[cols[name]], f"{csv_path.name} line {line} '{name}'") for name in labels]
        encoded = [_encode(v, p) for v, p in zip(values, policies, strict=True)]
        item: dict[str, Any] = {"image": str(image), "label": [e[0] for e in encoded]}
        if ignore:
            item["label_mask"] = [e[1] for e in encoded]
        patient = next((p for p in parts if _PATIENT.match(p)), None)
        age = row[cols["Age"]].strip()
        item.update(
            {
                "patient_id": patient or "/".join(parts[:-2]) or rel,
                "sex": row[cols["Sex"]].strip(),
                "age": int(float(age)) if age.replace(".", "", 1).isdigit() else None,
                "view": view,
                "ap_pa": row[cols["AP/PA"]].strip(),
            }
        )
        items.append(item)
    return items


def chexpert_datalist(
    root: str | os.PathLike,
    labels: Sequence[str] = CHEXPERT_COMPETITION_LABELS,
    uncertain: str | Mapping[str, str] = "zeros",
    frontal_only: bool = True,
    test_fraction: float = 0.0,
    seed: int = 0,
    check_files: bool = True,
    on_missing: str = "error",
) -> dict[str, Any]:
    """A MONAI datalist of CheXpert: the official ``valid.csv`` as validation, ``train.csv`` as training.

    Args:
        root: the folder holding ``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``), or that folder itself.
        labels: the observations to predict, in this order (default: the 5 competition labels).
        uncertain: what an uncertain (-1) label becomes: ``"zeros"`` (U-Zeros), ``"ones"``
            (U-Ones), ``"ignore"`` (kept as -1, with ``label_mask`` 0 there) or ``"multiclass"``
            (0 negative, 1 positive, 2 uncertain); or a dict label -> policy (others: "zeros").
            A blank cell (not mentioned) is always 0.
        frontal_only: keep frontal views only (``Frontal/Lateral == "Frontal"``).
        test_fraction: carve a test split of this fraction of the *patients* out of ``train.csv``
            (seeded; no patient in two splits). 0 gives an empty ``test`` list (CheXpert's
            own test set is not part of this layout).
        seed: seed of that split.
        check_files: check that every listed image exists.
        on_missing: ``"error"`` raises one error listing every missing image; ``"skip"`` lists
            them under ``"skipped"`` and leaves them out.

    Returns:
        ``{"training", "validation", "test": [{"image", "label", ("label_mask"), "patient_id",
        "sex", "age", "view", "ap_pa"}], "labels": [...], "uncertain": ..., "skipped": [...]}``.

    Raises:
        DataValidationError: no ``train.csv``/``valid.csv`` under ``root``, a CSV without the
            published header, a bad label value, or (``on_missing="error"``) missing images.
    """
    root = require_dir(root, "CheXpert", _LAYOUT)
    labels = name_list(labels)
    unknown = [name for name in labels if name not in CHEXPERT_OBSERVATIONS]
    if unknown or not labels:
        raise ValueError(
            f"labels {unknown or labels} are not CheXpert observations; choose from {CHEXPERT_OBSERVATIONS}."
        )
    policies = _policies(labels, uncertain)
    test_fraction = check_fraction("test_fraction", test_fraction)
    csv_dir = _find_csv_dir(root)

    train = _read(csv_dir / "train.csv", labels, policies, frontal_only)
    valid = _read(csv_dir / "valid.csv", labels, policies, frontal_only)
    out = empty_datalist("CheXpert", f"CheXpert from {csv_dir}: official valid.csv as validation")
    if check_files:
        missing = [(item["image"], "file not found") for item in train + valid if not os.path.isfile(item["image"])]
        dropped = report_missing(missing, on_missing, "CheXpert", csv_dir, out["skipped"])
        train = [item for item in train if item["image"] not in dropped]
        valid = [item for item in valid if item["image"] not in dropped]
    parts = seeded_split(train, {"test": test_fraction}, seed=seed, group=lambda item: item["patient_id"])
    out.update(training=parts["training"], validation=valid, test=parts["test"])
    out["labels"] = labels
    out["uncertain"] = dict(zip(labels, policies, strict=True))
    if test_fraction:
        out["description"] += f"; test = {test_fraction:g} of the training patients (seed {seed})"
    return out
