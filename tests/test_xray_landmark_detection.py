"""The xray_landmark_detection bundle's own method, end to end on tiny data.

What every bundle meets (train learns, evaluate, inference, ``mimtl run``, 2-process gloo,
export, verify, models/ untouched, bad films refused) is tests/test_bundle_contract.py; this
module checks what is particular to this bundle, on the same tiny data (three bright marks = three
landmarks) and the same shared runs (``bundle_runs``, made once per session): conformal
calibration, errors in mm and px, per-landmark reports, points in mm from DICOM / datalist /
config spacing, overlays, each loss, annotations outside the film or missing, and the paper's
experiment grid. Nothing reads the demo data of the user cache; every output goes to a temporary
folder and the bundle's own ``models/`` must come out untouched.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from bundle_checks import (
    CKPT_FILES,
    assert_bundle_untouched,
    assert_ok,
    isolated_environment,
    mimtl_run,
    monai_bundle_run,
    snapshot,
)
from bundle_checks import LANDMARK_NAMES as NAMES
from bundle_checks import LANDMARK_SIZE as SIZE
from bundle_checks import landmark_film as _film
from bundle_checks import landmark_points as _points
from bundle_checks import rows as _rows
from PIL import Image

from mimtl.bundle import load_bundle, load_checkpoint
from mimtl.networks import HeatmapUNet

pytestmark = pytest.mark.slow
NAME = "xray_landmark_detection"
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / NAME


# ---------------------------------------------------------------------------------------- helpers
def _snapshot() -> dict:
    return snapshot(BUNDLE)


def _untouched(before: dict, written_under: Path) -> None:
    assert_bundle_untouched(BUNDLE, before, written_under)


def _settings(data, out: Path, **extra) -> dict:
    """Overrides that point a train/evaluate run at the tiny data and keep every output in ``out``: 1 epoch."""
    return data.settings(out, **{"max_epochs": 1, **extra})


def _predicted(rows: list[dict]) -> list[dict]:
    """The rows with a point: a briefly trained model may find no peak for one (empty cells, confidence 0)."""
    found = [r for r in rows if r["x_px"]]
    assert found, "no landmark was found on any film"
    assert all(float(r["confidence"]) == 0.0 for r in rows if not r["x_px"])
    return found


def _mimtl_run(config: str, overrides: dict, *extra: str) -> int:
    return mimtl_run(NAME, config, overrides, *extra)


def _network() -> HeatmapUNet:
    return HeatmapUNet(num_landmarks=3, encoder="efficientnet-lite0", in_channels=1, weights=None)


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _environment(tmp_path_factory):
    """One thread per process, the shipped bundle found by name, and no demo data anywhere."""
    with isolated_environment(tmp_path_factory.mktemp("empty_cache"), [NAME]):
        yield


@pytest.fixture(scope="module")
def data(bundle_runs):
    """16 grayscale 72x60 PNGs (8 train, 4 val, 4 test) with 3 landmarks each, spacing per film."""
    return bundle_runs.data(NAME)


@pytest.fixture(scope="module")
def trained(bundle_runs):
    """train.yaml (over common.yaml) by ``python -m monai.bundle run`` on the tiny films."""
    return bundle_runs.trained(NAME)


# ---------------------------------------------------------------------------------------- 1. MONAI's CLI
def test_training_reports_mre(trained):
    assert "Epoch: 2/2" in trained.log and "mre" in trained.log, trained.log[-3000:]
    assert sorted(p.name for p in trained.ckpt.parent.iterdir()) == CKPT_FILES
    _network().load_state_dict(load_checkpoint(trained.ckpt))


def test_calibrate_writes_radii_in_mm_next_to_the_weights(trained, data, tmp_path):
    """calibrate (train + evaluate + calibrate) on validation: radii in mm, written next to the weights."""
    before = _snapshot()
    ckpt_dir = tmp_path / "models"  # a copy: the shared run's folder keeps its one model.pt
    ckpt_dir.mkdir()
    shutil.copy(trained.ckpt, ckpt_dir / "model.pt")
    settings = {**data.settings(tmp_path / "calibration"), "ckpt_dir": str(ckpt_dir)}
    assert_ok(monai_bundle_run(NAME, "calibrate", settings))
    conformal = json.loads((ckpt_dir / "conformal.json").read_text())
    assert conformal["unit"] == "mm" and conformal["coverage"] == 0.9 and len(conformal["radius"]) == 3
    assert conformal["n_calibration"] == 4
    _untouched(before, tmp_path)


def test_evaluate_reports_errors_in_mm_per_landmark(bundle_runs, data):
    """evaluate on test: metrics.csv, per-landmark CSV, summary JSON with the coverage of the radii."""
    out = bundle_runs.evaluated(NAME).out
    thresholds = load_bundle(NAME).parser("evaluate").get_parsed_content("sdr_thresholds")
    metrics = dict(line.split(",") for line in (out / "eval" / "metrics.csv").read_text().split("\n") if line)
    assert set(metrics) == {"mre", *(f"sdr_{t:g}" for t in thresholds)}
    summary = json.loads((out / "eval" / "landmark_summary.json").read_text())
    assert summary["unit"] == "mm" and summary["n_images"] == 4
    assert summary["overall"]["mre"] == pytest.approx(float(metrics["mre"]), rel=1e-4)
    assert [p["name"] for p in summary["per_landmark"]] == NAMES
    assert 0.0 <= summary["conformal_coverage"]["overall"] <= 1.0
    errors = _rows(out / "eval" / "landmark_errors.csv")
    assert len(errors) == 4 * 3
    # a 2-epoch model may find no peak for a point (empty cells, confidence 0): check the rest
    predicted = [row for row in errors if row["error_px"]]
    assert predicted and all(float(row["confidence"]) == 0.0 for row in errors if not row["error_px"])
    for row in predicted:  # mm = px * 0.5 on these films
        assert float(row["error_mm"]) == pytest.approx(0.5 * float(row["error_px"]), abs=2e-3)
    per = _rows(out / "eval" / "landmark_metrics.csv")
    assert [r["landmark"] for r in per] == [*NAMES, "overall"]


def test_inference_of_pngs_in_px_with_overlays(bundle_runs, data, trained):
    """inference on a folder: CSV + JSON of points with confidence and radius, one overlay per film."""
    out = bundle_runs.inferred(NAME).out
    rows = _rows(out / "landmarks.csv")
    assert [r["file"] for r in rows] == [str(p) for p in data.tests for _ in NAMES]
    assert {r["status"] for r in rows} == {"ok"}
    # PNG films carry no spacing: px only, and the output says so; a radius in mm cannot be drawn
    assert {r["unit"] for r in rows} == {"px"} and {r["x_mm"] for r in rows} == {""}
    for r in _predicted(rows):
        # on the film: pixel centres run 0 .. size - 1, its edges are half a pixel beyond
        assert -0.5 <= float(r["x_px"]) <= SIZE[0] - 0.5 and -0.5 <= float(r["y_px"]) <= SIZE[1] - 0.5
        assert 0.0 <= float(r["confidence"]) <= 1.0
    report = json.loads((out / "landmarks.json").read_text())
    assert report["images"][0]["spacing_source"].startswith("unknown")
    overlays = sorted((out / "overlays").iterdir())
    assert [p.name for p in overlays] == [f"{p.stem}_landmarks.png" for p in data.tests]
    with Image.open(overlays[0]) as im:
        assert im.mode == "P" and im.size[0] > im.size[1]  # palette PNG in film orientation: 72 wide, 60 high
    _untouched(trained.before, trained.out)


def test_inference_in_mm_when_the_film_has_spacing(trained, data, tmp_path):
    """A DICOM with Pixel Spacing: coordinates in mm beside px, the radius in mm, drawn on the overlay."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "film.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    pixels = _film(_points(3), 3)
    ds.Modality, ds.SOPClassUID, ds.SOPInstanceUID = "DX", meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelSpacing = [0.25, 0.25]
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "film.dcm", enforce_file_format=True)
    conformal = tmp_path / "conformal.json"
    conformal.write_text(json.dumps({"coverage": 0.9, "unit": "mm", "radius": [1.0, 2.0, 3.0], "n_calibration": 9}))
    out = tmp_path / "out"
    settings = {
        "dataset_dir": str(data.root),
        "input": str(tmp_path / "film.dcm"),
        "ckpt_path": str(trained.ckpt),
        "conformal_file": str(conformal),
        "output_dir": str(out),
        "image_size": 64,
        "num_workers": 0,
        "landmark_names": NAMES,
    }
    assert _mimtl_run("inference", settings) == 0
    rows = _rows(out / "landmarks.csv")
    assert {r["unit"] for r in rows} == {"mm"}
    for r in _predicted(rows):
        assert float(r["x_mm"]) == pytest.approx(0.25 * float(r["x_px"]), abs=2e-3)
    assert [float(r["radius"]) for r in rows] == [1.0, 2.0, 3.0] and {r["radius_unit"] for r in rows} == {"mm"}
    assert (out / "overlays" / "film_landmarks.png").is_file()


