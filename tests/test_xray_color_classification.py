"""The shipped xray_color_classification bundle end to end, on tiny data made here.

Every config of the bundle runs for real (train, evaluate, inference, multi-GPU train on two gloo
processes, export, verify, the experiment grid), the way a user runs it: ``python -m monai.bundle
run``, ``mimtl run``, torchrun. Nothing reads the demo data of the user cache: every run is pointed
at 16 small PNGs written by the module fixture, and every output goes to a temporary folder. The
bundle's own ``models/`` (the shipped weights) must come out of it untouched.

The network is trained once (module fixture, 2 epochs at 32 px) and that checkpoint is reused.
"""

from __future__ import annotations

import csv
import json
import re
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
from mimtl.networks import ColorizedClassifier
from bundle_checks import assert_bundle_untouched as check_untouched
from bundle_checks import set_args as _set_args
from bundle_checks import snapshot

NAME = "xray_color_classification"
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / NAME
LABELS = ["No Finding", "Cardiomegaly", "Lung Lesion", "Pleural Effusion"]
AUC_KEYS = ["auc_no_finding", "auc_cardiomegaly", "auc_lung_lesion", "auc_pleural_effusion"]
# four label vectors with a positive and a negative of every label: ROC AUC is defined in each split
VECTORS = [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [0, 1, 0, 1]]
SPLITS = {"training": ("train", 8), "validation": ("val", 4), "test": ("test", 4)}
SIZE = 40  # pixels of the films; the bundle resizes them to image_size
TIMEOUT = 600


# ---------------------------------------------------------------------------------------- helpers
def _film(label, seed: int) -> np.ndarray:
    """A noisy dark film with a bright square per positive finding (No Finding: none)."""
    img = np.random.default_rng(seed).normal(60, 10, (SIZE, SIZE))
    for positive, (y, x) in zip(label[1:], [(10, 10), (10, 30), (30, 20)]):
        if positive:
            img[y - 5 : y + 5, x - 5 : x + 5] += 150
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_datalist(path: Path, **splits) -> Path:
    path.write_text(json.dumps({"labels": LABELS, **splits}, indent=1))
    return path


def _settings(data, out: Path, **extra) -> dict:
    """Overrides that point a train/evaluate run at the tiny data and keep every output in ``out``."""
    return {
        "dataset_dir": str(data.root),
        "datalist": str(data.datalist),
        "image_size": 32,
        "batch_size": 4,
        "num_workers": 0,
        "max_epochs": 1,
        "frozen_epochs": 1,
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
        **extra,
    }


def _mimtl_run(config: str, overrides: dict, *extra: str) -> int:
    return main(["run", NAME, config, *_set_args(overrides), *extra])


