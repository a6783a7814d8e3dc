"""A killed training resumes with nothing lost (mimtl.handlers.ResumableCheckpoint).

Both shipped bundles train on tiny data made here (8 training films, batch 2: 4 iterations per
epoch, 3 epochs, a resumable checkpoint every 3 iterations and at each epoch end). Each bundle's
training runs once uninterrupted (with ``--resume`` and no checkpoint yet: it starts fresh and says
so), and once cut three times:

1. SIGKILL after iteration 7 (epoch 2, mid-epoch; the last checkpoint is at iteration 6);
2. resumed, then SIGKILL in the middle of writing the checkpoint of iteration 9 (half the temporary
   file written): the checkpoint of iteration 8 (end of epoch 2) must still be there and load;
3. resumed to the end.

What holds, and why: the final weights are bitwise equal (``torch.equal``) to the uninterrupted
run's, as is the best ``model.pt``, and so is the loss of every iteration (the iterations redone
after a kill, 7 and 9, give the same loss as their first time). It can hold exactly because the
runs are deterministic on the CPU with one thread, and the checkpoint carries every state that the
rest of the run depends on: network, optimizer, learning-rate schedule, the staged-fine-tuning
stage (classification switches stage at epoch 2, inside the cut epoch), the landmark loss's learned
sigmas, the evaluator's best metric and ``model.pt`` ranking, and the RNGs, those of the random
transforms included. For the epoch cut in the middle, the handler rebuilds the epoch's shuffled
order from the random state at the epoch start and draws the batches already done again without
training on them, so no batch is run twice or skipped. (On a GPU, non-deterministic kernels would
leave only the weaker guarantee: same step count and history, no epoch twice or skipped; the loss
log checks that part separately.)

The kills come from a small helper (``HELPER``, run with ``python -c``) that wraps ``mimtl run`` in
a subprocess: it logs each iteration's loss, kills the process at a given iteration, or swaps
``torch.save`` for one that writes half a resumable checkpoint and SIGKILLs itself. No test hook
lives in the library.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mimtl.cli import main

ROOT = Path(__file__).resolve().parents[1]
CLS, LMK = "xray_color_classification", "xray_landmark_detection"
TIMEOUT = 300
EPOCH, EPOCHS = 4, 3  # iterations per epoch (8 films, batch 2), epochs
TOTAL = EPOCH * EPOCHS

HELPER = r"""
import io, json, os, signal, sys, time
spec = json.loads(sys.argv[1])
import torch
from ignite.engine import Events
from monai.handlers import from_engine
import mimtl.handlers.resume as resume

log = open(spec["log"], "a") if spec.get("log") else None
attach = resume.ResumableCheckpoint.attach

def patched_attach(self, engine):
    attach(self, engine)

    @engine.on(Events.ITERATION_COMPLETED)
    def record(engine):
        loss = float(from_engine(["loss"], first=True)(engine.state.output))
        if log:
            log.write(json.dumps({"pid": os.getpid(), "epoch": engine.state.epoch,
                                  "iteration": engine.state.iteration, "loss": loss}) + "\n")
            log.flush()
        if engine.state.iteration == spec.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(spec.get("sleep", 0))

resume.ResumableCheckpoint.attach = patched_attach
real_save = torch.save

def half_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("format") == resume.FORMAT and obj["engine"]["iteration"] == spec.get("kill_in_save"):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = half_save
if "experiment" in spec:
    from mimtl.bundle.experiment import GridExperiment
    GridExperiment(**spec["experiment"]).run()
else:
    from mimtl.cli import main
    sys.exit(main(spec["argv"]))