def test_inference_takes_the_spacing_from_a_datalist_or_the_config(trained, data, tmp_path):
    """PNGs carry no spacing: a datalist's per-film spacing, or `pixel_spacing`, gives points and radii in mm."""
    conformal = tmp_path / "conformal.json"
    conformal.write_text(json.dumps({"coverage": 0.9, "unit": "mm", "radius": [1.0, 2.0, 3.0], "n_calibration": 9}))
    common = {
        "dataset_dir": str(data.root),
        "ckpt_path": str(trained.ckpt),
        "conformal_file": str(conformal),
        "image_size": 64,
        "num_workers": 0,
        "overlay": False,
    }
    for name, extra, mm_per_px, source in [
        # the training datalist also names the landmarks (the metadata names the shipped model's 11)
        (
            "datalist",
            {"input": str(data.datalist), "input_split": "test", "datalist": str(data.datalist)},
            0.5,
            "datalist 'spacing'",
        ),
        (
            "config",
            {"input": str(data.root / "test"), "pixel_spacing": 0.25, "landmark_names": NAMES},
            0.25,
            "default spacing (config)",
        ),
    ]:
        out = tmp_path / name
        assert _mimtl_run("inference", {**common, **extra, "output_dir": str(out)}) == 0
        rows = _rows(out / "landmarks.csv")
        assert [r["file"] for r in rows] == [str(p) for p in data.tests for _ in NAMES]
        assert {r["unit"] for r in rows} == {"mm"} and {r["spacing_source"] for r in rows} == {source}
        for r in _predicted(rows):
            assert float(r["x_mm"]) == pytest.approx(mm_per_px * float(r["x_px"]), abs=2e-3)
        assert {r["radius_unit"] for r in rows} == {"mm"} and [r["name"] for r in rows[:3]] == NAMES


