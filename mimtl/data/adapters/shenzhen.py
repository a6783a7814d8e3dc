"""Shenzhen chest X-ray set (NLM / Shenzhen No. 3 People's Hospital) with lung masks.

Layouts as published::

    ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png           NLM release (L: 0 normal, 1 TB)
    ChinaSet_AllFiles/ClinicalReadings/CHNCXR_0001_0.txt  line 1 sex and age, then the reading
    mask/CHNCXR_0001_0_mask.png                           lung masks (Stirenko et al. "shcxr-lung-mask")

    Lung Segmentation/CXR_png/CHNCXR_0001_0.png            Kaggle "Chest X-ray Masks and Labels"
    Lung Segmentation/ClinicalReadings/CHNCXR_0001_0.txt   (also holds the Montgomery MCUCXR_*
    Lung Segmentation/masks/CHNCXR_0001_0_mask.png          files, which this adapter leaves out)

Not every image has a lung mask (566 of 662 in the Stirenko set): images without one are
listed under ``skipped`` with the reason, or kept in ``unlabelled`` on request, never dropped
silently.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mimtl.data.adapters._common import check_fraction, empty_datalist, find_dir, require_dir, seeded_split
from mimtl.data.validate import DataValidationError

__all__ = ["SHENZHEN_CLASSES", "read_clinical_reading", "shenzhen_datalist"]

#: The digit after the case number -> meaning.
SHENZHEN_CLASSES: dict[int, str] = {0: "normal", 1: "tuberculosis"}

_LAYOUT = (
    "CXR_png/CHNCXR_NNNN_L.png (in ChinaSet_AllFiles/ or 'Lung Segmentation/'), ClinicalReadings/CHNCXR_NNNN_L.txt "
    "and masks in mask/ or masks/ as CHNCXR_NNNN_L_mask.png"
)
_NAME = re.compile(r"^CHNCXR_(\d{4})_([01])$")
_MASK_DIRS = ("mask", "masks")


def read_clinical_reading(path: str | os.PathLike) -> dict[str, Any]:
    """Sex, age and reading from a Shenzhen ``ClinicalReadings`` file.

    The first line is e.g. ``male 35yrs`` (sometimes ``Male, 35yrs`` or ``female 8month``),
    the rest is the radiologist's reading (``normal`` for normal cases).

    Returns:
        ``{"sex": "male"|"female"|None, "age": years or None, "reading": str}``.
    """
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0].lower() if lines else ""
    sex = "female" if "female" in first else "male" if "male" in first else None
    age: float | None = None
    match = re.search(r"(\d+(?:\.\d+)?)\s*(y|yr|yrs|year|years|m|month|months|d|day|days)?\b", first)
    if match:
        value, unit = float(match.group(1)), (match.group(2) or "y")
        age = value / 12.0 if unit.startswith("m") else value / 365.0 if unit.startswith("d") else value
        age = int(age) if float(age).is_integer() else round(age, 2)
    return {"sex": sex, "age": age, "reading": " ".join(lines[1:])}


def _has_cxr(folder: Path) -> bool:
    return (folder / "CXR_png").is_dir() and any((folder / "CXR_png").glob("CHNCXR_*.png"))


def _mask_dirs(root: Path, base: Path, mask_dir: str | os.PathLike | None) -> list[Path]:
    if mask_dir is not None:
        folder = Path(mask_dir).expanduser()
        if not folder.is_dir():
            raise DataValidationError(f"Shenzhen: mask_dir '{folder}' is not a folder.")
        return [folder.resolve()]
    found = []
    for parent in dict.fromkeys([base, base.parent, root]):
        for name in _MASK_DIRS:
            if (parent / name).is_dir():
                found.append(parent / name)
    more = find_dir(root, lambda f: f.name in _MASK_DIRS and any(f.glob("CHNCXR_*_mask.png")), depth=3)
    if more is not None and more not in found:
        found.append(more)
    return found


def shenzhen_datalist(
    root: str | os.PathLike,
    task: str = "segmentation",
    mask_dir: str | os.PathLike | None = None,
    keep_unlabelled: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """A MONAI datalist of the Shenzhen chest X-rays, for lung segmentation or TB classification.

    There is no official split: ``test_fraction`` and ``val_fraction`` of the images go to test
    and validation, seeded and stratified by the TB label (one image per patient).

    Args:
        root: the folder holding ``ChinaSet_AllFiles/`` or ``Lung Segmentation/`` (or that folder itself).
        task: ``"segmentation"``: ``label`` is the lung mask path, images without a mask are
            ``skipped`` (or kept under ``unlabelled``); ``"classification"``: ``label`` is 0/1
            (TB), every image is listed and ``mask`` is set where a mask exists.
        mask_dir: the folder of ``CHNCXR_NNNN_L_mask.png`` files when it is not a ``mask/`` or
            ``masks/`` folder next to ``CXR_png/`` or under ``root``.
        keep_unlabelled: segmentation only: list images without a mask under ``unlabelled``
            (for semi-supervised use) instead of ``skipped``.
        val_fraction: fraction of the images for validation.
        test_fraction: fraction of the images for test.
        seed: seed of the split.

    Returns:
        ``{"training", "validation", "test": [{"image", "label", ("mask"), "tb", "sex", "age",
        "reading", "id"}], "labels": [...], "skipped": [...], ("unlabelled": [...])}``.

    Raises:
        DataValidationError: no ``CXR_png/CHNCXR_*.png`` under ``root``, or (segmentation) no
            mask folder at all.
    """
    if task not in ("segmentation", "classification"):
        raise ValueError(f"task must be 'segmentation' or 'classification', not {task!r}.")
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    root = require_dir(root, "Shenzhen", _LAYOUT)
    base = find_dir(root, _has_cxr, depth=2)
    if base is None:
        raise DataValidationError(f"Shenzhen: no CXR_png/CHNCXR_*.png under '{root}': expected {_LAYOUT}.")
    masks_in = _mask_dirs(root, base, mask_dir)
    if task == "segmentation" and not masks_in:
        raise DataValidationError(
            f"Shenzhen: no lung mask folder (mask/ or masks/ with CHNCXR_NNNN_L_mask.png) next to {base / 'CXR_png'} "
            f"or under '{root}'; pass mask_dir=..., or task='classification' to use the images without masks."
        )
    readings_dir = base / "ClinicalReadings"
    out = empty_datalist(
        "shenzhen", f"Shenzhen chest X-rays from {base}, masks from {', '.join(map(str, masks_in)) or '-'}"
    )
    items, unlabelled = [], []
    for image in sorted((base / "CXR_png").glob("CHNCXR_*.png")):
        match = _NAME.match(image.stem)
        if match is None:
            out["skipped"].append({"image": str(image), "reason": "name is not CHNCXR_NNNN_L.png"})
            continue
        tb = int(match.group(2))
        mask = next((d / f"{image.stem}_mask.png" for d in masks_in if (d / f"{image.stem}_mask.png").is_file()), None)
        item: dict[str, Any] = {"image": str(image), "tb": tb, "id": image.stem}
        reading = readings_dir / f"{image.stem}.txt"
        if reading.is_file():
            item.update(read_clinical_reading(reading))
        if task == "classification":
            item["label"] = tb
            if mask is not None:
                item["mask"] = str(mask)
        elif mask is not None:
            item["label"] = str(mask)
        elif keep_unlabelled:
            unlabelled.append(item)
            continue
        else:
            out["skipped"].append(
                {
                    "image": str(image),
                    "reason": f"no lung mask {image.stem}_mask.png in {', '.join(map(str, masks_in))}",
                }
            )
            continue
        items.append(item)
    if not items:
        raise DataValidationError(
            f"Shenzhen: no usable image under '{base}' ({len(out['skipped'])} skipped): expected {_LAYOUT}."
        )
    parts = seeded_split(
        items,
        {"test": test_fraction, "validation": val_fraction},
        seed=seed,
        group=lambda item: item["id"],
        stratify=lambda item: item["tb"],
    )
    out.update(training=parts["training"], validation=parts["validation"], test=parts["test"])
    out["labels"] = ["background", "lung"] if task == "segmentation" else [SHENZHEN_CLASSES[0], SHENZHEN_CLASSES[1]]
    if task == "segmentation" and keep_unlabelled:
        out["unlabelled"] = unlabelled
    out["description"] += (
        f"; seeded split (seed {seed}) stratified by TB: test {test_fraction:g}, validation {val_fraction:g}"
    )
    return out
