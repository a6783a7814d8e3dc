"""Brain tumour grading demo data (mimtl.sim.brain): layout, labels, contrasts, determinism.

Built from the real MNI152 template (fetched from the nilearn wheel on first use, ~2 s), on a
small 4 mm grid so that every build takes a few seconds.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mimtl.sim.brain import (
    BRATS2020_HGG_FRACTION,
    BRATS_ROOT,
    MODALITIES,
    NAME_MAPPING_HEADER,
    build_brain_tumours,
)

SMALL = {"shape": (48, 56, 48), "spacing": 4.0, "progress": False}
N = 8


def _build(root: Path, n: int = N, seed: int = 0, hgg_fraction: float = 0.5) -> Path:
    return build_brain_tumours(root, n=n, seed=seed, hgg_fraction=hgg_fraction, **SMALL)


@pytest.fixture(scope="module")
def datalist(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("a") / "brain")


def _items(datalist: Path, suffix: str = "") -> list[dict]:
    d = json.loads(datalist.read_text())
    return sorted((i for part in ("training", "validation", "test") for i in d[part + suffix]), key=lambda i: i["name"])


def _load(root: Path, item: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    images = {m: np.asarray(nib.load(root / p).dataobj) for m, p in zip(MODALITIES, item["image"])}
    return images, np.asarray(nib.load(root / item["label"]).dataobj)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_name_mapping(datalist):
    root = datalist.parent
    names = [f"BraTS20_Training_{i:03d}" for i in range(1, N + 1)]
    assert sorted(p.name for p in (root / BRATS_ROOT).iterdir()) == sorted(names + ["name_mapping.csv"])
    for name in names:
        files = sorted(p.name for p in (root / BRATS_ROOT / name).iterdir())
        assert files == sorted(f"{name}_{k}.nii.gz" for k in (*MODALITIES, "seg"))
        assert sorted(p.name for p in (root / "slices").glob(f"{name}_*.png")) == sorted(
            f"{name}_{k}.png" for k in (*MODALITIES, "seg")
        )
    with (root / BRATS_ROOT / "name_mapping.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == NAME_MAPPING_HEADER
    assert rows[0] == [
        "Grade",
        "BraTS_2017_subject_ID",
        "BraTS_2018_subject_ID",
        "TCGA_TCIA_subject_ID",
        "BraTS_2019_subject_ID",
        "BraTS_2020_subject_ID",
    ]
    grades = {r[5]: r[0] for r in rows[1:]}
    assert {i["name"]: i["grade"] for i in _items(datalist)} == grades  # the grade comes from the mapping
    assert (root / "contact_sheet.png").is_file()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temporary build left


def test_datalist(datalist):
    root, d = datalist.parent, json.loads(datalist.read_text())
    parts = [[i["name"] for i in d[p]] for p in ("training", "validation", "test")]
    assert sorted(name for part in parts for name in part) == [
        f"BraTS20_Training_{i:03d}" for i in range(1, N + 1)
    ]  # disjoint, complete
    for part in ("training", "validation", "test"):
        assert [i["name"] for i in d[part]] == [i["name"] for i in d[part + "_2d"]]
        # stratified 70/15/15: 4 HGG and 4 LGG -> 2 / 1 / 1 of each grade
        per_grade = 2 if part == "training" else 1
        assert sorted(i["grade"] for i in d[part]) == ["HGG"] * per_grade + ["LGG"] * per_grade
        for item in d[part] + d[part + "_2d"]:
            assert len(item["image"]) == 4 and all((root / p).is_file() for p in item["image"])
            assert (root / item["label"]).is_file()
            assert [Path(p).name.rsplit("_", 1)[1].split(".")[0] for p in item["image"]] == list(MODALITIES)
            assert item["grade_label"] == int(item["grade"] == "HGG")


def test_volumes_and_labels(datalist):
    root = datalist.parent
    for item in _items(datalist):
        images, seg = _load(root, item)
        img = nib.load(root / item["label"])
        assert img.shape == SMALL["shape"] and np.allclose(img.header.get_zooms(), 4.0)
        assert seg.dtype == np.uint8 and all(a.dtype == np.int16 for a in images.values())
        labels = set(np.unique(seg).tolist())
        assert labels <= {0, 1, 2, 4}
        if item["phenotype"] == "typical" and item["grade"] == "HGG":
            assert {1, 2, 4} <= labels  # necrosis, oedema and an enhancing rim
        elif item["phenotype"] == "patchy-enhancement":  # an LGG with enhancing patches
            assert item["grade"] == "LGG" and {1, 4} <= labels
        else:  # a typical LGG, or a non-enhancing HGG
            assert 1 in labels and 4 not in labels
        assert (images["flair"][seg > 0] > 0).all()  # tumours lie inside the (skull-stripped) brain
        # the 2D slice goes through the tumour and matches the volume
        item2d = next(i for i in _items(datalist, "_2d") if i["name"] == item["name"])
        seg2d = np.asarray(Image.open(root / item2d["label"]))
        assert seg2d.dtype == np.uint8 and (seg2d > 0).any()
        assert np.array_equal(np.sort(seg2d.ravel()), np.sort(seg[:, :, item2d["slice"]].ravel()))
        t1ce2d = np.asarray(Image.open(root / item2d["image"][2]))
        assert np.array_equal(np.sort(t1ce2d.ravel()), np.sort(images["t1ce"][:, :, item2d["slice"]].ravel()))


def test_grade_contrasts(datalist):
    """Typical HGG enhance on T1ce and have a fluid-like core; patchy LGG enhance in parts; the others do not enhance;
    oedema is FLAIR-bright."""
    root = datalist.parent
    for item in _items(datalist):
        images, seg = _load(root, item)
        t1, t1ce, t2, flair = (images[m].astype(float) for m in ("t1", "t1ce", "t2", "flair"))
        normal = (seg == 0) & (t1 > 0)
        wm = normal & (t1 > np.percentile(t1[normal], 75))  # the brightest T1 tissue is white matter
        assert flair[seg == 2].mean() > 1.2 * flair[normal].mean()
        if item["phenotype"] == "typical" and item["grade"] == "HGG":
            assert t1ce[seg == 4].mean() > 1.2 * t1ce[wm].mean()
            assert t1[seg == 1].mean() < 0.6 * t1[wm].mean() and t2[seg == 1].mean() > t2[wm].mean()
        elif item["phenotype"] == "patchy-enhancement":
            assert t1ce[seg == 4].mean() > t1ce[seg == 1].mean()  # the patches enhance, the rest does not
        else:
            assert t1ce[seg == 1].mean() < t1ce[wm].mean()
            assert t2[seg == 1].mean() > 1.3 * t2[wm].mean()


def test_grades_overlap(datalist):
    """Both atypical phenotypes occur at their documented shares (8 cases: 1 of 4 HGG, 1 of 4 LGG)."""
    phenotypes = {(i["grade"], i["phenotype"]) for i in _items(datalist)}
    assert ("HGG", "non-enhancing") in phenotypes and ("LGG", "patchy-enhancement") in phenotypes
    counts = [i["phenotype"] for i in _items(datalist)]
    assert counts.count("non-enhancing") == 1 and counts.count("patchy-enhancement") == 1


def test_class_ratio(tmp_path):
    grades = [i["grade"] for i in _items(_build(tmp_path / "b", n=10, hgg_fraction=0.3))]
    assert grades.count("HGG") == 3 and grades.count("LGG") == 7
    assert BRATS2020_HGG_FRACTION == pytest.approx(293 / 369)


def test_deterministic(datalist, tmp_path):
    same = _build(tmp_path / "same")
    assert _digests(same.parent) == _digests(datalist.parent)
    other = _digests(_build(tmp_path / "other", seed=1).parent)
    reference = _digests(datalist.parent)
    volumes = [k for k in reference if k.endswith(".nii.gz")]
    assert all(other[k] != reference[k] for k in volumes)


def test_replaces_own_build_refuses_other_folders(tmp_path):
    out = tmp_path / "brain"
    _build(out, n=2, seed=0)
    first = _digests(out)
    _build(out, n=2, seed=3)  # an earlier build is replaced as a whole
    assert _digests(out).keys() == first.keys() and _digests(out) != first
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        _build(tmp_path / "mine", n=1)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brain", "mine"]


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    import mimtl.sim.brain as brain

    out = tmp_path / "brain"
    _build(out, n=1)
    before = _digests(out)

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(brain, "_write_sheet", fail)  # dies after all cases are written
    with pytest.raises(KeyboardInterrupt):
        _build(out, n=2, seed=1)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "new", n=1)
    assert _digests(out) == before  # the earlier build is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brain"]  # no half data set, no temporary folder
