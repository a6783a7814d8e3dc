"""The contract every bundle in ``bundles/`` meets, run on tiny data the way a user runs it.

Parametrised over the bundle folders, so a new bundle is held to it by existing. Its tiny,
separable data comes from its ``@tiny_data`` builder in tests/bundle_checks.py; a bundle without
one fails here (it is not skipped). For each bundle:

1. ``python -m monai.bundle run`` (common.yaml merged first): train learns (its test metric beats
   a model that learned nothing), evaluate, inference (one ok row per input file);
2. ``mimtl run NAME train`` and ``mimtl run NAME inference``;
3. ``mimtl run NAME multi_gpu_train --nproc 2``: torchrun on 2 gloo CPU processes;
4. TorchScript export reloads to the eager network's outputs;
5. ``verify_bundle`` passes every check (on a copy of the bundle holding the tiny model);
6. the bundle's own ``models/`` is untouched by all of it (every output goes to a temporary folder);
7. bad input (per bundle: a colour image, a 3D volume, a NaN film; a missing, empty or truncated
   volume) in the training split exits 2 naming the file.

The runs of 1 and 3 are shared (``bundle_runs``) with the bundles' own modules, which keep only the
checks of their method. Nothing reads the demo data of the user cache.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_checks import (
    BUNDLES_DIR,
    CKPT_FILES,
    TINY_DATA,
    assert_bundle_untouched,
    isolated_environment,
    metrics_csv,
    mimtl_run,
    rows,
    shipped_bundles,
    snapshot,
    write_datalist,
)
from PIL import Image

from mimtl.bundle import export_bundle, load_bundle, load_checkpoint, verify_bundle
from mimtl.bundle.verify import VERIFY_CHECKS

pytestmark = pytest.mark.slow
BUNDLES = shipped_bundles()


@pytest.fixture(scope="module", autouse=True)
def _environment(tmp_path_factory):
    with isolated_environment(tmp_path_factory.mktemp("empty_cache"), BUNDLES):
        yield


@pytest.fixture(params=BUNDLES)
def name(request) -> str:
    return request.param


@pytest.fixture
def data(bundle_runs, name):
    return bundle_runs.data(name)


def _network(name: str, data):
    """The bundle's own network_def, as evaluate builds it on the tiny data (no initial weights)."""
    return load_bundle(name).parser("evaluate", **data.train).get_parsed_content("network_def", instantiate=True)


def _assert_predictions(data, csv_file: Path) -> None:
    """Inference listed every input file, in order, and read each of them."""
    got = rows(csv_file)
    assert [r["file"] for r in got] == [str(p) for p in data.tests for _ in range(data.rows_per_file)]
    assert {r["status"] for r in got} == {"ok"}


# ---------------------------------------------------------------------------------------- 0. registration
def test_bundles_are_found():
    assert BUNDLES, f"no bundle in {BUNDLES_DIR}"
    assert set(TINY_DATA) <= set(BUNDLES), (
        f"tiny data registered for bundles that do not exist: {set(TINY_DATA) - set(BUNDLES)}"
    )


def test_bundle_has_tiny_data(name):
    assert name in TINY_DATA, (
        f"bundle {name} has no tiny data for its tests: register a builder with @tiny_data({name!r}) "
        "in tests/bundle_checks.py (see TinyData)"
    )


# ---------------------------------------------------------------------------------------- 1. MONAI's CLI
def test_monai_bundle_run_train_and_evaluate(bundle_runs, name, data):
    """train.yaml over common.yaml runs every epoch and writes one checkpoint of the bundle's network;
    evaluate (common + train + evaluate) reports the key metric on the test split."""
    trained = bundle_runs.trained(name)
    epochs = data.train["max_epochs"]
    assert f"Epoch: {epochs}/{epochs}" in trained.log, trained.log[-3000:]
    assert f"Key metric: {data.key_metric} best value" in trained.log, trained.log[-3000:]
    assert sorted(p.name for p in trained.ckpt.parent.iterdir()) == CKPT_FILES
    # the training log: a row per epoch with its mean loss and that epoch's validation key metric
    log = rows(trained.ckpt.parent / "training_log.csv")
    assert [int(r["epoch"]) for r in log] == list(range(1, epochs + 1))
    assert all(float(r["loss"]) >= 0 and r[f"val_{data.key_metric}"] != "" for r in log), log
    _network(name, data).load_state_dict(load_checkpoint(trained.ckpt), strict=True)
    evaluated = bundle_runs.evaluated(name)
    assert data.key_metric in metrics_csv(evaluated.out / "eval")
    assert_bundle_untouched(BUNDLES_DIR / name, trained.before, trained.out)
    assert_bundle_untouched(BUNDLES_DIR / name, evaluated.before, trained.out)


def test_monai_bundle_run_train_learns(bundle_runs, name, data):
    """On separable tiny data the trained model beats one that learned nothing (held-out key metric)."""
    run = bundle_runs.learned(name)
    value = metrics_csv(run.out / "eval")[data.key_metric]
    assert data.learned(value), (
        f"{name} did not learn the tiny data: test {data.key_metric} {value}, chance {data.chance}"
    )
    if data.learn:
        assert_bundle_untouched(BUNDLES_DIR / name, run.before, run.out)


def test_monai_bundle_run_inference(bundle_runs, name, data):
    inferred = bundle_runs.inferred(name)
    _assert_predictions(data, inferred.out / data.predictions)
    assert_bundle_untouched(BUNDLES_DIR / name, inferred.before, bundle_runs.trained(name).out)