"""


# ---------------------------------------------------------------------------------------- data
def _classification_data(root: Path) -> Path:
    from bundle_checks import COLOR_LABELS, COLOR_VECTORS, color_film  # the bundle's labels, a square per finding

    splits, seed = {}, 0
    for key, (folder, n) in {"training": ("train", 8), "validation": ("val", 4), "test": ("test", 4)}.items():
        (root / folder).mkdir(parents=True)
        splits[key] = []
        for i in range(n):
            label = COLOR_VECTORS[i % 4]
            Image.fromarray(color_film(label, seed)).save(root / folder / f"{i}.png")
            splits[key].append({"image": f"{folder}/{i}.png", "label": label})
            seed += 1
    (root / "datalist.json").write_text(json.dumps({"labels": COLOR_LABELS, **splits}))
    return root / "datalist.json"


def _landmark_data(root: Path) -> Path:
    splits, seed = {}, 0
    base = np.array([[15.0, 12.0], [36.0, 30.0], [55.0, 46.0]])
    for key, (folder, n) in {"training": ("train", 8), "validation": ("val", 4), "test": ("test", 4)}.items():
        (root / folder).mkdir(parents=True)
        splits[key] = []
        for i in range(n):
            points = (base + np.random.default_rng(1000 + seed).uniform(-4, 4, base.shape)).round(1)
            img = np.random.default_rng(seed).normal(50, 8, (60, 72))
            for x, y in points:
                img[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] += 160
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / folder / f"{i}.png")
            splits[key].append({"image": f"{folder}/{i}.png", "landmarks": points.tolist(), "spacing": [0.5, 0.5]})
            seed += 1
    (root / "datalist.json").write_text(json.dumps({"landmark_names": ["apex", "carina", "dome"], **splits}))
    return root / "datalist.json"


def _settings(name: str, datalist: Path, out: Path) -> dict:
    common = {
        "dataset_dir": str(datalist.parent),
        "datalist": str(datalist),
        "batch_size": 2,
        "num_workers": 0,
        "max_epochs": EPOCHS,
        "checkpoint_every": 3,
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
    }
    if name == CLS:  # stage 2 (backbone unfrozen, finetune_lr) starts with epoch 2, the cut one
        return {**common, "image_size": 32, "frozen_epochs": 1}
    # a loss with parameters: learned sigmas (mse), stored with the rest
    return {**common, "image_size": 32, "sigma": 2.0, "encoder_weights": None, "loss_kind": "mse", "learn_sigma": True}


def _argv(name: str, settings: dict, *extra: str) -> list[str]:
    out = ["run", name, "train", *extra]
    for k, v in settings.items():
        out += ["--set", f"{k}={'null' if v is None else json.dumps(v) if not isinstance(v, str) else v}"]
    return out


def _start(spec: dict) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", HELPER, json.dumps(spec)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out


def _run(spec: dict) -> tuple[int, str]:
    return _finish(_start(spec))


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        elif isinstance(a[k], dict):
            _same_tensors(a[k], b[k])


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny data for both bundles; no demo data from the user cache; one thread."""
    root = tmp_path_factory.mktemp("resume")
    cache = root / "cache"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("MIMTL_CACHE_DIR", str(cache))
        mp.delenv("MIMTL_BUNDLE_PATH", raising=False)
        yield {"root": root, CLS: _classification_data(root / "cls"), LMK: _landmark_data(root / "lmk")}
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(env):
    """Per bundle: the uninterrupted run and the run cut by SIGKILL mid-epoch, side by side (2 cores)."""
    procs, out = {}, {}
    for name in (CLS, LMK):
        for kind, extra in (("reference", {}), ("cut", {"kill_at": 7})):
            d = env["root"] / name / kind
            d.mkdir(parents=True)
            spec = {
                "argv": _argv(name, _settings(name, env[name], d), "--resume"),
                "log": str(d / "log.jsonl"),
                **extra,
            }
            procs[name, kind] = (_start(spec), d, spec)
    for (name, kind), (proc, d, spec) in procs.items():
        rc, text = _finish(proc)
        out[name, kind] = {"rc": rc, "out": text, "dir": d, "spec": spec}
    return out


