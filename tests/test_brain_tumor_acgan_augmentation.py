"""The ACGAN feature-augmentation bundle's own method, end to end on tiny data.

What every bundle meets (train learns, evaluate, inference, ``mimtl run``, 2-process gloo, export,
verify, models/ untouched, bad volumes refused) is tests/test_bundle_contract.py; this module checks
what is particular to this one: the chained stages through ``python -m monai.bundle run``, features
that are deterministic and carry their provenance, the comparison on a feature table the bundle
never saw, the grading head that inference uses, and the bad inputs of stages 2 and 3 (a case
without tumour voxels, a one-class label column, too few cases per class). Nothing reads the demo
data of the user cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_checks import assert_ok, isolated_environment, mimtl_run, monai_bundle_run, rows, write_datalist

from mimtl.bundle import load_bundle

pytestmark = pytest.mark.slow
NAME = "brain_tumor_acgan_augmentation"
#: stage settings small enough for the tiny data (8 + 8 cases)
FAST = {"folds": 2, "repeats": 1, "k_neighbors": 3, "gan": ["wgan-gp"], "ratios": [1.0]}
FAST_FITS = {"gan_args": {"epochs": 5}, "classifier": {"epochs": 10}}


@pytest.fixture(scope="module", autouse=True)
def _environment(tmp_path_factory):
    with isolated_environment(tmp_path_factory.mktemp("empty_cache"), [NAME]):
        yield


@pytest.fixture(scope="module")
def chained(bundle_runs, tmp_path_factory):
    """train -> features -> compare by ``python -m monai.bundle run`` on common.yaml + run.yaml."""
    data = bundle_runs.data(NAME)
    out = tmp_path_factory.mktemp("chain")
    settings = {"max_epochs": 2, "batch_size": 2, "num_workers": 0, **FAST, **FAST_FITS}
    result = monai_bundle_run(
        NAME,
        "run",
        {
            "dataset_dir": str(data.root),
            "ckpt_dir": str(out / "models"),
            "output_dir": str(out / "eval"),
            "settings": json.dumps(settings),
        },
        configs=["common.yaml", "run.yaml"],
    )
    assert_ok(result)
    return data, out, result


def test_chain_runs_every_stage_and_writes_the_comparison(chained):
    data, out, _ = chained
    assert (out / "models" / "model.pt").is_file() and (out / "models" / "training_log.csv").is_file()
    table = np.load(out / "eval" / "features.npz")
    names = [i["name"] for k in ("training", "validation", "test") for i in data.splits[k]]
    assert table["case_ids"].tolist() == names
    assert table["features"].shape == (len(names), 64) and np.isfinite(table["features"]).all()
    assert sorted(set(table["label"].tolist())) == ["HGG", "LGG"]
    provenance = json.loads((out / "eval" / "features.json").read_text())
    assert provenance["case_ids"] == names and len(provenance["model_sha256"]) == 64
    comparison = (out / "eval" / "comparison" / "comparison.md").read_text()
    for variant in ("none", "class-weighted", "smote", "wgan-gp@1"):
        assert f"| {variant} |" in comparison, comparison
    folds = rows(out / "eval" / "comparison" / "folds.csv")
    assert len(folds) == 2 * len({r["variant"] for r in folds})  # 2 folds x 1 repeat per variant


def test_chain_resumes_after_its_last_finished_stage(bundle_runs, chained, tmp_path):
    """resume: a stage whose output exists is not run again (no training, no feature extraction)."""
    data, out, _ = chained
    before = {p: p.stat().st_mtime_ns for p in [out / "models" / "model.pt", out / "eval" / "features.npz"]}
    (out / "eval" / "comparison" / "comparison.md").unlink()
    result = monai_bundle_run(
        NAME,
        "run",
        {
            "dataset_dir": str(data.root),
            "ckpt_dir": str(out / "models"),
            "output_dir": str(out / "eval"),
            "settings": json.dumps({**FAST, **FAST_FITS}),
            "resume": True,
        },
        configs=["common.yaml", "run.yaml"],
    )
    assert_ok(result)
    assert (out / "eval" / "comparison" / "comparison.md").is_file()
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_features_are_deterministic(bundle_runs, chained, tmp_path):
    """The same weights and data give the same bytes, and the provenance names the weights."""
    data, out, _ = chained
    common = {"dataset_dir": str(data.root), "ckpt_dir": str(out / "models")}
    for run in ("a", "b"):
        assert mimtl_run(NAME, "features", {**common, "output_dir": str(tmp_path / run)}) == 0
    assert (tmp_path / "a" / "features.npz").read_bytes() == (tmp_path / "b" / "features.npz").read_bytes()
    assert (tmp_path / "a" / "features.npz").read_bytes() == (out / "eval" / "features.npz").read_bytes()
    from mimtl.engines.feature_extraction import state_dict_sha256
    from mimtl.networks.tumour_features import tumour_segresnet

    net = tumour_segresnet(weights=str(out / "models" / "model.pt"))
    assert json.loads((tmp_path / "a" / "features.json").read_text())["model_sha256"] == state_dict_sha256(net)


def test_grader_head_is_fitted_on_training_cases_and_used_by_inference(chained, tmp_path):
    data, out, _ = chained
    grader = tmp_path / "grader.pt"
    settings = {
        "dataset_dir": str(data.root),
        "ckpt_dir": str(out / "models"),
        "output_dir": str(tmp_path),
        "features": str(out / "eval" / "features.npz"),
        "grader_path": str(grader),
        "grader_sampler": "smote",  # SMOTE's default k=5 fits the 6 training LGG
        **FAST_FITS,
    }
    assert mimtl_run(NAME, "grader", settings) == 0
    from mimtl.networks.tumour_grader import load_grade_head

    head, info = load_grade_head(grader)
    train_names = [i["name"] for k in ("training", "validation") for i in data.splits[k]]
    assert info["class_names"] == ["HGG", "LGG"] and sorted(info["train_case_ids"]) == sorted(train_names)
    metrics = json.loads((tmp_path / "grader_metrics.json").read_text())
    assert metrics["n_test"] == len(data.splits["test"])
    # inference with this head: a grade and a probability per test case, a mask and an overlay
    code = mimtl_run(
        NAME,
        "inference",
        data.inference_settings(out / "models" / "model.pt", tmp_path / "inf", grader_path=str(grader)),
    )
    assert code == 0
    got = rows(tmp_path / "inf" / "grades.csv")
    assert [r["status"] for r in got] == ["ok"] * len(data.tests)
    assert {r["grade"] for r in got} <= {"HGG", "LGG"}
    for r in got:
        assert 0.5 <= float(r["probability"]) <= 1.0
        assert abs(float(r["p_HGG"]) + float(r["p_LGG"]) - 1) < 1e-5
        assert Path(r["mask"]).is_file() and Path(r["overlay"]).is_file()
        seg = nib.load(r["mask"])
        assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 4}


def test_compare_runs_on_a_table_the_bundle_never_saw(tmp_path, capsys):
    """A lab's own CSV: a categorical column one-hot encoded, missing values imputed in the folds."""
    rng = np.random.default_rng(0)
    lines = ["case,grade,site,age,f1,f2,f3"]
    for i in range(40):
        high = i % 4 != 0
        values = rng.normal(1.0 if high else -1.0, 1.0, 3)
        age = "" if i % 7 == 0 else f"{rng.integers(30, 80)}"
        lines.append(
            f"c{i},{'high' if high else 'low'},{['A', 'B'][i % 2]},{age}," + ",".join(f"{v:.4f}" for v in values)
        )
    table = tmp_path / "lab_features.csv"
    table.write_text("\n".join(lines) + "\n")
    settings = {
        "features": str(table),
        "label": "grade",
        "id_column": "case",
        "output_dir": str(tmp_path / "out"),
        **FAST,
        **FAST_FITS,
    }
    assert mimtl_run(NAME, "compare", settings) == 0
    text = (tmp_path / "out" / "comparison" / "comparison.md").read_text()
    assert "40 cases (high: 30, low: 10)" in text and "One-hot encoded" in text and '"age": 6' in text
    assert "| smote |" in text and "| wgan-gp@1 |" in text