# ---------------------------------------------------------------------------------------- 2. mimtl run
def test_mimtl_run_train_with_each_loss_and_learned_sigma(data, tmp_path):
    before = _snapshot()
    for i, extra in enumerate([{"loss_kind": "mse", "learn_sigma": True}, {"loss_kind": "disc_ce", "decoder": "blob"}]):
        out = tmp_path / f"run{i}"
        assert _mimtl_run("train", _settings(data, out, encoder="resnet18", **extra)) == 0
        assert (out / "models" / "model.pt").is_file()
    _untouched(before, tmp_path)


# ---------------------------------------------------------------------------------------- 3. multi-GPU config
def test_multi_gpu_train_saves_the_unet(bundle_runs):
    """multi_gpu_train on 2 gloo processes (the contract checks the rest): the U-Net, unwrapped, rank 0 only."""
    run = bundle_runs.multi_gpu(NAME)
    assert "--nproc_per_node=2" in run.log
    assert run.log.count("Key metric: mre best value") == 2, run.log[-5000:]  # rank 0 only, once per epoch
    state = load_checkpoint(run.out / "models" / "model.pt")
    assert not any(k.startswith("module.") for k in state)
    HeatmapUNet(num_landmarks=3, encoder="efficientnet-lite0", in_channels=1).load_state_dict(state)
    _untouched(run.before, run.out)


# ---------------------------------------------------------------------------------------- 5. bad input
# colour, 3D and NaN films are refused by every bundle: tests/test_bundle_contract.py
def _datalist_with(data, tmp_path, item_change) -> Path:
    splits = {k: [dict(i, image=str(data.root / i["image"])) for i in v] for k, v in data.splits.items()}
    item_change(splits["training"][2])
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"landmark_names": NAMES, **splits}))
    return path