# ---------------------------------------------------------------------------------------- 2. mimtl run
def test_mimtl_run_train_and_inference(name, data, tmp_path):
    before = snapshot(BUNDLES_DIR / name)
    assert mimtl_run(name, "train", data.settings(tmp_path, max_epochs=1)) == 0
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == CKPT_FILES
    out = tmp_path / "inference"
    assert mimtl_run(name, "inference", data.inference_settings(tmp_path / "models" / "model.pt", out)) == 0
    _assert_predictions(data, out / data.predictions)
    assert_bundle_untouched(BUNDLES_DIR / name, before, tmp_path)


# ---------------------------------------------------------------------------------------- 3. multi-GPU config
def test_multi_gpu_train_on_two_gloo_processes(bundle_runs, name, data):
    """multi_gpu_train under torchrun on 2 CPU processes: one checkpoint, saved unwrapped, from rank 0."""
    run = bundle_runs.multi_gpu(name)
    assert "torch.distributed.run" in run.log and "--nproc_per_node=2" in run.log, run.log[-5000:]
    # StatsHandler and CheckpointSaver run on rank 0 only: one metrics line per epoch, one file
    epochs = data.train["max_epochs"]
    assert run.log.count(f"Key metric: {data.key_metric} best value") == epochs, run.log[-5000:]
    assert sorted(p.name for p in (run.out / "models").iterdir()) == CKPT_FILES
    state = load_checkpoint(run.out / "models" / "model.pt")
    assert not any(k.startswith("module.") for k in state)  # saved unwrapped from DDP
    _network(name, data).load_state_dict(state, strict=True)
    assert_bundle_untouched(BUNDLES_DIR / name, run.before, run.out)


# ---------------------------------------------------------------------------------------- 4. export + 5. verify
@pytest.fixture
def bundle_copy(bundle_runs, name, data, tmp_path):
    """The bundle copied to tmp with the tiny model as its weights (its metadata fitted to it)."""
    copy = tmp_path / name
    shutil.copytree(
        BUNDLES_DIR / name, copy, ignore=shutil.ignore_patterns("models", "eval", "experiment", "__pycache__")
    )
    (copy / "models").mkdir()
    shutil.copy(bundle_runs.trained(name).ckpt, copy / "models" / "model.pt")
    data.adapt_copy(copy)
    return load_bundle(copy)


def test_torchscript_export_reloads_identical(bundle_copy, data, tmp_path):
    """Scripted export + torch.jit.load gives the eager network's outputs (weights loaded strictly)."""
    ts_file = export_bundle(bundle_copy, "torchscript", out=tmp_path / "model.ts", use_trace=False)
    scripted = torch.jit.load(str(ts_file), map_location="cpu").eval()
    eager = bundle_copy.parser("inference").get_parsed_content("network_def", instantiate=True)
    eager.load_state_dict(load_checkpoint(bundle_copy.weights_path), strict=True)
    eager.eval()
    g = torch.Generator().manual_seed(0)
    for shape in data.export_shapes:
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            want, got = eager(x), scripted(x)
        assert tuple(got.shape[:2]) == (shape[0], data.out_channels), got.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not (bundle_copy.path / "models" / "model.ts").exists()  # written where asked only


def test_verify_bundle_passes_every_check(bundle_copy):
    results = verify_bundle(bundle_copy)
    failed = {r.name: r.detail for r in results if not r.ok}
    assert not failed, "\n".join(map(str, results))
    assert [r.name for r in results] == list(VERIFY_CHECKS)  # every check ran


# ---------------------------------------------------------------------------------------- 7. bad input
def _bad_file(kind: str, good: Path, folder: Path) -> Path:
    """A file made unusable in one way, from a good training file (a film, or a volume for 3D bundles)."""
    import nibabel as nib

    if kind == "missing":
        return folder / "missing.nii.gz"
    if kind == "empty":
        path = folder / "empty.nii.gz"
        path.write_bytes(b"")
        return path
    if kind == "truncated":  # an uncompressed NIfTI cut short, as an interrupted copy leaves it
        path = folder / "truncated.nii"
        nib.save(nib.load(good), path)
        path.write_bytes(path.read_bytes()[:-100])
        return path
    film = np.asarray(Image.open(good))
    if kind == "colour":
        path = folder / "colour.png"
        Image.fromarray(np.stack([film, 255 - film, film // 2], -1)).save(path)
    elif kind == "volume":
        path = folder / "volume.nii.gz"
        volume = np.random.default_rng(0).random((20, 20, 8)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    else:
        path = folder / "nan.nii.gz"
        img = film.T.astype(np.float32)  # NIfTI is x-first
        img[5, 6] = np.nan
        nib.save(nib.Nifti1Image(img, np.eye(4)), path)
    return path


@pytest.mark.parametrize("which", [0, 1, 2])
def test_training_refuses_bad_input_naming_the_file(name, data, tmp_path, capsys, which):
    """One bad file among the good ones of the training split: exit 2, the file and why, no traceback.

    The kinds are the bundle's (``TinyData.bad_inputs``): a colour image, a 3D volume and a NaN film
    for the film bundles; a missing, empty and truncated volume for the 3D one.
    """
    kind, reason = data.bad_inputs[which]
    splits = {k: [dict(i, image=str(data.root / i["image"])) for i in v] for k, v in data.splits.items()}
    bad = _bad_file(kind, data.root / data.splits["training"][0]["image"], tmp_path)
    splits["training"].insert(3, dict(splits["training"][1], image=str(bad)))
    header = {k: v for k, v in json.loads(data.datalist.read_text()).items() if k not in splits}
    datalist = write_datalist(tmp_path / "datalist.json", header, **splits)
    capsys.readouterr()
    code = mimtl_run(name, "train", data.settings(tmp_path, datalist=str(datalist), max_epochs=1))
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert str(bad) in err and reason in err, err[-3000:]
    assert "Traceback" not in err
    assert not (tmp_path / "models" / "model.pt").exists()
