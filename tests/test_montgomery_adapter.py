"""Montgomery County adapter on a simulated folder in the published layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mimtl.data import DataValidationError, load_segmentation_datalist
from mimtl.data.adapters import MONTGOMERY_SPACING, adapt, montgomery_datalist, read_montgomery_reading


def _montgomery(root, n=10, missing_right=(), size=(40, 32)):
    base = root / "MontgomerySet"
    for folder in ("CXR_png", "ClinicalReadings", "ManualMask/leftMask", "ManualMask/rightMask"):
        (base / folder).mkdir(parents=True)
    for i in range(n):
        name = f"MCUCXR_{i + 1:04d}_{i % 2}"
        Image.fromarray(np.full(size, 80 + i, np.uint8)).save(base / "CXR_png" / f"{name}.png")
        left = np.zeros(size, np.uint8)
        left[5:30, 18:28] = 255  # the patient's left: the image's right
        right = np.zeros(size, np.uint8)
        right[5:30, 3:13] = 255
        Image.fromarray(left).save(base / "ManualMask/leftMask" / f"{name}.png")
        if i not in missing_right:
            Image.fromarray(right).save(base / "ManualMask/rightMask" / f"{name}.png")
        sex = "F" if i % 3 else "M"
        reading = (
            f"Patient's Sex: {sex}\nPatient's Age: 0{30 + i}Y\n{'normal' if i % 2 == 0 else 'right upper lobe TB'}\n"
        )
        (base / "ClinicalReadings" / f"{name}.txt").write_text(reading)
    return base


def test_montgomery_items_splits_and_label_maps(tmp_path):
    base = _montgomery(tmp_path / "data", missing_right=(3,))
    out = montgomery_datalist(tmp_path / "data", label_dir=tmp_path / "labels", test_fraction=0.2, val_fraction=0.1)
    items = out["training"] + out["validation"] + out["test"]
    assert len(items) == 9 and len(out["test"]) >= 1 and len(out["validation"]) >= 1
    assert out["skipped"] == [
        {
            "image": str(base / "CXR_png/MCUCXR_0004_1.png"),
            "reason": f"no lung mask {base / 'ManualMask/rightMask/MCUCXR_0004_1.png'}",
        }
    ]
    assert out["labels"] == {"0": "background", "1": "left lung", "2": "right lung"}
    first = next(i for i in items if i["id"] == "MCUCXR_0001_0")
    assert first["tb"] == 0 and first["sex"] == "male" and first["age"] == 30 and first["reading"] == "normal"
    assert first["spacing"] == [MONTGOMERY_SPACING, MONTGOMERY_SPACING]
    assert first["left_lung"] == str(base / "ManualMask/leftMask/MCUCXR_0001_0.png")
    label = np.asarray(Image.open(first["label"]))
    assert label[10, 20] == 1 and label[10, 5] == 2 and label[35, 5] == 0
    # the same split for the same seed
    again = montgomery_datalist(tmp_path / "data", test_fraction=0.2, val_fraction=0.1)
    assert [i["id"] for i in again["test"]] == [i["id"] for i in out["test"]]


def test_the_label_maps_pass_the_segmentation_checks(tmp_path):
    _montgomery(tmp_path / "data")
    adapt("montgomery", tmp_path / "data", out=tmp_path / "montgomery.json", label_dir=tmp_path / "labels")
    assert json.loads((tmp_path / "montgomery.json").read_text())["labels"]["2"] == "right lung"
    items = load_segmentation_datalist(tmp_path / "montgomery.json")
    assert items and all(i["label"].startswith(str(tmp_path / "labels")) for i in items)


def test_reading_parser():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.txt"
        p.write_text("Patient's Sex: F\nPatient's Age: 006M\nbilateral infiltrates\n")
        assert read_montgomery_reading(p) == {"sex": "female", "age": 0.5, "reading": "bilateral infiltrates"}


def test_a_folder_that_is_not_the_layout_names_what_was_expected(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataValidationError, match="no CXR_png/MCUCXR_"):
        montgomery_datalist(tmp_path / "x")
    base = _montgomery(tmp_path / "data", n=2)
    import shutil

    shutil.rmtree(base / "ManualMask" / "rightMask")
    with pytest.raises(DataValidationError, match="rightMask"):
        montgomery_datalist(tmp_path / "data")