@pytest.mark.parametrize(
    "labels,reason",
    [
        (["a"] * 12, "one class only"),
        (["a"] * 11 + ["b"], "has 1 case(s)"),
    ],
)
def test_compare_refuses_unusable_labels_naming_them(tmp_path, capsys, labels, reason):
    table = tmp_path / "t.csv"
    table.write_text("y,f1\n" + "".join(f"{y},{i}\n" for i, y in enumerate(labels)))
    capsys.readouterr()
    code = mimtl_run(NAME, "compare", {"features": str(table), "label": "y", "output_dir": str(tmp_path / "o"), **FAST})
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert reason in err and "'y'" in err and "Traceback" not in err


def test_a_case_without_tumour_voxels_is_named(bundle_runs, chained, tmp_path, capsys):
    """Mask pooling has nothing to pool in an empty mask: exit 2 naming the case (or global pooling on request)."""
    data, out, _ = chained
    empty = tmp_path / "empty_seg.nii.gz"
    first = data.splits["test"][0]
    ref = nib.load(first["label"])
    nib.save(nib.Nifti1Image(np.zeros(ref.shape, np.uint8), ref.affine), empty)
    splits = {k: [dict(i, image=str(data.root / i["image"])) for i in v] for k, v in data.splits.items()}
    splits["test"][0]["label"] = str(empty)
    datalist = write_datalist(tmp_path / "datalist.json", {}, **splits)
    common = {
        "dataset_dir": str(data.root),
        "datalist": str(datalist),
        "ckpt_dir": str(out / "models"),
        "output_dir": str(tmp_path / "o"),
    }
    capsys.readouterr()
    assert mimtl_run(NAME, "features", common) == 2
    err = capsys.readouterr().err
    assert f"case {first['name']}" in err and "no voxel" in err and "Traceback" not in err
    assert mimtl_run(NAME, "features", {**common, "empty_mask": "global"}) == 0
    provenance = json.loads((tmp_path / "o" / "features.json").read_text())
    assert provenance["empty_mask_fallback_cases"] == [first["name"]]


