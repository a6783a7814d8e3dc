"""The Shenzhen chest landmark adapter: tiny fixtures in the published layout, built in tmp_path.

Layout and label format as in the YOLO_Universal_Anatomical_Landmark_Detection repository
(``data/chest/pngs/*.png``, ``data/chest/labels/*.txt`` with the point count on the first line,
then one ``x/width y/height`` ratio pair per line); only the images are tiny.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from mimtl.cli import main
from mimtl.data.adapters import ADAPTERS, SHENZHEN_LANDMARK_NAMES, adapt, shenzhen_landmarks_datalist
from mimtl.data.adapters.chest_landmarks import (
    SHENZHEN_LANDMARKS_EXCLUDED,
    read_ratio_landmarks,
)
from mimtl.data.validate import DataValidationError

pytestmark = pytest.mark.filterwarnings("ignore:.*nvImageCodec")

RATIOS = [(0.25, 0.5), (0.75, 0.5), (0.1, 0.2), (0.9, 0.2), (0.3, 0.8), (0.7, 0.8)]


def png(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 100).save(path)
    return path


def label_text(ratios=RATIOS, count: int | None = None) -> str:
    lines = [str(len(ratios) if count is None else count)] + [f"{x:.4f} {y:.4f}" for x, y in ratios]
    return "\n".join(lines) + "\n"


def make_chest(root: Path, stems, size: tuple[int, int] = (8, 6)) -> Path:
    """``root/chest/pngs/<stem>.png`` and ``root/chest/labels/<stem>.txt`` for every stem."""
    chest = root / "chest"
    (chest / "labels").mkdir(parents=True, exist_ok=True)
    for stem in stems:
        png(chest / "pngs" / f"{stem}.png", size)
        (chest / "labels" / f"{stem}.txt").write_text(label_text())
    return chest


def ids(items) -> list[str]:
    return [item["id"] for item in items]


def test_published_split_filters_and_positions(tmp_path):
    excluded = set(SHENZHEN_LANDMARKS_EXCLUDED)
    good = [s for s in (f"CHNCXR_{k:04d}_0" for k in range(1, 300)) if s not in excluded][:279]
    chest = make_chest(tmp_path, good + sorted(excluded) + ["CHNCXR_0400_1", "CHNCXR_0401_1"])
    png(chest / "pngs" / "CHNCXR_0500_0.png")  # an image without a label file
    png(chest / "pngs" / "MCUCXR_0001_0.png")  # a Montgomery image: not in the set
    (chest / "labels" / "CHNCXR_0600_0.txt").write_text(label_text())  # a label file without an image
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 279 images: no warning about the count
        dl = shenzhen_landmarks_datalist(tmp_path)
    assert [len(dl[k]) for k in ("training", "validation", "test")] == [195, 34, 50]
    assert ids(dl["training"]) == good[:195] and ids(dl["validation"]) == good[195:229]
    assert ids(dl["test"]) == good[229:]
    reasons = {Path(s["image"]).stem: s["reason"] for s in dl["skipped"]}
    assert set(reasons) == excluded | {
        "CHNCXR_0400_1",
        "CHNCXR_0401_1",
        "CHNCXR_0500_0",
        "MCUCXR_0001_0",
        "CHNCXR_0600_0",
    }
    assert all("excluded" in reasons[s] for s in excluded)
    assert "abnormal" in reasons["CHNCXR_0400_1"] and "no label file" in reasons["CHNCXR_0500_0"]
    assert "without an image" in reasons["CHNCXR_0600_0"] and "CHNCXR_NNNN_L" in reasons["MCUCXR_0001_0"]
    assert dl["incomplete"] == [] and dl["landmark_names"] == ["L1", "L2", "L3", "L4", "L5", "L6"]

    # the validation images re-drawn from the first 229, seeded; the test images stay the published ones
    redrawn = shenzhen_landmarks_datalist(tmp_path, val_fraction=0.1, seed=3)
    assert [len(redrawn[k]) for k in ("training", "validation", "test")] == [206, 23, 50]
    assert ids(redrawn["test"]) == good[229:]
    assert set(ids(redrawn["training"] + redrawn["validation"])) == set(good[:229])
    assert json.dumps(redrawn) == json.dumps(shenzhen_landmarks_datalist(tmp_path, val_fraction=0.1, seed=3))
    assert ids(redrawn["validation"]) != ids(
        shenzhen_landmarks_datalist(tmp_path, val_fraction=0.1, seed=4)["validation"]
    )

    # the abnormal images on request, and another exclusion list
    with pytest.warns(UserWarning, match="290 usable images.*not the published 279"):
        everything = shenzhen_landmarks_datalist(tmp_path, normal_only=False, exclude="")
    assert sum(len(everything[k]) for k in ("training", "validation", "test")) == 279 + 9 + 2


def test_ratios_become_pixels_of_each_film(tmp_path):
    chest = make_chest(tmp_path, ["CHNCXR_0001_0", "CHNCXR_0002_0"], size=(40, 30))
    png(chest / "pngs" / "CHNCXR_0002_0.png", size=(200, 100))  # films differ in size
    (chest / "labels" / "CHNCXR_0002_0.txt").write_text("6\n0.5 0.25\n0.1 0.9\n0 0\n1 1\n0.123 0.456\n0.5, 0.5\n")
    dl = shenzhen_landmarks_datalist(chest, num_training=1, num_validation=0)
    one, two = dl["training"][0], dl["test"][0]
    expected = [[10.0, 15.0], [30.0, 15.0], [4.0, 6.0], [36.0, 6.0], [12.0, 24.0], [28.0, 24.0]]
    np.testing.assert_allclose(one["landmarks"], expected)  # 0.25 * 40, 0.5 * 30, ...
    assert one["image_size"] == [40, 30] and two["image_size"] == [200, 100]
    expected = [[100.0, 25.0], [20.0, 90.0], [0.0, 0.0], [200.0, 100.0], [24.6, 45.6], [100.0, 50.0]]
    np.testing.assert_allclose(two["landmarks"], expected)  # 0.5 * 200, 0.25 * 100, ...
    assert one["missing"] == [] and one["id"] == "CHNCXR_0001_0" and Path(one["image"]).is_absolute()
    assert all(math.isnan(v) for v in one["spacing"]) and one["spacing_source"].startswith("unknown")
    assert one["landmark_names"] == list(SHENZHEN_LANDMARK_NAMES) and len(SHENZHEN_LANDMARK_NAMES) == 6


def test_sizes_come_from_the_header_without_decoding(tmp_path, monkeypatch):
    chest = make_chest(tmp_path, ["CHNCXR_0001_0", "CHNCXR_0002_0", "CHNCXR_0003_0"], size=(40, 30))

    def refuse(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    dl = shenzhen_landmarks_datalist(chest, num_training=1, num_validation=1)
    assert dl["training"][0]["landmarks"][0] == [10.0, 15.0]


def test_missing_and_unreadable_points_are_nan_and_listed(tmp_path):
    stems = [f"CHNCXR_{k:04d}_0" for k in range(1, 7)]
    chest = make_chest(tmp_path, stems, size=(40, 30))
    labels = chest / "labels"
    (labels / "CHNCXR_0001_0.txt").write_text(label_text(RATIOS[:4], count=6))  # file ends after 4 points
    (labels / "CHNCXR_0002_0.txt").write_text(label_text(RATIOS[:5]))  # declares 5
    (labels / "CHNCXR_0003_0.txt").write_text("6\n0.25 0.5\nabc def\n0.1 0.2\n512 300\n0.3 0.8\n0.7\n")
    (labels / "CHNCXR_0004_0.txt").write_text("0.25 0.5\n0.75 0.5\n")  # no count line
    (chest / "pngs" / "CHNCXR_0005_0.png").write_bytes(b"not a png")  # unreadable image
    dl = shenzhen_landmarks_datalist(chest, num_training=3, num_validation=1)
    by_id = {i["id"]: i for k in ("training", "validation", "test") for i in dl[k]}
    assert by_id["CHNCXR_0001_0"]["missing"] == [4, 5]
    assert by_id["CHNCXR_0001_0"]["landmarks"][3] == [36.0, 6.0]
    assert all(math.isnan(v) for p in by_id["CHNCXR_0001_0"]["landmarks"][4:] for v in p)
    assert by_id["CHNCXR_0002_0"]["missing"] == [5]
    assert by_id["CHNCXR_0003_0"]["missing"] == [1, 3, 5]  # unreadable, pixels instead of a ratio, one number
    assert by_id["CHNCXR_0003_0"]["landmarks"][2] == pytest.approx([4.0, 6.0])
    assert by_id["CHNCXR_0004_0"]["missing"] == list(range(6))
    incomplete = {Path(i["image"]).stem: i for i in dl["incomplete"]}
    assert set(incomplete) == {"CHNCXR_0001_0", "CHNCXR_0002_0", "CHNCXR_0003_0", "CHNCXR_0004_0"}
    assert "absent" in incomplete["CHNCXR_0001_0"]["reason"] and "declares 5" in incomplete["CHNCXR_0002_0"]["reason"]
    assert "outside [0, 1]" in incomplete["CHNCXR_0003_0"]["reason"]
    assert "not the number of points" in incomplete["CHNCXR_0004_0"]["reason"]
    # the unreadable image keeps its place in the positional split but is listed as skipped
    assert "CHNCXR_0005_0" not in by_id and ids(dl["test"]) == ["CHNCXR_0006_0"]
    assert any("cannot read the image header" in s["reason"] for s in dl["skipped"])
    points, missing, problem = read_ratio_landmarks(labels / "nowhere.txt")
    assert missing == list(range(6)) and problem and all(math.isnan(v) for p in points for v in p)


def test_seeded_split_is_deterministic(tmp_path):
    chest = make_chest(tmp_path, [f"CHNCXR_{k:04d}_0" for k in range(1, 21)])
    a = shenzhen_landmarks_datalist(chest, split="seeded", test_fraction=0.2, val_fraction=0.25, seed=7)
    assert [len(a[k]) for k in ("training", "validation", "test")] == [11, 5, 4]  # fractions of all 20
    again = shenzhen_landmarks_datalist(chest, split="seeded", test_fraction=0.2, val_fraction=0.25, seed=7)
    assert json.dumps(a) == json.dumps(again)  # (NaN != NaN in ==)
    parts = [set(ids(a[k])) for k in ("training", "validation", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    b = shenzhen_landmarks_datalist(chest, split="seeded", test_fraction=0.2, val_fraction=0.25, seed=8)
    assert set(ids(b["test"])) != parts[2]
    default = shenzhen_landmarks_datalist(chest, split="seeded")
    assert [len(default[k]) for k in ("training", "validation", "test")] == [14, 2, 4]
    with pytest.raises(DataValidationError, match="20 usable images.*leaving none for test"):
        shenzhen_landmarks_datalist(chest)  # too few for 195 / 34 / rest
    with pytest.raises(ValueError, match="split must be one of"):
        shenzhen_landmarks_datalist(chest, split="random")


def test_wrong_folder_names_the_expected_layout(tmp_path):
    with pytest.raises(DataValidationError, match="does not exist.*chest/pngs/CHNCXR_NNNN_L.png"):
        shenzhen_landmarks_datalist(tmp_path / "nowhere")
    png(tmp_path / "release" / "CXR_png" / "CHNCXR_0001_0.png")
    with pytest.raises(DataValidationError, match=r"no pngs/ and labels/ folders.*Shenzhen release itself"):
        shenzhen_landmarks_datalist(tmp_path / "release")
    (tmp_path / "other" / "pngs").mkdir(parents=True)
    (tmp_path / "other" / "labels").mkdir()
    png(tmp_path / "other" / "pngs" / "001.png")
    with pytest.raises(DataValidationError, match="no CHNCXR_NNNN_L.png in"):
        shenzhen_landmarks_datalist(tmp_path / "other")


def test_cli_writes_the_datalist(tmp_path, capsys):
    chest = make_chest(tmp_path / "data", [f"CHNCXR_{k:04d}_0" for k in range(1, 11)], size=(40, 30))
    (chest / "labels" / "CHNCXR_0001_0.txt").write_text(label_text(RATIOS[:5], count=6))
    assert "shenzhen_landmarks" in ADAPTERS
    out = tmp_path / "lists" / "chest.json"
    args = ["data", "adapt", "shenzhen_landmarks", str(tmp_path / "data"), "--out", str(out)]
    assert main(args + ["--option", "split=seeded", "--option", "seed=1"]) == 0
    assert "training: 7" in capsys.readouterr().out
    content = json.loads(out.read_text())
    first = next(i for k in ("training", "validation", "test") for i in content[k] if i["id"] == "CHNCXR_0001_0")
    assert first["image"] == "../data/chest/pngs/CHNCXR_0001_0.png"
    assert first["landmarks"][0] == [10.0, 15.0] and first["landmarks"][5] == [None, None]
    assert first["spacing"] == [None, None] and content["landmark_names"] == list(SHENZHEN_LANDMARK_NAMES)
    assert json.dumps(adapt("chest-landmarks", tmp_path / "data", split="seeded", seed=1)) == json.dumps(
        shenzhen_landmarks_datalist(tmp_path / "data", split="seeded", seed=1)
    )
    assert main(args) == 2  # 10 images: too few for the published split
    assert "leaving none for test" in capsys.readouterr().err
