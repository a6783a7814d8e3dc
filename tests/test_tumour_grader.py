"""Grading inference of the ACGAN method: grade head, one-pass grader, fitting, case listing, writer."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mimtl.networks.tumour_features import TumourFeatureExtractor, tumour_segresnet
from mimtl.networks.tumour_grader import (
    GradeHead,
    GradeHeadError,
    TumourGrader,
    load_grade_head,
    save_grade_head,
)


def _toy(n: int = 40, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.array([0] * (n * 3 // 4) + [1] * (n - n * 3 // 4))
    X = rng.normal(size=(n, d)) + y[:, None] * 1.5
    X[rng.random(X.shape) < 0.05] = np.nan
    return X, y


@pytest.fixture(scope="module")
def fitted():
    from mimtl.engines.feature_cv import VariantSpec, make_pipeline

    X, y = _toy()
    pipe = make_pipeline(VariantSpec(classifier_args={"epochs": 5, "hidden": (8,)}))
    pipe.fit(X, y)
    return pipe


def test_grade_head_matches_pipeline(fitted):
    head = GradeHead.from_pipeline(fitted)
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(12, 6)) * 2
    rows[rng.random(rows.shape) < 0.2] = np.nan
    with torch.no_grad():
        ours = torch.softmax(head(torch.as_tensor(rows, dtype=torch.float32)), dim=1).numpy()
    np.testing.assert_allclose(ours, fitted.predict_proba(rows), atol=1e-5)


def test_torchscript_head_and_generator(fitted, tmp_path):
    from mimtl.networks import FeatureGenerator

    head = GradeHead.from_pipeline(fitted)
    x = torch.randn(5, 6)
    x[0, 2] = float("nan")
    torch.jit.save(torch.jit.script(head), tmp_path / "head.ts")
    np.testing.assert_allclose(torch.jit.load(tmp_path / "head.ts")(x).detach(), head(x).detach(), atol=1e-6)

    torch.manual_seed(0)
    gen = FeatureGenerator(latent_size=4, num_classes=2, out_features=6, hidden=(8,)).eval()
    z, y = torch.randn(3, 4), torch.tensor([0, 1, 1])
    torch.jit.save(torch.jit.script(gen), tmp_path / "gen.ts")
    np.testing.assert_allclose(torch.jit.load(tmp_path / "gen.ts")(z, y).detach(), gen(z, y).detach(), atol=1e-6)


@pytest.mark.parametrize("pooling", ["mask", "both"])
def test_grader_pools_as_the_extractor(pooling):
    torch.manual_seed(0)
    net = tumour_segresnet(init_filters=8, blocks_down=(1, 1), blocks_up=(1,)).eval()
    n = net.init_filters * 2 * (2 if pooling == "both" else 1)
    grader = TumourGrader(net, GradeHead(n, 2, hidden=(4,)).eval(), pooling=pooling).eval()
    image = torch.randn(2, 4, 8, 8, 8)
    extractor = TumourFeatureExtractor(net, pooling, mask_source="prediction", empty_mask="global")
    with torch.no_grad():
        seg, pooled = grader.features(image)
        want = extractor(image)
        seg2, probs = grader(image)
    torch.testing.assert_close(pooled, want)
    torch.testing.assert_close(seg, net(image))
    assert probs.shape == (2, 2)
    scripted = torch.jit.script(grader)
    with torch.no_grad():
        torch.testing.assert_close(scripted(image)[1], probs)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="features"):
        TumourGrader(net, GradeHead(n + 1, 2), pooling=pooling)


def test_grader_empty_mask_falls_back_to_global():
    from mimtl.networks.tumour_grader import pool_bottleneck

    b = torch.randn(2, 3, 2, 2, 2)
    mask = torch.zeros(2, 1, 8, 8, 8)
    mask[0, 0, :4, :4, :4] = 1
    pooled, empty = pool_bottleneck(b, mask, "mask")
    assert empty.tolist() == [False, True]
    torch.testing.assert_close(pooled[1], b[1].mean(dim=(1, 2, 3)))
    torch.testing.assert_close(pooled[0], b[0, :, 0, 0, 0])


def test_save_load_round_trip_and_errors(fitted, tmp_path):
    head = GradeHead.from_pipeline(fitted)
    path = save_grade_head(head, tmp_path / "g.pt", ["LGG", "HGG"], {"n": np.int64(3), "ids": np.array(["a"])})
    assert torch.load(path, weights_only=True)["class_names"] == ["LGG", "HGG"]
    loaded, info = load_grade_head(path)
    assert info == {"n": 3, "ids": ["a"], "class_names": ["LGG", "HGG"]}
    x = torch.randn(3, 6)
    torch.testing.assert_close(loaded(x), head(x))
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_grade_head(tmp_path / "nothere.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(GradeHeadError, match="other.pt.*not a grade head"):
        load_grade_head(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(GradeHeadError, match="junk.pt"):
        load_grade_head(tmp_path / "junk.pt")


@pytest.mark.parametrize("sampler", [None, "smote"])
def test_fit_grader(tmp_path, sampler):
    from mimtl.engines.grader import fit_grader

    X, y = _toy(40)
    ids = np.array([f"c{i:02d}" for i in range(40)])
    np.savez(tmp_path / "f.npz", features=X, label=y, case_ids=ids)
    test = [f"c{i:02d}" for i in (0, 1, 2, 3, 35, 36)]
    train = [c for c in ids if c not in test]
    out = fit_grader(
        tmp_path / "f.npz",
        tmp_path / "models" / "grader.pt",
        train_ids=train,
        test_ids=test,
        sampler=sampler,
        classifier={"epochs": 3, "hidden": (8,)},
        metrics_path=tmp_path / "m.json",
    )
    assert out["n_train"] == 34 and out["n_test"] == 6
    assert 0 <= out["metrics"]["balanced_accuracy"] <= 1 and "recall_1" in out["metrics"]
    head, info = load_grade_head(tmp_path / "models" / "grader.pt")
    assert info["class_names"] == ["0", "1"] and info["n_features"] == 6
    assert info["sampler"] == sampler and info["train_case_ids"] == train
    assert (tmp_path / "m.json").is_file()


def test_fit_grader_acgan_and_errors(tmp_path):
    from mimtl.data.feature_table import FeatureTableError
    from mimtl.engines.grader import fit_grader

    X, y = _toy(24)
    ids = np.array([f"c{i}" for i in range(24)])
    np.savez(tmp_path / "f.npz", features=X, label=y, case_ids=ids)
    out = fit_grader(
        tmp_path / "f.npz",
        tmp_path / "g.pt",
        sampler="acgan",
        classifier={"epochs": 2, "hidden": (4,)},
        sampler_args={"epochs": 2, "hidden": (8,), "latent_size": 4},
    )
    assert out["n_train"] == 24
    with pytest.raises(ValueError, match=r"f\.npz.*nope"):
        fit_grader(tmp_path / "f.npz", tmp_path / "g.pt", train_ids=["c1", "nope"], sampler=None)
    with pytest.raises(ValueError, match="one class"):
        fit_grader(tmp_path / "f.npz", tmp_path / "g.pt", train_ids=["c0", "c1", "c2"], sampler=None)
    with pytest.raises(FeatureTableError, match="f.npz.*features"):
        fit_grader(tmp_path / "f.npz", tmp_path / "g.pt", sampler=None, expected_features=16)


# -- case listing ------------------------------------------------------------------------------------


def _nii(path: Path, shape=(8, 8, 8)) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def _brats(folder: Path, names=("flair", "t1", "t1ce", "t2"), sep="_", ext=".nii.gz") -> Path:
    for n in (*names, "seg"):
        _nii(folder / f"{folder.name}{sep}{n}{ext}")
    return folder


def test_list_cases_brats_folders(tmp_path):
    from mimtl.data.mri_cases import list_mri_cases

    case = _brats(tmp_path / "all" / "BraTS_002")
    [item] = list_mri_cases(case)
    assert item["name"] == "BraTS_002" and item["file"] == str(case)
    assert [Path(p).name for p in item["image"]] == [f"BraTS_002_{s}.nii.gz" for s in ("flair", "t1", "t1ce", "t2")]
    assert "error" not in item

    # BraTS 2023 names, .nii, given in another order: channels still flair, t1, t1ce, t2
    _brats(tmp_path / "all" / "BraTS-GLI-001", names=("t1c", "t2w", "t1n", "t2f"), sep="-", ext=".nii")
    _brats(tmp_path / "all" / "BraTS_003", names=("flair", "t1", "t1ce"))  # no t2
    items = list_mri_cases(tmp_path / "all")
    assert [i["name"] for i in items] == ["BraTS-GLI-001", "BraTS_002", "BraTS_003"]
    assert [Path(p).name.split("-")[-1] for p in items[0]["image"]] == ["t2f.nii", "t1n.nii", "t1c.nii", "t2w.nii"]
    assert "t2" in items[2]["error"] and "BraTS_003" in items[2]["error"]
    assert "error" not in items[0] and "error" not in items[1]


def test_list_cases_4d_dicom_datalist_and_missing(tmp_path):
    import json

    from mimtl.data.mri_cases import CaseListingError, RaiseCaseError, list_mri_cases

    f4 = _nii(tmp_path / "vols" / "a.nii.gz", (8, 8, 8, 4))
    _nii(tmp_path / "vols" / "b.nii.gz", (8, 8, 8))
    assert list_mri_cases(f4) == [{"image": str(f4), "name": "a", "file": str(f4)}]
    items = list_mri_cases(tmp_path / "vols")
    assert [i["name"] for i in items] == ["a", "b"] and "4D" in items[1]["error"]

    dicom = tmp_path / "dicom" / "P1"
    for seq in ("FLAIR", "T1", "T1CE", "t2"):
        (dicom / seq).mkdir(parents=True)
        (dicom / seq / "1.dcm").write_bytes(b"")
    [item] = list_mri_cases(dicom)
    assert [Path(p).name for p in item["image"]] == ["FLAIR", "T1", "T1CE", "t2"] and "error" not in item
    [item] = list_mri_cases(tmp_path / "dicom")
    assert item["name"] == "P1"

    datalist = tmp_path / "dl" / "list.json"
    datalist.parent.mkdir()
    datalist.write_text(json.dumps({"test": [{"image": ["x/1.nii.gz", "x/2.nii.gz"], "grade": "HGG"}], "training": []}))
    [item] = list_mri_cases(datalist)
    assert item["image"][0] == str(tmp_path / "dl" / "x" / "1.nii.gz") and item["grade"] == "HGG"
    assert item["name"] == "x"

    with pytest.raises(FileNotFoundError, match="missing_input"):
        list_mri_cases(tmp_path / "missing_input")
    with pytest.raises(CaseListingError, match="4D"):
        RaiseCaseError()(items[1])
    assert RaiseCaseError()(items[0]) == {k: v for k, v in items[0].items() if k != "error"}


# -- the writer --------------------------------------------------------------------------------------


def test_grade_writer(tmp_path):
    from monai.data import MetaTensor
    from PIL import Image

    from mimtl.handlers.grading import TumourGradeWriter

    affine = torch.diag(torch.tensor([1.0, 1.0, 2.0, 1.0]))
    image = MetaTensor(
        torch.rand(4, 8, 8, 8), affine=affine, meta={"filename_or_obj": "/d/BraTS_1/BraTS_1_flair.nii.gz"}
    )
    seg = torch.zeros(4, 8, 8, 8)
    seg[0] = 1.0
    seg[3, 2:4, 2:4, 5] = 5.0  # 4 voxels of label 4 on slice 5
    seg[1, 6, 6, 6] = 5.0  # 1 voxel of label 1
    failed = MetaTensor(torch.zeros(4, 8, 8, 8), meta={"filename_or_obj": "/d/BraTS_2/BraTS_2_flair.nii.gz"})
    batch = [
        {"image": image, "error": "", "name": "BraTS_1", "file": "/d/BraTS_1"},
        {"image": failed, "error": "CaseListingError: case BraTS_2: no t2 sequence file", "name": "", "file": ""},
    ]
    output = [
        {"image": image, "pred": [seg, torch.tensor([0.3, 0.7])]},
        {"image": failed, "pred": [torch.zeros(4, 8, 8, 8), torch.tensor([0.5, 0.5])]},
    ]
    writer = TumourGradeWriter(tmp_path, ["LGG", "HGG"])
    writer.reset()
    writer(SimpleNamespace(state=SimpleNamespace(batch=batch, output=output)))
    writer.write()
    with open(tmp_path / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "file",
        "status",
        "grade",
        "probability",
        "p_LGG",
        "p_HGG",
        "tumour_ml",
        "mask",
        "overlay",
        "note",
    ]
    assert rows[0]["file"] == "/d/BraTS_1" and rows[0]["status"] == "ok"
    assert rows[0]["grade"] == "HGG" and rows[0]["probability"] == "0.7000" and rows[0]["p_LGG"] == "0.3000"
    assert float(rows[0]["tumour_ml"]) == pytest.approx(5 * 2.0 / 1000)
    assert rows[1]["file"] == "/d/BraTS_2/BraTS_2_flair.nii.gz"
    assert rows[1]["status"] == "failed: CaseListingError: case BraTS_2: no t2 sequence file" and rows[1]["grade"] == ""

    import nibabel as nib

    mask = nib.load(rows[0]["mask"])
    assert Path(rows[0]["mask"]) == tmp_path / "masks" / "BraTS_1_seg.nii.gz"
    np.testing.assert_allclose(mask.affine, affine.numpy())
    data = np.asarray(mask.dataobj)
    assert sorted(np.unique(data).tolist()) == [0, 1, 4] and (data == 4).sum() == 4
    png = Image.open(rows[0]["overlay"])
    assert Path(rows[0]["overlay"]) == tmp_path / "overlays" / "BraTS_1.png" and min(png.size) >= 256
    assert not (tmp_path / "overlays" / "BraTS_2.png").exists()


def test_grading_run_end_to_end(tmp_path):
    """list_mri_cases -> TolerantDataset -> SupervisedEvaluator(TumourGrader) -> TumourGradeWriter."""
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator
    from monai.transforms import Compose, EnsureTyped, LoadImaged

    from mimtl.data import TolerantDataset, tolerant_collate
    from mimtl.data.mri_cases import RaiseCaseError, list_mri_cases
    from mimtl.handlers.grading import TumourGradeWriter

    for name in ("BraTS_1", "BraTS_2"):
        _brats(tmp_path / "in" / name)
    _brats(tmp_path / "in" / "BraTS_3", names=("flair", "t1", "t1ce"))
    cases = list_mri_cases(tmp_path / "in")
    transform = Compose([RaiseCaseError(), LoadImaged("image", ensure_channel_first=True), EnsureTyped("image")])
    dataset = TolerantDataset(
        cases, transform, placeholder_shape=(4, 8, 8, 8), placeholder_values={"name": "", "file": ""}
    )
    loader = DataLoader(dataset, batch_size=2, collate_fn=tolerant_collate)
    torch.manual_seed(0)
    net = tumour_segresnet(init_filters=8, blocks_down=(1, 1), blocks_up=(1,)).eval()
    grader = TumourGrader(net, GradeHead(16, 2, hidden=(4,)).eval())
    writer = TumourGradeWriter(tmp_path / "out", ["LGG", "HGG"])
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=grader, decollate=True)
    writer.attach(evaluator)
    evaluator.run()
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows[:2]] == ["ok", "ok"]
    assert rows[2]["status"].startswith("failed: CaseListingError: case BraTS_3: no t2")
    assert rows[0]["file"] == str(tmp_path / "in" / "BraTS_1") and rows[0]["grade"] in ("LGG", "HGG")
    assert float(rows[0]["tumour_ml"]) >= 0 and (tmp_path / "out" / "masks" / "BraTS_2_seg.nii.gz").is_file()
    assert (tmp_path / "out" / "overlays" / "BraTS_1.png").is_file()
