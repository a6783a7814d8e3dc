"""The shipped xray_landmark_detection bundle end to end, on tiny data made here.

Every config of the bundle runs for real (train, evaluate, calibrate, inference, multi-GPU train on
two gloo processes, export, verify), the way a user runs it: ``python -m monai.bundle run``,
``mimtl run``, torchrun. Nothing reads the demo data of the user cache: runs are pointed at 16
small PNGs written by the module fixture (three bright marks = three landmarks), and every
output goes to a temporary folder. The bundle's own ``models/`` must come out of it untouched.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import mimtl.sim.demo
from mimtl.bundle import export_bundle, load_bundle, load_checkpoint, verify_bundle
from mimtl.cli import main
from mimtl.networks import HeatmapUNet
from bundle_checks import assert_bundle_untouched, set_args, snapshot

NAME = "xray_landmark_detection"
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / NAME
NAMES = ["apex", "carina", "dome"]
SPLITS = {"training": ("train", 8), "validation": ("val", 4), "test": ("test", 4)}
SIZE = (72, 60)  # [x, y] of the films; the bundle resizes them to image_size
TIMEOUT = 600


# ---------------------------------------------------------------------------------------- helpers
def _film(points, seed: int) -> np.ndarray:
    """A noisy dark film (rows = y) with a bright 5x5 mark centred on each landmark [x, y]."""
    img = np.random.default_rng(seed).normal(50, 8, (SIZE[1], SIZE[0]))
    for x, y in points:
        img[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] += 160
    return np.clip(img, 0, 255).astype(np.uint8)


def _points(seed: int) -> list[list[float]]:
    rng = np.random.default_rng(1000 + seed)
    base = np.array([[15.0, 12.0], [36.0, 30.0], [55.0, 46.0]])
    return (base + rng.uniform(-4, 4, base.shape)).round(1).tolist()


def _snapshot() -> dict:
    return snapshot(BUNDLE)


def _untouched(before: dict, written_under: Path) -> None:
    assert_bundle_untouched(BUNDLE, before, written_under)


def _settings(data, out: Path, **extra) -> dict:
    return {
        "dataset_dir": str(data.root),
        "datalist": str(data.datalist),
        "image_size": 64,
        "batch_size": 4,
        "num_workers": 0,
        "max_epochs": 1,
        "sigma": 2.0,
        "encoder_weights": None,
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
        **extra,
    }


def _monai_bundle_run(configs: list[str], overrides: dict) -> subprocess.CompletedProcess:
    files = "[" + ",".join(f"'{BUNDLE / 'configs' / c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files,
           "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
           "--logging_file", str(BUNDLE / "configs" / "logging.conf"),
           "--bundle_root", str(BUNDLE)]  # fmt: skip
    for k, v in overrides.items():
        cmd += [f"--{k}", "None" if v is None else str(v)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _mimtl_run(config: str, overrides: dict, *extra: str) -> int:
    return main(["run", NAME, config, *set_args(overrides), *extra])


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _environment(tmp_path_factory):
    """One thread per process, and no demo data anywhere (see the classification bundle's tests)."""
    cache = tmp_path_factory.mktemp("empty_cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def no_demo(*args, **kwargs):
        raise AssertionError("a run fell back to the demo data: some config id was not overridden")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("MIMTL_CACHE_DIR", str(cache))
        mp.delenv("MIMTL_BUNDLE_PATH", raising=False)
        mp.setattr(mimtl.sim.demo, "build_demo", no_demo)
        assert load_bundle(NAME).path == BUNDLE.resolve()
        yield
    torch.set_num_threads(threads)
    assert not list(cache.rglob("*")), f"something was built into the cache: {list(cache.rglob('*'))[:5]}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """16 grayscale 72x60 PNGs (8 train, 4 val, 4 test) with 3 landmarks each, spacing per film."""
    root = tmp_path_factory.mktemp("data")
    splits, seed = {}, 0
    for key, (folder, n) in SPLITS.items():
        (root / folder).mkdir()
        splits[key] = []
        for i in range(n):
            points = _points(seed)
            name = f"{folder}/{folder}_{i}.png"
            Image.fromarray(_film(points, seed)).save(root / name)
            splits[key].append({"image": name, "landmarks": points, "spacing": [0.5, 0.5]})
            seed += 1
    # one validation film lacks a landmark: marked NaN, never dropped
    splits["validation"][1]["landmarks"][2] = [float("nan"), float("nan")]
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"landmark_names": NAMES, **splits}, indent=1))
    return SimpleNamespace(root=root, datalist=datalist, splits=splits, tests=sorted((root / "test").iterdir()))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """train.yaml by ``python -m monai.bundle run``: 2 epochs on the tiny films."""
    out = tmp_path_factory.mktemp("trained")
    before = _snapshot()
    result = _monai_bundle_run(["train.yaml"], _settings(data, out, max_epochs=2))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return SimpleNamespace(out=out, ckpt=out / "models" / "model.pt", result=result, before=before)


# ---------------------------------------------------------------------------------------- 1. MONAI's CLI
def test_train_calibrate_evaluate_infer(trained, data):
    log = trained.result.stdout + trained.result.stderr
    assert "Epoch: 2/2" in log and "mre" in log, log[-3000:]
    assert sorted(p.name for p in (trained.out / "models").iterdir()) == ["model.pt"]
    net = HeatmapUNet(num_landmarks=3, encoder="efficientnet-lite0", in_channels=1, encoder_weights=None)
    net.load_state_dict(load_checkpoint(trained.ckpt))

    # calibrate on validation: radii in mm, written next to the weights
    out = trained.out / "calibration"
    settings = {**_settings(data, out), "ckpt_dir": trained.ckpt.parent}
    result = _monai_bundle_run(["train.yaml", "evaluate.yaml", "calibrate.yaml"], settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    conformal = json.loads((trained.ckpt.parent / "conformal.json").read_text())
    assert conformal["unit"] == "mm" and conformal["coverage"] == 0.9 and len(conformal["radius"]) == 3
    assert conformal["n_calibration"] == 4

    # evaluate on test: metrics.csv, per-landmark CSV, summary JSON with coverage
    out = trained.out / "evaluation"
    settings = {**_settings(data, out), "ckpt_dir": trained.ckpt.parent}
    result = _monai_bundle_run(["train.yaml", "evaluate.yaml"], settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = dict(line.split(",") for line in (out / "eval" / "metrics.csv").read_text().split("\n") if line)
    assert set(metrics) == {"mre", "sdr_2", "sdr_4"}
    summary = json.loads((out / "eval" / "landmark_summary.json").read_text())
    assert summary["unit"] == "mm" and summary["n_images"] == 4
    assert summary["overall"]["mre"] == pytest.approx(float(metrics["mre"]), rel=1e-4)
    assert [p["name"] for p in summary["per_landmark"]] == NAMES
    assert 0.0 <= summary["conformal_coverage"]["overall"] <= 1.0
    errors = _rows(out / "eval" / "landmark_errors.csv")
    assert len(errors) == 4 * 3
    for row in errors:  # mm = px * 0.5 on these films
        assert float(row["error_mm"]) == pytest.approx(0.5 * float(row["error_px"]), abs=2e-3)
    per = _rows(out / "eval" / "landmark_metrics.csv")
    assert [r["landmark"] for r in per] == [*NAMES, "overall"]

    # inference on a folder: CSV + JSON of points with confidence and radius, one overlay per film
    out = trained.out / "inference"
    settings = {"dataset_dir": data.root, "input": data.root / "test", "ckpt_path": trained.ckpt,
                "conformal_file": trained.ckpt.parent / "conformal.json",
                "output_dir": out, "image_size": 64, "num_workers": 0, "sigma": 2.0, "landmark_names": NAMES}  # fmt: skip
    result = _monai_bundle_run(["inference.yaml"], settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = _rows(out / "landmarks.csv")
    assert [r["file"] for r in rows] == [str(p) for p in data.tests for _ in NAMES]
    assert {r["status"] for r in rows} == {"ok"}
    # PNG films carry no spacing: px only, and the output says so; a radius in mm cannot be drawn
    assert {r["unit"] for r in rows} == {"px"} and {r["x_mm"] for r in rows} == {""}
    for r in rows:
        assert 0 <= float(r["x_px"]) <= SIZE[0] - 1 and 0 <= float(r["y_px"]) <= SIZE[1] - 1
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
    settings = {"dataset_dir": str(data.root), "input": str(tmp_path / "film.dcm"), "ckpt_path": str(trained.ckpt),
                "conformal_file": str(conformal), "output_dir": str(out), "image_size": 64, "num_workers": 0,
                "landmark_names": NAMES}  # fmt: skip
    assert _mimtl_run("inference", settings) == 0
    rows = _rows(out / "landmarks.csv")
    assert {r["unit"] for r in rows} == {"mm"}
    for r in rows:
        assert float(r["x_mm"]) == pytest.approx(0.25 * float(r["x_px"]), abs=2e-3)
    assert [float(r["radius"]) for r in rows] == [1.0, 2.0, 3.0] and {r["radius_unit"] for r in rows} == {"mm"}
    assert (out / "overlays" / "film_landmarks.png").is_file()


def test_inference_takes_the_spacing_from_a_datalist_or_the_config(trained, data, tmp_path):
    """PNGs carry no spacing: a datalist's per-film spacing, or `pixel_spacing`, gives points and radii in mm."""
    conformal = tmp_path / "conformal.json"
    conformal.write_text(json.dumps({"coverage": 0.9, "unit": "mm", "radius": [1.0, 2.0, 3.0], "n_calibration": 9}))
    common = {"dataset_dir": str(data.root), "ckpt_path": str(trained.ckpt), "conformal_file": str(conformal),
              "image_size": 64, "num_workers": 0, "overlay": False}  # fmt: skip
    for name, extra, mm_per_px, source in [
        # the training datalist also names the landmarks (the metadata names the shipped model's 11)
        ("datalist", {"input": str(data.datalist), "input_split": "test", "datalist": str(data.datalist)}, 0.5,
         "datalist 'spacing'"),
        ("config", {"input": str(data.root / "test"), "pixel_spacing": 0.25, "landmark_names": NAMES}, 0.25,
         "default spacing (config)"),
    ]:
        out = tmp_path / name
        assert _mimtl_run("inference", {**common, **extra, "output_dir": str(out)}) == 0
        rows = _rows(out / "landmarks.csv")
        assert [r["file"] for r in rows] == [str(p) for p in data.tests for _ in NAMES]
        assert {r["unit"] for r in rows} == {"mm"} and {r["spacing_source"] for r in rows} == {source}
        for r in rows:
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
def test_multi_gpu_train_on_two_gloo_processes(data, tmp_path):
    before = _snapshot()
    cmd = [sys.executable, "-m", "mimtl", "run", NAME, "multi_gpu_train", "--nproc", "2",
           *set_args(_settings(data, tmp_path, max_epochs=2))]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "--nproc_per_node=2" in log
    assert log.count("Key metric: mre best value") == 2, log[-5000:]  # rank 0 only, once per epoch
    state = load_checkpoint(tmp_path / "models" / "model.pt")
    assert not any(k.startswith("module.") for k in state)
    HeatmapUNet(num_landmarks=3, encoder="efficientnet-lite0", in_channels=1).load_state_dict(state)
    _untouched(before, tmp_path)


# ---------------------------------------------------------------------------------------- 4. export + verify
@pytest.fixture
def bundle_copy(trained, data, tmp_path):
    copy = tmp_path / NAME
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("models", "eval", "experiment", "__pycache__"))
    (copy / "models").mkdir()
    shutil.copy(trained.ckpt, copy / "models" / "model.pt")
    default_data = "dataset_dir: {_target_: mimtl.sim.demo_path, task: landmarks}\n"
    for config in ("train.yaml", "inference.yaml"):
        f = copy / "configs" / config
        text = f.read_text()
        assert text.count(default_data) == 1, f"{config}: its default dataset_dir line changed; update this test"
        f.write_text(text.replace(default_data, f"dataset_dir: '{data.root}'\n"))
    # inference's default input, the datalist's test split, is then the tiny set's
    assert "input: $@dataset_dir + '/datalist.json'" in (copy / "configs" / "inference.yaml").read_text()
    meta = json.loads((copy / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {str(i): n for i, n in enumerate(NAMES)}
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 3
    (copy / "configs" / "metadata.json").write_text(json.dumps(meta))
    return load_bundle(copy)


def test_torchscript_export_reloads_identical(bundle_copy, tmp_path):
    ts_file = export_bundle(bundle_copy, "torchscript", out=tmp_path / "model.ts", use_trace=False)
    scripted = torch.jit.load(str(ts_file), map_location="cpu").eval()
    eager = bundle_copy.parser("inference").get_parsed_content("network_def", instantiate=True)
    eager.load_state_dict(load_checkpoint(bundle_copy.weights_path), strict=True)
    eager.eval()
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), atol=1e-5, rtol=1e-5)


def test_verify_bundle_passes_every_check(bundle_copy):
    results = verify_bundle(bundle_copy)
    failed = {r.name: r.detail for r in results if not r.ok}
    assert not failed, "\n".join(map(str, results))


# ---------------------------------------------------------------------------------------- 5. bad input
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
    splits = {k: [dict(i, image=str(data.root / i["image"]), spacing=[math.nan, math.nan]) for i in v]
              for k, v in data.splits.items()}  # fmt: skip
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
        "experiment::factors::init::levels": {"scratch": {"encoder_weights": None},
                                              "in-domain": {"encoder_weights": str(trained.ckpt)}},  # fmt: skip
        "experiment::factors::fraction::levels": {"50%": {"train_fraction": 0.5, "max_epochs": 1, "val_interval": 1}},
        "experiment::overrides": {"image_size": "@image_size", "sigma": 2.0, "dataset_dir": str(data.root),
                                  "datalist": str(data.datalist), "batch_size": 4, "num_workers": 0},  # fmt: skip
    }
    assert _mimtl_run("experiment", settings) == 0
    rows = _rows(out / "runs.csv")
    assert [(r["init"], r["fraction"], r["seed"]) for r in rows] == [("scratch", "50%", "0"), ("in-domain", "50%", "0")]
    for r in rows:
        assert float(r["mre"]) > 0 and 0.0 <= float(r["sdr_2"]) <= float(r["sdr_4"]) <= 1.0
        metrics = dict(line.split(",") for line in (out / "runs" / r["run"] / "eval" / "metrics.csv").read_text().split())
        assert float(metrics["mre"]) == pytest.approx(float(r["mre"]), rel=1e-5)
    md = (out / "results.md").read_text()
    assert "| init | 50% |" in md and "| in-domain |" in md and "sdr_2" in md
    assert (out / "results.png").stat().st_size > 1000
    _untouched(before, out)
