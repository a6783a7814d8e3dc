"""The xray_color_classification bundle's own method, end to end on tiny data.

What every bundle meets (train learns, evaluate, inference, ``mimtl run``, 2-process gloo,
export, verify, models/ untouched, bad films refused) is tests/test_bundle_contract.py; this
module checks what is particular to this bundle, on the same tiny data and the same shared runs
(``bundle_runs``, made once per session): the two training stages, per-label ROC AUC, thresholds
from metadata.json, Grad-CAM, label-vector checks, tolerant inference, color transfer, the
multi-class switch and the experiment grid. Nothing reads the demo data of the user cache; every
output goes to a temporary folder and the bundle's own ``models/`` must come out untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_checks import CKPT_FILES, isolated_environment, mimtl_run, snapshot, write_datalist
from bundle_checks import COLOR_LABELS as LABELS
from bundle_checks import COLOR_VECTORS as VECTORS
from bundle_checks import assert_bundle_untouched as check_untouched
from bundle_checks import color_film as _film
from bundle_checks import metrics_csv as _metrics
from bundle_checks import rows as _rows
from PIL import Image

from mimtl.bundle import load_bundle, load_checkpoint
from mimtl.networks import ColorizedClassifier

pytestmark = pytest.mark.slow
NAME = "xray_color_classification"
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / NAME
AUC_KEYS = ["auc_no_finding", "auc_cardiomegaly", "auc_lung_lesion", "auc_pleural_effusion"]


# ---------------------------------------------------------------------------------------- helpers
def _settings(data, out: Path, **extra) -> dict:
    """Overrides that point a train/evaluate run at the tiny data and keep every output in ``out``: 1 epoch."""
    return data.settings(out, **{"max_epochs": 1, "frozen_epochs": 1, **extra})


def _mimtl_run(config: str, overrides: dict, *extra: str) -> int:
    return mimtl_run(NAME, config, overrides, *extra)


def _snapshot() -> dict:
    return snapshot(BUNDLE)


def assert_bundle_untouched(before: dict, written_under: Path) -> None:
    check_untouched(BUNDLE, before, written_under)


def _network() -> ColorizedClassifier:
    return ColorizedClassifier("deconv", "efficientnet-lite0", num_classes=4, weights=None)


def _write_datalist(path: Path, **splits) -> Path:
    return write_datalist(path, {"labels": LABELS}, **splits)


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
    """One thread per process, the shipped bundle found by name, and no demo data anywhere."""
    with isolated_environment(tmp_path_factory.mktemp("empty_cache"), [NAME]):
        yield


@pytest.fixture(scope="module")
def data(bundle_runs):
    """16 grayscale 40x40 PNGs (8 train, 4 val, 4 test), a multi-label and a one-hot datalist."""
    return bundle_runs.data(NAME)


@pytest.fixture(scope="module")
def trained(bundle_runs):
    """train.yaml (over common.yaml) run once by ``python -m monai.bundle run``: 2 epochs, stage 2 from epoch 2."""
    return bundle_runs.trained(NAME)


# ---------------------------------------------------------------------------------------- 1. MONAI's CLI
def test_training_runs_two_stages(trained):
    """train: the backbone frozen for epoch 1, everything fine-tuned from epoch 2, at finetune_lr."""
    log = trained.log
    assert "stage 1: backbone frozen for epochs 1-1" in log, log[-3000:]
    finetune_lr = load_bundle(NAME).parser("train").get_parsed_content("finetune_lr")
    assert f"stage 2 from epoch 2: fine-tuning everything at lr {finetune_lr}" in log, log[-3000:]
    assert "Epoch: 2/2" in log
    assert sorted(p.name for p in trained.ckpt.parent.iterdir()) == CKPT_FILES
    # the checkpoint is the bundle's network, loadable strictly, with the 4 labels of metadata.json
    _network().load_state_dict(load_checkpoint(trained.ckpt))


def test_evaluate_writes_auc_per_label_and_predictions(bundle_runs, data):
    """evaluate: mean and per-label ROC AUC, and one prediction row per test film."""
    out = bundle_runs.evaluated(NAME).out
    metrics = _metrics(out / "eval")
    assert set(metrics) == {"mean_auc", *AUC_KEYS}
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics
    assert metrics["mean_auc"] == pytest.approx(np.mean([metrics[k] for k in AUC_KEYS]))
    rows = _rows(out / "eval" / "predictions.csv")
    assert [r["file"] for r in rows] == [str(data.root / i["image"]) for i in data.splits["test"]]
    assert {r["status"] for r in rows} == {"ok"}


def test_inference_thresholds_and_gradcam(bundle_runs, data, trained):
    """inference (gradcam=true): probabilities per label, decided by the thresholds given, overlays."""
    out = bundle_runs.inferred(NAME).out
    rows = _rows(out / "predictions.csv")
    assert [r["file"] for r in rows] == [str(p) for p in data.tests]
    assert {r["status"] for r in rows} == {"ok"}
    probs = np.array([[float(r[f"prob_{n}"]) for n in LABELS] for r in rows])
    assert probs.shape == (4, 4) and ((probs >= 0) & (probs <= 1)).all(), probs
    thresholds = data.inference["thresholds"]  # the run's (metadata.json's belong to the shipped labels)
    for r in rows:  # the thresholds given decide
        decided = [int(float(r[f"prob_{n}"]) >= thresholds[n]) for n in LABELS]
        assert [int(r[f"pred_{n}"]) for n in LABELS] == decided
    overlays = sorted((out / "gradcam").iterdir())
    assert [p.name for p in overlays] == [f"{p.stem}_gradcam.png" for p in data.tests]
    for p in overlays:
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.width >= 256
    assert_bundle_untouched(trained.before, trained.out)


# ---------------------------------------------------------------------------------------- 3. multi-GPU config
def test_multi_gpu_train_switches_stage_on_both_ranks(bundle_runs):
    """multi_gpu_train on 2 gloo processes (the contract checks the rest): both ranks switch stage together."""
    run = bundle_runs.multi_gpu(NAME)
    assert "torch.distributed.run" in run.log and "--nproc_per_node=2" in run.log
    assert run.log.count("stage 2 from epoch 2") == 2, run.log[
        -5000:
    ]  # both ranks switch stage together (DDP needs it)
    assert run.log.count("Key metric: mean_auc best value") == 2, run.log[-5000:]  # rank 0 only, once per epoch
    _network().load_state_dict(load_checkpoint(run.out / "models" / "model.pt"))
    assert_bundle_untouched(run.before, run.out)


# ---------------------------------------------------------------------------------------- 5. bad input
def _one_bad_training_item(data, tmp_path, kind: str) -> Path:
    """A datalist whose training split holds one bad item (and the good ones); returns the bad file."""
    assert kind == "labels"
    items = [dict(i, image=str(data.root / i["image"])) for i in data.splits["training"]]
    bad = tmp_path / "x.png"
    shutil.copy(data.root / data.splits["training"][0]["image"], bad)
    items.insert(3, {"image": str(bad), "label": [0, 1, 0]})
    splits = {k: [dict(i, image=str(data.root / i["image"])) for i in v] for k, v in data.splits.items()}
    _write_datalist(tmp_path / "datalist.json", **{**splits, "training": items})
    return bad


# colour, 3D and NaN films are refused by every bundle: tests/test_bundle_contract.py
@pytest.mark.parametrize("kind,reason", [("labels", "label has 3 values, expected 4")])
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
    expected = {
        "colour.png": "colour image",
        "volume.nii.gz": "3D volume",
        "nan.nii.gz": "NaN",
        "truncated.png": "truncated",
    }
    out = tmp_path / "out"
    settings = {
        "dataset_dir": str(data.root),
        "input": str(folder),
        "ckpt_path": str(trained.ckpt),
        "output_dir": str(out),
        "image_size": 32,
        "batch_size": 4,
        "label_names": data.inference["label_names"],  # the tiny model's labels
        "thresholds": data.inference["thresholds"],
    }
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
    settings = _settings(
        data, tmp_path, backbone="resnet18", color_weights=str(trained.ckpt), freeze_color=freeze_color, frozen_epochs=0
    )
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
    settings = _settings(data, tmp_path, datalist=str(data.extras["multiclass"]), multi_label=False)
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
        "experiment::overrides": {
            "image_size": "@image_size",
            "dataset_dir": str(data.root),
            "datalist": str(data.datalist),
            "batch_size": 4,
            "num_workers": 0,
        },
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