def test_training_refuses_a_point_outside_its_film(data, tmp_path, capsys):
    def outside(item):
        item["landmarks"] = [item["landmarks"][0], [80.0, 10.0], item["landmarks"][2]]

    datalist = _datalist_with(data, tmp_path, outside)
    capsys.readouterr()
    code = _mimtl_run("train", _settings(data, tmp_path, datalist=str(datalist)))
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert "train_2.png" in err and "#1 at [80.0, 10.0] outside the 72x60 image" in err, err[-3000:]
    assert not (tmp_path / "models" / "model.pt").exists()
    # the same point marked missing on request: training runs
    code = _mimtl_run("train", _settings(data, tmp_path, datalist=str(datalist), outside="missing"))
    assert code == 0


def test_missing_landmarks_and_unknown_spacing_train_in_px(data, tmp_path, capsys):
    """NaN landmarks are left out of the loss; without spacing the metrics are in px, and said so."""
    splits = {
        k: [dict(i, image=str(data.root / i["image"]), spacing=[math.nan, math.nan]) for i in v]
        for k, v in data.splits.items()
    }
    splits["training"][0]["landmarks"][1] = [None, None]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"landmark_names": NAMES, **splits}))
    assert _mimtl_run("train", _settings(data, tmp_path, datalist=str(path))) == 0
    out = tmp_path / "evaluation"
    settings = {**_settings(data, out, datalist=str(path)), "ckpt_dir": str(tmp_path / "models")}
    assert _mimtl_run("evaluate", settings) == 0
    summary = json.loads((out / "eval" / "landmark_summary.json").read_text())
    assert summary["unit"] == "px" and summary["overall"]["n_missing"] == 0
    # a spacing the files do not carry, given in the config: the same errors, in mm
    assert _mimtl_run("evaluate", {**settings, "output_dir": str(out / "mm"), "pixel_spacing": 0.5}) == 0
    in_mm = json.loads((out / "mm" / "landmark_summary.json").read_text())
    assert in_mm["unit"] == "mm" and in_mm["overall"]["mre"] == pytest.approx(0.5 * summary["overall"]["mre"], rel=1e-4)


# ---------------------------------------------------------------------------------------- 6. the paper's experiment
def test_experiment_grid_compares_encoder_initialisations(trained, data, tmp_path):
    """experiment.yaml on 2 inits x 1 fraction, one seed: real train + evaluate runs, MRE and SDR tabulated.

    The in-domain level starts the encoder from another landmark model (the module's trained one),
    given as the prerequisite's output, so the prerequisite (a classification training) is not rerun.
    """
    before = _snapshot()
    out = tmp_path / "experiment"
    settings = {
        "output_dir": str(out),
        "seeds": [0],
        "image_size": 64,
        "pretrain::output": str(trained.ckpt),
        "experiment::factors::init::levels": {
            "scratch": {"encoder_weights": None},
            "in-domain": {"encoder_weights": str(trained.ckpt)},
        },
        "experiment::factors::fraction::levels": {"50%": {"train_fraction": 0.5, "max_epochs": 1, "val_interval": 1}},
        "experiment::overrides": {
            "image_size": "@image_size",
            "sigma": 2.0,
            "dataset_dir": str(data.root),
            "datalist": str(data.datalist),
            "batch_size": 4,
            "num_workers": 0,
        },
    }
    assert _mimtl_run("experiment", settings) == 0
    rows = _rows(out / "runs.csv")
    assert [(r["init"], r["fraction"], r["seed"]) for r in rows] == [("scratch", "50%", "0"), ("in-domain", "50%", "0")]
    for r in rows:
        assert float(r["mre"]) > 0 and 0.0 <= float(r["sdr_2"]) <= float(r["sdr_4"]) <= 1.0
        metrics = dict(
            line.split(",") for line in (out / "runs" / r["run"] / "eval" / "metrics.csv").read_text().split()
        )
        assert float(metrics["mre"]) == pytest.approx(float(r["mre"]), rel=1e-5)
    md = (out / "results.md").read_text()
    assert "| init | 50% |" in md and "| in-domain |" in md and "sdr_2" in md
    assert (out / "results.png").stat().st_size > 1000
    _untouched(before, out)