# ---------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", [CLS, LMK])
def test_sigkill_mid_epoch_and_mid_write_resume_to_the_same_weights(runs, name):
    ref, cut = runs[name, "reference"], runs[name, "cut"]
    assert ref["rc"] == 0, ref["out"][-3000:]
    assert "no checkpoint at" in ref["out"] and "starting from scratch" in ref["out"]
    d, spec = cut["dir"], cut["spec"]
    ckpt = d / "models" / "resume.pt"

    # 1. killed after iteration 7: the checkpoint of iteration 6 (epoch 2, 2 of 4 done) is there
    assert cut["rc"] == -signal.SIGKILL, cut["out"][-3000:]
    assert [r["iteration"] for r in _log(d / "log.jsonl")] == list(range(1, 8))
    assert _ckpt(ckpt)["engine"]["iteration"] == 6

    # 2. resumed, killed half-way through writing the checkpoint of iteration 9
    rc, text = _run({**spec, "kill_at": None, "kill_in_save": 9})
    assert rc == -signal.SIGKILL, text[-3000:]
    assert "continuing from" in text and "epoch 2, iteration 3 of 4" in text
    stale = list((d / "models").glob(".resume.pt.*.tmp"))
    assert len(stale) == 1 and 0 < stale[0].stat().st_size < ckpt.stat().st_size
    assert _ckpt(ckpt)["engine"]["iteration"] == 8  # the previous checkpoint, intact

    # 3. resumed to the end
    rc, text = _run({**spec, "kill_at": None})
    assert rc == 0, text[-3000:]
    assert "the end of epoch 2" in text and "removing" in text
    assert not list((d / "models").glob(".resume.pt.*.tmp"))

    # every iteration ran, the redone ones (7, 9) with the loss of their first time, all as uninterrupted
    reference = {r["iteration"]: r for r in _log(ref["dir"] / "log.jsonl")}
    assert sorted(reference) == list(range(1, TOTAL + 1))
    log = _log(d / "log.jsonl")
    assert sorted({r["iteration"] for r in log}) == list(range(1, TOTAL + 1))
    assert [r["iteration"] for r in log] == [*range(1, 8), 7, 8, 9, *range(9, TOTAL + 1)]
    for r in log:
        assert (r["epoch"], r["loss"]) == (reference[r["iteration"]]["epoch"], reference[r["iteration"]]["loss"]), r

    # the same final state, bitwise: weights, optimizer, schedule/stage, loss parameters, best model.pt
    final, expected = _ckpt(ckpt), _ckpt(ref["dir"] / "models" / "resume.pt")
    assert final["engine"] == expected["engine"] and final["engine"]["iteration"] == TOTAL
    assert final["parts"].keys() == expected["parts"].keys()
    _same_tensors(final["parts"], expected["parts"])
    for part in set(final["parts"]) - {"network", "optimizer", "loss"}:
        assert final["parts"][part] == expected["parts"][part], part
    if name == LMK:
        assert final["parts"]["loss"] and "lr_scheduler" in final["parts"]
    else:
        assert final["parts"]["StagedFineTuning"]["stage"] == 2
    _same_tensors(_ckpt(d / "models" / "model.pt"), _ckpt(ref["dir"] / "models" / "model.pt"))


def test_experiment_grid_resumes_inside_a_run(runs, env, tmp_path):
    """A grid killed in the middle of a run's training: the rerun continues that run from its own
    checkpoint (iterations 7.. only) and ends with the model of an uninterrupted run of the same seed."""
    ref = runs[CLS, "reference"]
    settings = _settings(CLS, env[CLS], tmp_path)
    overrides = {k: v for k, v in settings.items() if k not in ("ckpt_dir", "output_dir")}
    experiment = {
        "bundle": CLS,
        "factors": {"lr": {"id": "learning_rate", "values": [0.001]}},
        "seeds": [0],
        "metric": "mean_auc",
        "output_dir": str(tmp_path / "exp"),
        "overrides": overrides,
    }
    log = tmp_path / "log.jsonl"
    rc, text = _run({"experiment": experiment, "log": str(log), "kill_at": 7})
    assert rc == -signal.SIGKILL, text[-3000:]
    run_dir = tmp_path / "exp" / "runs" / "lr-0.001_seed0"
    assert _ckpt(run_dir / "models" / "resume.pt")["engine"]["iteration"] == 6
    first = len(_log(log))
    rc, text = _run({"experiment": experiment, "log": str(log)})
    assert rc == 0, text[-3000:]
    assert [r["iteration"] for r in _log(log)[first:]] == list(range(7, TOTAL + 1))
    assert (tmp_path / "exp" / "runs.csv").read_text().count("\n") == 2
    assert not (run_dir / "models" / "resume.pt").exists()  # a recorded run keeps model.pt only
    _same_tensors(_ckpt(run_dir / "models" / "model.pt"), _ckpt(ref["dir"] / "models" / "model.pt"))


