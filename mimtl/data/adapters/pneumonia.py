"""Chest X-ray pneumonia (Kermany et al. 2018, Guangzhou Women and Children's Medical Center).

Layout as published (Mendeley Data "Labeled Optical Coherence Tomography (OCT) and Chest X-Ray
Images for Classification", and its Kaggle copy "chest-xray-pneumonia")::

    chest_xray/
        train/NORMAL/IM-0115-0001.jpeg  NORMAL2-IM-0427-0001.jpeg ...
        train/PNEUMONIA/person1_bacteria_1.jpeg  person1000_virus_1681.jpeg ...
        val/{NORMAL,PNEUMONIA}/...      (16 images)
        test/{NORMAL,PNEUMONIA}/...     (624 images)

The Kaggle archive also holds a second copy under ``chest_xray/chest_xray/`` and macOS
``__MACOSX`` folders; only one copy is read. Pneumonia file names say the pathogen
(``personN_bacteria_M`` / ``personN_virus_M``) and the patient (``personN``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mimtl.data.adapters._common import check_fraction, empty_datalist, find_dir, require_dir, seeded_split
from mimtl.data.validate import DataValidationError

__all__ = ["PNEUMONIA_CLASSES", "pneumonia_datalist"]

#: Class folder -> label.
PNEUMONIA_CLASSES: dict[str, int] = {"NORMAL": 0, "PNEUMONIA": 1}

_SPLITS = {"train": "training", "val": "validation", "test": "test"}
_SUFFIXES = (".jpeg", ".jpg", ".png")
_LAYOUT = "chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg"
_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_", re.IGNORECASE)
_NORMAL = re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-\d+", re.IGNORECASE)


def _is_root(folder: Path) -> bool:
    return all((folder / split / cls).is_dir() for split in ("train", "test") for cls in PNEUMONIA_CLASSES)


def _describe(name: str, cls: str) -> tuple[str, str]:
    """(pathogen, patient) from a file name."""
    stem = Path(name).stem
    if cls == "NORMAL":
        match = _NORMAL.match(stem)
        return "normal", (match.group(1) if match else stem)
    match = _PERSON.match(stem)
    if match:
        return match.group(2).lower(), match.group(1).lower()
    return "unknown", stem


def pneumonia_datalist(
    root: str | os.PathLike,
    three_class: bool = False,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """A MONAI datalist of the Kermany chest X-ray pneumonia set, in its official train/val/test folders.

    Args:
        root: ``chest_xray/`` or a folder holding it.
        three_class: label 0 normal / 1 bacterial / 2 viral pneumonia instead of 0 normal / 1 pneumonia.
            Pneumonia images whose name states no pathogen are then listed under ``skipped``.
        val_fraction: the official ``val/`` holds 16 images only; a value > 0 adds this fraction of
            the ``train/`` *patients* (seeded, stratified by label, no patient in two splits) to
            the validation list. 0 keeps the official split as it is.
        seed: seed of that split.

    Returns:
        ``{"training", "validation", "test": [{"image", "label", "class", "pathogen",
        "patient_id"}], "labels": [...], "skipped": [...]}``. ``pathogen`` is ``"normal"``,
        ``"bacteria"``, ``"virus"`` or ``"unknown"``.

    Raises:
        DataValidationError: when no ``train/`` and ``test/`` folders with ``NORMAL/`` and
            ``PNEUMONIA/`` are found, or a split holds no images.
    """
    root = require_dir(root, "Chest X-ray pneumonia", _LAYOUT)
    val_fraction = check_fraction("val_fraction", val_fraction)
    base = find_dir(root, _is_root, depth=3)
    if base is None:
        raise DataValidationError(
            f"Chest X-ray pneumonia: no train/ and test/ folders with NORMAL/ and PNEUMONIA/ under '{root}': "
            f"expected the layout {_LAYOUT}."
        )
    out = empty_datalist("chest_xray_pneumonia", f"Kermany chest X-ray pneumonia from {base}: official folders")
    names = ["normal", "bacteria", "virus"] if three_class else ["normal", "pneumonia"]
    for folder, split in _SPLITS.items():
        for cls, class_label in PNEUMONIA_CLASSES.items():
            directory = base / folder / cls
            if not directory.is_dir():
                continue
            for path in sorted(directory.iterdir()):
                if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in _SUFFIXES:
                    continue
                pathogen, patient = _describe(path.name, cls)
                label = class_label
                if three_class:
                    if pathogen == "unknown":
                        out["skipped"].append(
                            {
                                "image": str(path),
                                "reason": "pneumonia image whose name states neither bacteria nor virus",
                            }
                        )
                        continue
                    label = names.index(pathogen)
                out[split].append(
                    {"image": str(path), "label": label, "class": cls, "pathogen": pathogen, "patient_id": patient}
                )
    for folder, split in (("train", "training"), ("test", "test")):
        if not out[split]:
            raise DataValidationError(
                f"Chest X-ray pneumonia: no .jpeg images in {base / folder}/NORMAL or /PNEUMONIA; expected {_LAYOUT}."
            )
    if val_fraction:
        parts = seeded_split(
            out["training"],
            {"validation": val_fraction},
            seed=seed,
            group=lambda item: f"{item['class']}/{item['patient_id']}",
            stratify=lambda item: item["label"],
        )
        out["training"] = parts["training"]
        out["validation"] = out["validation"] + parts["validation"]
        out["description"] += f"; validation + {val_fraction:g} of the train patients (seed {seed})"
    out["labels"] = names
    return out
