"""Montgomery County chest X-ray set (NLM) with left and right lung masks.

Layout as published::

    MontgomerySet/CXR_png/MCUCXR_0001_0.png                 (L: 0 normal, 1 tuberculosis)
    MontgomerySet/ClinicalReadings/MCUCXR_0001_0.txt         "Patient's Sex: M", "Patient's Age: 040Y", reading
    MontgomerySet/ManualMask/leftMask/MCUCXR_0001_0.png      the patient's left lung (image right)
    MontgomerySet/ManualMask/rightMask/MCUCXR_0001_0.png     the patient's right lung

The films are 4020 x 4892 or 4892 x 4020 pixels of 0.0875 mm (NLM's description); the datalist
gives every item that spacing. Each item carries both masks (``left_lung``, ``right_lung``); with
``label_dir`` they are also combined into one label map per film (0 background, 1 left lung,
2 right lung: the values of mimtl's segmentation demo and of SCR), set as ``label``. A film whose
masks are missing is listed under ``skipped`` with the reason, never dropped silently.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from mimtl.data.adapters._common import check_fraction, empty_datalist, find_dir, require_dir, seeded_split
from mimtl.data.validate import DataValidationError

__all__ = ["MONTGOMERY_LABELS", "MONTGOMERY_SPACING", "montgomery_datalist", "read_montgomery_reading"]

#: Label-map value of each lung (the segmentation demo's and SCR's).
MONTGOMERY_LABELS: dict[str, int] = {"left lung": 1, "right lung": 2}
#: Pixel spacing of the films, mm (NLM's description of the set).
MONTGOMERY_SPACING: float = 0.0875

_LAYOUT = "CXR_png/MCUCXR_NNNN_L.png, ManualMask/leftMask/ and ManualMask/rightMask/ (same names), ClinicalReadings/"
_NAME = re.compile(r"^MCUCXR_(\d{4})_([01])$")
_MASKS = {"left lung": "leftMask", "right lung": "rightMask"}


def read_montgomery_reading(path: str | os.PathLike) -> dict[str, Any]:
    """Sex, age and reading from a Montgomery ``ClinicalReadings`` file.

    Lines such as ``Patient's Sex: M`` and ``Patient's Age: 040Y``; the other lines are the reading.

    Returns:
        ``{"sex": "male"|"female"|None, "age": years or None, "reading": str}``.
    """
    sex, age, rest = None, None, []
    for line in Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines():
        text = line.strip()
        low = text.lower()
        if low.startswith("patient's sex"):
            value = low.split(":", 1)[-1].strip()
            sex = "female" if value.startswith("f") else "male" if value.startswith("m") else None
        elif low.startswith("patient's age"):
            match = re.search(r"(\d+)\s*([ymd])?", low.split(":", 1)[-1])
            if match:
                n, unit = int(match.group(1)), match.group(2) or "y"
                age = n if unit == "y" else round(n / 12.0, 2) if unit == "m" else round(n / 365.0, 2)
        elif text:
            rest.append(text)
    return {"sex": sex, "age": age, "reading": " ".join(rest)}


def _has_cxr(folder: Path) -> bool:
    return (folder / "CXR_png").is_dir() and any((folder / "CXR_png").glob("MCUCXR_*.png"))


def _write_label_map(left: Path, right: Path, out: Path) -> Path:
    """One label PNG from the two lung masks (any nonzero pixel is inside)."""
    from PIL import Image

    from mimtl.io import ImageReadError

    label = None
    for structure, path in (("left lung", left), ("right lung", right)):
        with Image.open(path) as image:
            inside = np.asarray(image.convert("L")) > 0
        if label is None:
            label = np.zeros(inside.shape, np.uint8)
        elif inside.shape != label.shape:
            raise ImageReadError(path, f"mask shape {inside.shape} differs from the left lung mask's {label.shape}")
        label[inside] = MONTGOMERY_LABELS[structure]
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label).save(out)
    return out


def montgomery_datalist(
    root: str | os.PathLike,
    label_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """A MONAI datalist of the Montgomery chest X-rays with left and right lung masks.

    There is no official split: ``test_fraction`` and ``val_fraction`` of the films go to test and
    validation, seeded and stratified by the TB label (one film per patient).

    Args:
        root: the folder holding ``MontgomerySet/`` (or that folder itself).
        label_dir: where to write combined label maps (``label``: 1 left lung, 2 right lung); None: do not.
        val_fraction: fraction of the films for validation.
        test_fraction: fraction of the films for test.
        seed: seed of the split.

    Returns:
        ``{"training", "validation", "test": [{"image", "left_lung", "right_lung", ("label"), "spacing",
        "tb", "sex", "age", "reading", "id"}], "labels": {"0": "background", "1": "left lung",
        "2": "right lung"}, "skipped": [...]}``.

    Raises:
        DataValidationError: no ``CXR_png/MCUCXR_*.png`` or no ``ManualMask`` folders under ``root``, or no
            film with both masks.
    """
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    root = require_dir(root, "Montgomery", _LAYOUT)
    base = find_dir(root, _has_cxr, depth=2)
    if base is None:
        raise DataValidationError(f"Montgomery: no CXR_png/MCUCXR_*.png under '{root}': expected {_LAYOUT}.")
    mask_dirs = {s: base / "ManualMask" / d for s, d in _MASKS.items()}
    absent = [str(d) for d in mask_dirs.values() if not d.is_dir()]
    if absent:
        raise DataValidationError(f"Montgomery: no lung mask folder {', '.join(absent)}: expected {_LAYOUT}.")
    out = empty_datalist("montgomery", f"Montgomery County chest X-rays with lung masks from {base}")
    items = []
    for image in sorted((base / "CXR_png").glob("MCUCXR_*.png")):
        match = _NAME.match(image.stem)
        if match is None:
            out["skipped"].append({"image": str(image), "reason": "name is not MCUCXR_NNNN_L.png"})
            continue
        masks = {s: d / image.name for s, d in mask_dirs.items()}
        missing = [str(p) for p in masks.values() if not p.is_file()]
        if missing:
            out["skipped"].append({"image": str(image), "reason": f"no lung mask {', '.join(missing)}"})
            continue
        item: dict[str, Any] = {
            "image": str(image),
            "left_lung": str(masks["left lung"]),
            "right_lung": str(masks["right lung"]),
            "spacing": [MONTGOMERY_SPACING, MONTGOMERY_SPACING],
            "tb": int(match.group(2)),
            "id": image.stem,
        }
        reading = base / "ClinicalReadings" / f"{image.stem}.txt"
        if reading.is_file():
            item.update(read_montgomery_reading(reading))
        if label_dir is not None:
            path = Path(label_dir).expanduser().absolute() / f"{image.stem}.png"
            item["label"] = str(_write_label_map(masks["left lung"], masks["right lung"], path))
        items.append(item)
    if not items:
        raise DataValidationError(
            f"Montgomery: no film under '{base}' has both lung masks ({len(out['skipped'])} skipped): expected {_LAYOUT}."
        )
    parts = seeded_split(
        items,
        {"test": test_fraction, "validation": val_fraction},
        seed=seed,
        group=lambda item: item["id"],
        stratify=lambda item: item["tb"],
    )
    out.update(training=parts["training"], validation=parts["validation"], test=parts["test"])
    out["labels"] = {"0": "background", **{str(v): k for k, v in MONTGOMERY_LABELS.items()}}
    out["description"] += (
        f"; seeded split (seed {seed}) stratified by TB: test {test_fraction:g}, validation {val_fraction:g}"
    )
    return out