def _monai_bundle_run(configs: list[str], overrides: dict) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` on the bundle's configs, as its README tells users to."""
    files = "[" + ",".join(f"'{BUNDLE / 'configs' / c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files,
           "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
           "--logging_file", str(BUNDLE / "configs" / "logging.conf"),
           "--bundle_root", str(BUNDLE)]  # fmt: skip
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v)]  # python-fire parses 32 as int and True as bool
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)


def _snapshot() -> dict:
    return snapshot(BUNDLE)


def assert_bundle_untouched(before: dict, written_under: Path) -> None:
    check_untouched(BUNDLE, before, written_under)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _metrics(folder: Path) -> dict[str, float]:
    lines = (folder / "metrics.csv").read_text().strip().splitlines()
    return {name: float(value) for name, value in (line.split(",") for line in lines)}


def _colour_png(path: Path) -> None:
    g = _film(VECTORS[1], 99)
    Image.fromarray(np.stack([g, 255 - g, g // 2], -1)).save(path)


def _volume_nifti(path: Path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 8)).astype(np.float32), np.eye(4)), path)


def _nan_nifti(path: Path) -> None:
    import nibabel as nib

    img = _film(VECTORS[2], 98).astype(np.float32)
    img[5, 6] = np.nan
    nib.save(nib.Nifti1Image(img, np.eye(4)), path)


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _environment(tmp_path_factory):
    """One thread per process, the shipped bundle found by name, and no demo data anywhere.

    On 2 cores shared with other work, 2 OpenMP threads per process made these runs 10-20x
    slower than 1. ``build_demo`` makes the bundle's default data; calling it in this process fails the
    test, and subprocesses get an empty cache that must stay empty.
    """
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
    """16 grayscale 40x40 PNGs (8 train, 4 val, 4 test), a multi-label and a one-hot datalist."""
    root = tmp_path_factory.mktemp("data")
    splits, onehot, seed = {}, {}, 0
    for key, (folder, n) in SPLITS.items():
        (root / folder).mkdir()
        splits[key], onehot[key] = [], []
        for i in range(n):
            label = VECTORS[i % 4]
            name = f"{folder}/{folder}_{i}.png"
            Image.fromarray(_film(label, seed)).save(root / name)
            seed += 1
            splits[key].append({"image": name, "label": label})
            onehot[key].append({"image": name, "label": [int(j == i % 4) for j in range(4)]})
    return SimpleNamespace(
        root=root,
        datalist=_write_datalist(root / "datalist.json", **splits),
        multiclass=_write_datalist(root / "multiclass.json", **onehot),
        splits=splits,
        tests=sorted((root / "test").iterdir()),
    )


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """The bundle's train.yaml run once by ``python -m monai.bundle run``: 2 epochs, stage 2 from epoch 2."""
    out = tmp_path_factory.mktemp("trained")
    before = _snapshot()
    result = _monai_bundle_run(["train.yaml"], _settings(data, out, max_epochs=2, frozen_epochs=1))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return SimpleNamespace(out=out, ckpt=out / "models" / "model.pt", result=result, before=before)


# ---------------------------------------------------------------------------------------- 1. MONAI's CLI
def test_monai_bundle_run_train_evaluate_infer(trained, data):
    """train (two stages) -> evaluate (metrics + per-image predictions) -> inference with Grad-CAM."""
    log = trained.result.stdout + trained.result.stderr
    assert "stage 1: backbone frozen for epochs 1-1" in log, log[-3000:]
    finetune_lr = load_bundle(NAME).parser("train").get_parsed_content("finetune_lr")
    assert f"stage 2 from epoch 2: fine-tuning everything at lr {finetune_lr}" in log, log[-3000:]
    assert "Epoch: 2/2" in log
    assert sorted(p.name for p in (trained.out / "models").iterdir()) == ["model.pt"]
    # the checkpoint is the bundle's network, loadable strictly, with the 4 labels of metadata.json
    net = ColorizedClassifier("deconv", "efficientnet-lite0", num_classes=4, backbone_weights=None)
    net.load_state_dict(load_checkpoint(trained.ckpt))

    out = trained.out / "evaluation"
    settings = {**_settings(data, out), "ckpt_dir": trained.ckpt.parent}
    result = _monai_bundle_run(["train.yaml", "evaluate.yaml"], settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = _metrics(out / "eval")
    assert set(metrics) == {"mean_auc", *AUC_KEYS}
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics
    assert metrics["mean_auc"] == pytest.approx(np.mean([metrics[k] for k in AUC_KEYS]))
    rows = _rows(out / "eval" / "predictions.csv")
    assert [r["file"] for r in rows] == [str(data.root / i["image"]) for i in data.splits["test"]]
    assert {r["status"] for r in rows} == {"ok"}

    out = trained.out / "inference"
    settings = {"dataset_dir": data.root, "input": data.root / "test", "ckpt_path": trained.ckpt,
                "output_dir": out, "image_size": 32, "num_workers": 0, "gradcam": True}  # fmt: skip
    result = _monai_bundle_run(["inference.yaml"], settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = _rows(out / "predictions.csv")
    assert [r["file"] for r in rows] == [str(p) for p in data.tests]
    assert {r["status"] for r in rows} == {"ok"}
    probs = np.array([[float(r[f"prob_{n}"]) for n in LABELS] for r in rows])
    assert probs.shape == (4, 4) and ((probs >= 0) & (probs <= 1)).all(), probs
    thresholds = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    thresholds = thresholds["network_data_format"]["outputs"]["pred"]["thresholds"]
    for r in rows:  # the thresholds of metadata.json decide
        decided = [int(float(r[f"prob_{n}"]) >= thresholds[n]) for n in LABELS]
        assert [int(r[f"pred_{n}"]) for n in LABELS] == decided
    overlays = sorted((out / "gradcam").iterdir())
    assert [p.name for p in overlays] == [f"{p.stem}_gradcam.png" for p in data.tests]
    for p in overlays:
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.width >= 256
    assert_bundle_untouched(trained.before, trained.out)


# ---------------------------------------------------------------------------------------- 2. mimtl run
def test_mimtl_run_train(data, tmp_path):
    before = _snapshot()
    assert _mimtl_run("train", _settings(data, tmp_path)) == 0
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.pt"]
    assert_bundle_untouched(before, tmp_path)


# ---------------------------------------------------------------------------------------- 3. multi-GPU config
def test_multi_gpu_train_on_two_gloo_processes(data, tmp_path):
    """multi_gpu_train.yaml under torchrun on 2 CPU processes: both stages, one checkpoint, from rank 0."""
    before = _snapshot()
    cmd = [sys.executable, "-m", "mimtl", "run", NAME, "multi_gpu_train", "--nproc", "2",
           *_set_args(_settings(data, tmp_path, max_epochs=2, frozen_epochs=1))]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "torch.distributed.run" in log and "--nproc_per_node=2" in log
    assert log.count("stage 2 from epoch 2") == 2  # both ranks switch stage together (DDP needs it)
    # StatsHandler and CheckpointSaver run on rank 0 only: one metrics line per epoch, one file
    assert log.count("Key metric: mean_auc best value") == 2, log[-5000:]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.pt"]
    state = load_checkpoint(tmp_path / "models" / "model.pt")
    assert not any(k.startswith("module.") for k in state)  # saved unwrapped from DDP
    ColorizedClassifier("deconv", "efficientnet-lite0", num_classes=4, backbone_weights=None).load_state_dict(state)
    assert_bundle_untouched(before, tmp_path)


# ---------------------------------------------------------------------------------------- 4. export + verify
@pytest.fixture
def bundle_copy(trained, data, tmp_path):
    """The bundle copied to tmp with the tiny model as its weights and its default data set to the tiny data."""
    copy = tmp_path / NAME
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("models", "eval", "experiment", "__pycache__"))
    (copy / "models").mkdir()
    shutil.copy(trained.ckpt, copy / "models" / "model.pt")
    default_data = "dataset_dir: {_target_: mimtl.sim.demo_path, task: classification}\n"
    for config in ("train.yaml", "inference.yaml"):
        f = copy / "configs" / config
        text = f.read_text()
        assert text.count(default_data) == 1, f"{config}: its default dataset_dir line changed; update this test"
        f.write_text(text.replace(default_data, f"dataset_dir: '{data.root}'\n"))
    f = copy / "configs" / "inference.yaml"
    text = f.read_text()
    default_input = re.search(r"^input: .*$", text, re.MULTILINE)
    assert default_input, "inference.yaml has no top-level 'input'"
    f.write_text(text.replace(default_input.group(0), "input: $@dataset_dir + '/test'"))
    return load_bundle(copy)


def test_torchscript_export_reloads_identical(bundle_copy, tmp_path):
    """Scripted export + torch.jit.load gives the eager network's outputs (weights loaded strictly)."""
    ts_file = export_bundle(bundle_copy, "torchscript", out=tmp_path / "model.ts", use_trace=False)
    scripted = torch.jit.load(str(ts_file), map_location="cpu").eval()
    eager = bundle_copy.parser("inference").get_parsed_content("network_def", instantiate=True)
    eager.load_state_dict(load_checkpoint(bundle_copy.weights_path), strict=True)
    eager.eval()
    g = torch.Generator().manual_seed(0)
    for shape in ((2, 1, 224, 224), (3, 1, 32, 32)):  # metadata's input size and the trained one
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            want, got = eager(x), scripted(x)
        assert got.shape == (shape[0], 4)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not (bundle_copy.path / "models" / "model.ts").exists()  # written where asked only


def test_verify_bundle_passes_every_check(bundle_copy):
    results = verify_bundle(bundle_copy)
    failed = {r.name: r.detail for r in results if not r.ok}
    assert not failed, "\n".join(map(str, results))
    assert len(results) == 7


# ---------------------------------------------------------------------------------------- 5. bad input
def _one_bad_training_item(data, tmp_path, kind: str) -> Path:
    """A datalist whose training split holds one bad item (and the good ones); returns the bad file."""
    items = [dict(i, image=str(data.root / i["image"])) for i in data.splits["training"]]
    bad = {"labels": tmp_path / "x.png", "colour": tmp_path / "colour.png",
           "volume": tmp_path / "volume.nii.gz", "nan": tmp_path / "nan.nii.gz"}[kind]  # fmt: skip
    label = VECTORS[1]
    if kind == "labels":
        shutil.copy(data.root / data.splits["training"][0]["image"], bad)
        label = [0, 1, 0]
    elif kind == "colour":
        _colour_png(bad)
    elif kind == "volume":
        _volume_nifti(bad)
    else:
        _nan_nifti(bad)
    items.insert(3, {"image": str(bad), "label": label})
    splits = {k: [dict(i, image=str(data.root / i["image"])) for i in v] for k, v in data.splits.items()}
    _write_datalist(tmp_path / "datalist.json", **{**splits, "training": items})
    return bad


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("labels", "label has 3 values, expected 4"),
        ("colour", "is a colour image"),
        ("volume", "is a 3D volume"),
        ("nan", "NaN"),
    ],
)
def test_training_refuses_bad_input_naming_the_file(data, tmp_path, capsys, kind, reason):
    bad = _one_bad_training_item(data, tmp_path, kind)
    capsys.readouterr()
    code = _mimtl_run("train", _settings(data, tmp_path, datalist=str(tmp_path / "datalist.json")))
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert str(bad) in err and reason in err, err[-3000:]
    assert "Traceback" not in err
    assert not (tmp_path / "models" / "model.pt").exists()


def test_gray_film_stored_as_rgb_trains(data, tmp_path, capsys):
    items = [dict(i, image=str(data.root / i["image"])) for i in data.splits["training"]]
    for item in items[:3]:  # the same pixels in R, G and B, as screenshot and export tools save them
        rgb = tmp_path / f"rgb_{Path(item['image']).name}"
        Image.fromarray(np.asarray(Image.open(item["image"]))[..., None].repeat(3, -1)).convert("RGB").save(rgb)
        item["image"] = str(rgb)
    splits = {k: [dict(i, image=str(data.root / i["image"])) for i in v] for k, v in data.splits.items()}
    _write_datalist(tmp_path / "datalist.json", **{**splits, "training": items})
    code = _mimtl_run("train", _settings(data, tmp_path, datalist=str(tmp_path / "datalist.json")))
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert "grayscale image stored as RGB; using one channel" in captured.out + captured.err
    assert (tmp_path / "models" / "model.pt").is_file()


def test_inference_lists_every_bad_file(trained, data, tmp_path):
    """A folder mixing good films with unusable files: exit 0, one row per file, reasons for the bad ones."""
    folder = tmp_path / "films"
    folder.mkdir()
    for p in data.tests[:2]:
        shutil.copy(p, folder / p.name)
    _colour_png(folder / "colour.png")
    _volume_nifti(folder / "volume.nii.gz")
    _nan_nifti(folder / "nan.nii.gz")
    (folder / "truncated.png").write_bytes(data.tests[2].read_bytes()[:100])
    expected = {"colour.png": "colour image", "volume.nii.gz": "3D volume", "nan.nii.gz": "NaN",
                "truncated.png": "truncated"}  # fmt: skip
    out = tmp_path / "out"
    settings = {"dataset_dir": str(data.root), "input": str(folder), "ckpt_path": str(trained.ckpt),
                "output_dir": str(out), "image_size": 32, "batch_size": 4}  # fmt: skip
    assert _mimtl_run("inference", settings) == 0
    rows = {Path(r["file"]).name: r for r in _rows(out / "predictions.csv")}
    assert len(rows) == len(list(folder.iterdir())) == 6  # nothing skipped silently
    for name, reason in expected.items():
        status = rows[name]["status"]
        assert status.startswith("failed: ") and reason in status, (name, status)
        assert rows[name][f"prob_{LABELS[0]}"] == ""
    for p in data.tests[:2]:
        assert rows[p.name]["status"] == "ok"
        assert 0.0 <= float(rows[p.name][f"prob_{LABELS[1]}"]) <= 1.0
    summary = json.loads((out / "predictions.json").read_text())
    assert (summary["n_images"], summary["n_ok"], summary["n_failed"]) == (6, 2, 4)


# ---------------------------------------------------------------------------------------- 6. color transfer
def _train_in_process(overrides: dict) -> tuple[dict, dict]:
    """Run train.yaml with ``overrides``; return the network's initial and final (checkpoint) state."""
    wf = load_bundle(NAME).workflow("train", configure_logging=False, **overrides)
    wf.initialize()
    init = {k: v.detach().clone() for k, v in wf.parser.get_parsed_content("network").state_dict().items()}
    try:
        wf.run()
    finally:
        wf.finalize()
    return init, load_checkpoint(Path(overrides["ckpt_dir"]) / "model.pt")


@pytest.mark.parametrize("freeze_color", [True, False])
def test_color_module_transfer_to_another_backbone(trained, data, tmp_path, freeze_color):
    """backbone=resnet18 + color_weights=<first run>: the color module is carried over, then kept
    (freeze_color=true, batch-norm statistics included) or tuned (false); the new backbone trains."""
    source = load_checkpoint(trained.ckpt)
    source_color = {k: v for k, v in source.items() if k.startswith("color.")}
    settings = _settings(data, tmp_path, backbone="resnet18", color_weights=str(trained.ckpt),
                         freeze_color=freeze_color, frozen_epochs=0)  # fmt: skip
    init, final = _train_in_process(settings)
    assert any(k.startswith("backbone.net.layer4.") for k in final)  # a ResNet, not the EfficientNet
    assert sorted(k for k in final if k.startswith("color.")) == sorted(source_color)
    assert all(torch.equal(init[k], v) for k, v in source_color.items())  # loaded from the first run
    changed_color = [k for k, v in source_color.items() if not torch.equal(final[k], v)]
    if freeze_color:  # weights and batch-norm statistics alike
        assert changed_color == []
    else:
        assert changed_color, "the color module did not train with freeze_color=false"
    for k in ("backbone.net.conv1.weight", "backbone.net.layer4.1.conv2.weight"):  # first and last conv trained
        assert not torch.equal(final[k], init[k]), f"{k} did not train"


# ---------------------------------------------------------------------------------------- 7. multi-class
def test_multiclass_switch_trains_and_evaluates(data, tmp_path):
    settings = _settings(data, tmp_path, datalist=str(data.multiclass), multi_label=False)
    assert _mimtl_run("train", settings) == 0
    assert _mimtl_run("evaluate", settings) == 0
    metrics = _metrics(tmp_path / "eval")
    assert 0.0 <= metrics["mean_auc"] <= 1.0 and set(AUC_KEYS) <= set(metrics)
    rows = _rows(tmp_path / "eval" / "predictions.csv")
    assert len(rows) == 4 and all(r["predicted_class"] in LABELS for r in rows)
    for r in rows:  # softmax: one class per image
        assert sum(float(r[f"prob_{n}"]) for n in LABELS) == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------------------------- 8. experiment
def test_experiment_grid(data, tmp_path):
    """experiment.yaml on a 2 modules x 1 level grid, one seed: 2 real train + evaluate runs, summarised."""
    before = _snapshot()
    out = tmp_path / "experiment"
    settings = {
        "output_dir": str(out),
        "seeds": [0],
        "image_size": 32,
        "experiment::factors::module::values": ["gray", "conv1x1"],
        "experiment::factors::fraction::levels": {
            "100%": {"train_fraction": 1.0, "max_epochs": 1, "frozen_epochs": 1, "val_interval": 1}
        },
        "experiment::overrides": {"image_size": "@image_size", "dataset_dir": str(data.root),
                                  "datalist": str(data.datalist), "batch_size": 4, "num_workers": 0},  # fmt: skip
    }
    assert _mimtl_run("experiment", settings) == 0
    rows = _rows(out / "runs.csv")
    assert [(r["module"], r["fraction"], r["seed"]) for r in rows] == [("gray", "100%", "0"), ("conv1x1", "100%", "0")]
    assert all(0.0 <= float(r["mean_auc"]) <= 1.0 for r in rows)
    for r in rows:  # each run trained and evaluated in its own folder
        assert (out / "runs" / r["run"] / "models" / "model.pt").is_file()
        assert "mean_auc" in _metrics(out / "runs" / r["run"] / "eval")
    md = (out / "results.md").read_text()
    assert "| module | 100% |" in md and "| gray |" in md and "| conv1x1 |" in md
    assert (out / "results.png").stat().st_size > 1000
    assert_bundle_untouched(before, out)