def test_ctrl_c_saves_and_says_how_to_resume(env, tmp_path):
    log = tmp_path / "log.jsonl"
    spec = {"argv": _argv(CLS, _settings(CLS, env[CLS], tmp_path)), "log": str(log), "sleep": 0.5}
    proc = _start(spec)
    deadline = time.monotonic() + TIMEOUT
    while len(_log(log)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    rc, text = _finish(proc)
    stopped = _log(log)[-1]["iteration"]
    assert rc == 130, text[-3000:]
    assert stopped < TOTAL
    ckpt = tmp_path / "models" / "resume.pt"
    assert f"iteration {stopped}; checkpoint saved to {ckpt}; resume with --resume" in text
    assert _ckpt(ckpt)["engine"]["iteration"] == stopped


def test_mismatched_checkpoint_is_a_clear_error(runs, env, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(runs[CLS, "reference"]["dir"] / "models", models)
    settings = {**_settings(CLS, env[CLS], tmp_path), "color_module": "coloru"}
    assert main(_argv(CLS, settings, "--resume")) == 2
    err = capsys.readouterr().err
    assert str(models / "resume.pt") in err and "does not match this configuration (network)" in err


def test_resume_needs_a_resumable_config(tiny_bundle, capsys):
    assert main(["run", str(tiny_bundle), "train", "--resume"]) == 2
    assert "no 'resume' setting" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- units
def test_atomic_save_keeps_the_previous_file_when_a_write_fails(tmp_path, monkeypatch):
    from mimtl.handlers import resume

    path = resume.atomic_save({"a": torch.ones(3)}, tmp_path / "c.pt")

    def broken(obj, f, *args, **kwargs):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(resume.torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        resume.atomic_save({"a": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_rng_states_round_trip_through_weights_only_files(tmp_path):
    import random

    from monai.transforms import Compose, RandAffined, RandGaussianNoised

    from mimtl.handlers.resume import atomic_save, get_rng_state, set_rng_state, transform_rngs

    t = Compose([RandAffined("x", prob=1.0, rotate_range=0.3), RandGaussianNoised("x", prob=1.0)])
    t.set_random_state(3)
    rngs = transform_rngs(t)
    assert len(rngs) >= 3  # RandAffined, its RandAffine and RandAffineGrid, the noise
    atomic_save(get_rng_state(rngs), tmp_path / "rng.pt")

    def draw():
        return (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random(), [r.rand() for r in rngs])

    first = draw()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), rngs)
    assert draw() == first


def test_sigint_handler_only_while_training(tmp_path):
    from ignite.engine import Engine

    from mimtl.handlers import ResumableCheckpoint

    seen = []
    before = signal.getsignal(signal.SIGINT)
    engine = Engine(lambda e, b: seen.append(signal.getsignal(signal.SIGINT)))
    ResumableCheckpoint(tmp_path).attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert seen and all(getattr(h, "__self__", None).__class__ is ResumableCheckpoint for h in seen)
    assert signal.getsignal(signal.SIGINT) is before

    failing = Engine(lambda e, b: 1 / 0)
    ResumableCheckpoint(tmp_path / "f").attach(failing)
    with pytest.raises(ZeroDivisionError):
        failing.run([0], max_epochs=1)
    assert signal.getsignal(signal.SIGINT) is before