def test_experiment_config_runs_the_minority_sweep(tmp_path):
    rng = np.random.default_rng(1)
    y = np.array(["HGG"] * 30 + ["LGG"] * 12)
    x = rng.normal(0, 1, (len(y), 4)) + (y == "HGG")[:, None] * 1.5
    np.savez(tmp_path / "f.npz", features=x.astype(np.float32), label=y)
    settings = {
        "features": str(tmp_path / "f.npz"),
        "output_dir": str(tmp_path / "exp"),
        "minority_sizes": [8, 12],
        "seeds": [0],
        "folds": 2,
        "gan": ["wgan-gp"],
        "k_neighbors": 2,
        **FAST_FITS,
    }
    assert mimtl_run(NAME, "experiment", settings) == 0
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert set(summary["none"]) == {"8", "12"}
    assert (tmp_path / "exp" / "results.png").is_file()
    assert len(rows(tmp_path / "exp" / "runs.csv")) == 2 * 2 * len(summary)


def test_brats_override_names_cases_by_their_brats_id():
    bundle = load_bundle(NAME)
    override = bundle.path / "configs" / "data" / "brats.yaml"
    parser = bundle.parser("features", extra=[override])
    assert parser["case_key"] == "id" and parser["grade_key"] == "grade"
    assert parser["sequences"] == ["flair", "t1", "t1ce", "t2"]  # the adapter's order


def test_classifier_head_and_generator_export_to_torchscript(tmp_path):
    from mimtl.networks import FeatureGenerator
    from mimtl.networks.tumour_grader import GradeHead

    for net, args in (
        (GradeHead(64, 2), (torch.randn(3, 64),)),
        (FeatureGenerator(32, 2, 64), (torch.randn(3, 32), torch.tensor([0, 1, 1]))),
    ):
        net.eval()
        scripted = torch.jit.script(net)
        scripted.save(str(tmp_path / "m.ts"))
        loaded = torch.jit.load(str(tmp_path / "m.ts"))
        torch.testing.assert_close(loaded(*args), net(*args))


def _dicom_series(folder: Path, volume: np.ndarray, spacing: float) -> None:
    """``volume`` (z, y, x) as one MR series of axial slices, uncompressed 16 bit."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    for z, plane in enumerate(volume.astype(np.uint16)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{z:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.InstanceNumber = "MR", "p1", z + 1
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series, study, frame
        ds.Rows, ds.Columns = plane.shape
        ds.PixelSpacing, ds.SliceThickness = [spacing, spacing], spacing
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, spacing * z], [1, 0, 0, 0, 1, 0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = plane.tobytes()
        ds.save_as(folder / f"{z:03d}.dcm", enforce_file_format=True)


def test_inference_reads_a_case_of_dicom_series(bundle_runs, tmp_path):
    """A case folder with one DICOM series per sequence (as a scanner exports it) gets a grade and a mask."""
    from bundle_checks import BRAIN_VOXEL, brain_case

    data = bundle_runs.data(NAME)
    image, _ = brain_case(99, hgg=True)  # (x, y, z, 4)
    for c, sequence in enumerate(["FLAIR", "T1", "T1ce", "T2"]):  # scanner-style folder names
        _dicom_series(tmp_path / "cases" / "patient1" / sequence, np.clip(image[..., c], 0, None).T * 10, BRAIN_VOXEL)
    ckpt = bundle_runs.trained(NAME).ckpt
    settings = data.inference_settings(ckpt, tmp_path / "out", input=str(tmp_path / "cases"))
    assert mimtl_run(NAME, "inference", settings) == 0
    (row,) = rows(tmp_path / "out" / "grades.csv")
    assert row["file"] == str(tmp_path / "cases" / "patient1") and row["status"] == "ok", row
    assert row["grade"] in {"HGG", "LGG"} and Path(row["mask"]).is_file()
