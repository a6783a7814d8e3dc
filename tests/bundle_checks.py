"""Helpers shared by the end-to-end tests of the shipped bundles.

The contract every bundle in ``bundles/`` meets (tests/test_bundle_contract.py) and the method
checks of each bundle (tests/test_<bundle>.py) run on the same tiny data and share the same runs:

* :data:`TINY_DATA`: how each bundle gets tiny, separable data. A new bundle registers a builder
  with ``@tiny_data("my_bundle")`` below; a bundle without one fails the contract test.
* :class:`BundleRuns`: the runs made once per test session (train, evaluate, inference,
  multi-GPU train) and reused by every module that asks for them.
* :func:`isolated_environment`: one thread per process, the shipped bundle found by name, and no
  demo data anywhere (each bundle module enters it for its whole duration).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO / "bundles"
TIMEOUT = 600
#: what a training run leaves in ckpt_dir: the best model, the resumable training checkpoint, and
#: the training log (loss and validation metrics per epoch)
CKPT_FILES = ["model.pt", "resume.pt", "training_log.csv", "training_log.png"]
SPLITS = {"training": ("train", 8), "validation": ("val", 4), "test": ("test", 4)}


def shipped_bundles() -> list[str]:
    """Every bundle folder of ``bundles/`` (one with configs/metadata.json), by name."""
    return sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs" / "metadata.json").exists())


# ---------------------------------------------------------------------------------------- running
def yaml_value(value) -> str:
    """A value as ``mimtl run --set`` reads it."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    return json.dumps(value)  # JSON numbers, booleans, null, lists and objects are YAML too


def set_args(overrides: dict) -> list[str]:
    """``--set id=value`` arguments of ``mimtl run``."""
    return [arg for k, v in overrides.items() for arg in ("--set", f"{k}={yaml_value(v)}")]


def mimtl_run(name: str, config: str, overrides: dict, *extra: str) -> int:
    """``mimtl run NAME CONFIG --set ...`` in this process; its exit code."""
    from mimtl.cli import main

    return main(["run", name, config, *set_args(overrides), *extra])


def mimtl_run_process(name: str, config: str, overrides: dict, *extra: str) -> subprocess.CompletedProcess:
    """``python -m mimtl run NAME CONFIG --set ...`` in a new process (``--nproc 2`` launches torchrun)."""
    cmd = [sys.executable, "-m", "mimtl", "run", name, config, *set_args(overrides), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)


def monai_bundle_run(
    name: str, workflow: str, overrides: dict, *, configs: list[str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` on the bundle's configs, as its README tells users to.

    The files are the workflow's merge order (``configs/common.yaml`` first, then e.g. train.yaml
    and evaluate.yaml) from ``Bundle.config_files``, or ``configs`` (file names) when given.
    """
    from mimtl.bundle import load_bundle

    bundle = load_bundle(name)
    files = bundle.config_files(workflow) if configs is None else [bundle.path / "configs" / c for c in configs]
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "[" + ",".join(f"'{f}'" for f in files) + "]",
        "--meta_file",
        str(bundle.meta_file),
        "--logging_file",
        str(bundle.path / "configs" / "logging.conf"),
        "--bundle_root",
        str(bundle.path),
    ]
    for k, v in overrides.items():
        # python-fire parses 32 as int and True as bool; MONAI's run drops an override whose value
        # is None (the config's default stays), so null is given as the expression "$None"
        cmd += [f"--{k}", "$None" if v is None else str(v)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)


def log_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def metrics_csv(folder: Path) -> dict[str, float]:
    """``metrics.csv`` of MONAI's MetricsSaver (``name,value`` lines)."""
    lines = (folder / "metrics.csv").read_text().strip().splitlines()
    return {name: float(value) for name, value in (line.split(",") for line in lines)}


# ---------------------------------------------------------------------------------------- the bundle folder
def hashes(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def snapshot(bundle: Path) -> dict:
    return {"models": hashes(bundle / "models"), "dirs": {d for d in ("eval", "experiment") if (bundle / d).exists()}}


def assert_bundle_untouched(bundle: Path, before: dict, written_under: Path) -> None:
    """No run of the tests wrote into the bundle folder.

    The shipped ``models/`` must be byte for byte what it was. One exception keeps this true while
    someone trains the shipped model in the background: ``models/model.pt`` (or its
    ``conformal.json``) may change, but never into a file these tests wrote (all under ``written_under``).
    """
    ours = {hashlib.sha256(p.read_bytes()).hexdigest() for p in written_under.rglob("*") if p.is_file()}
    assert any(written_under.rglob("*.pt")), f"no checkpoint was written under {written_under}"
    after = snapshot(bundle)
    for name, digest in after["models"].items():
        if before["models"].get(name) != digest:
            assert name in ("model.pt", "conformal.json"), (
                f"{bundle / 'models' / name} appeared or changed during the tests"
            )
            assert digest not in ours, f"a test wrote its output into {bundle / 'models' / name}"
    assert after["dirs"] <= before["dirs"], f"a test wrote default outputs into {bundle}: {after['dirs']}"


@contextmanager
def isolated_environment(cache: Path, names: list[str]) -> Iterator[None]:
    """One thread per process, the shipped bundles found by name, and no demo data anywhere.

    On 2 cores shared with other work, 2 OpenMP threads per process made these runs 10-20x
    slower than 1. ``build_demo`` makes a bundle's default data; calling it in this process fails
    the test, and subprocesses get an empty cache (``cache``) that must stay empty.
    """
    import pytest
    import torch

    import mimtl.sim.demo
    from mimtl.bundle import load_bundle

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def no_demo(*args, **kwargs):
        raise AssertionError("a run fell back to the demo data: some config id was not overridden")

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OMP_NUM_THREADS", "1")
            mp.setenv("MIMTL_CACHE_DIR", str(cache))
            mp.delenv("MIMTL_BUNDLE_PATH", raising=False)
            mp.setattr(mimtl.sim.demo, "build_demo", no_demo)
            for name in names:
                assert load_bundle(name).path == (BUNDLES_DIR / name).resolve()
            yield
    finally:
        torch.set_num_threads(threads)
    assert not list(cache.rglob("*")), f"something was built into the cache: {list(cache.rglob('*'))[:5]}"


# ---------------------------------------------------------------------------------------- tiny data
@dataclass
class TinyData:
    """A bundle's tiny, separable data set and the overrides that point its workflows at it.

    ``train`` overrides serve train, evaluate and multi_gpu_train (``ckpt_dir`` and ``output_dir``
    are added per run), ``inference`` serves inference (``ckpt_path`` and ``output_dir`` added).
    """

    root: Path  # holds datalist.json, so that overriding dataset_dir is enough
    datalist: Path
    splits: dict  # the datalist's splits, image paths relative to root
    tests: list[Path]  # the files inference reads (root/test), in the order it lists them
    train: dict
    inference: dict
    key_metric: str  # the validation key metric (metrics.csv of evaluate holds it)
    chance: float  # the key metric of a model that learned nothing, on the test split
    higher_is_better: bool
    predictions: str  # the CSV inference writes: one row per (file, output), columns file and status
    rows_per_file: int
    out_channels: int  # size of the network's dim 1
    export_shapes: list[tuple[int, ...]]  # inputs the exported network is compared on
    evaluate: dict = field(default_factory=dict)  # more overrides for evaluate
    # more overrides for the run that must learn, when the shared 2-epoch run is too short to
    # (empty: the shared train run itself must beat chance)
    learn: dict = field(default_factory=dict)
    adapt_copy: Callable[[Path], None] = lambda copy: None  # make a copy of the bundle fit the tiny model
    extras: dict = field(default_factory=dict)  # more for the bundle's own module
    # (kind, reason) of the bad training files the contract tries (see test_bundle_contract._bad_file)
    bad_inputs: list = field(
        default_factory=lambda: [("colour", "is a colour image"), ("volume", "is a 3D volume"), ("nan", "NaN")]
    )

    def settings(self, out: Path, **extra: Any) -> dict:
        """Overrides of a train/evaluate run on the tiny data, every output in ``out``."""
        return {**self.train, "ckpt_dir": str(out / "models"), "output_dir": str(out / "eval"), **extra}

    def inference_settings(self, ckpt: Path, out: Path, **extra: Any) -> dict:
        return {**self.inference, "ckpt_path": str(ckpt), "output_dir": str(out), **extra}

    def learned(self, value: float) -> bool:
        return value > self.chance if self.higher_is_better else value < self.chance


#: bundle name -> builder of its tiny data in a given (empty) folder
TINY_DATA: dict[str, Callable[[Path], TinyData]] = {}


def tiny_data(name: str):
    """Register the builder of bundle ``name``'s tiny data (see :class:`TinyData`)."""

    def register(builder: Callable[[Path], TinyData]):
        TINY_DATA[name] = builder
        return builder

    return register


def _write_splits(root: Path, film: Callable[[int, int, str], tuple[np.ndarray, dict]]) -> dict:
    """PNG films for SPLITS in root/<split folder>/; ``film(seed, index, folder)`` gives pixels and the item."""
    splits, seed = {}, 0
    for key, (folder, n) in SPLITS.items():
        (root / folder).mkdir()
        splits[key] = []
        for i in range(n):
            pixels, item = film(seed, i, folder)
            name = f"{folder}/{folder}_{i}.png"
            Image.fromarray(pixels).save(root / name)
            splits[key].append({"image": name, **item})
            seed += 1
    return splits


# -- xray_color_classification: a bright square per positive finding
COLOR_LABELS = ["No Finding", "Cardiomegaly", "Lung Lesion", "Pleural Effusion"]
# four label vectors with a positive and a negative of every label: ROC AUC is defined in each split
COLOR_VECTORS = [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [0, 1, 0, 1]]
COLOR_SIZE = 40  # pixels of the films; the bundle resizes them to image_size


def color_film(label, seed: int) -> np.ndarray:
    """A noisy dark film with a bright square per positive finding (No Finding: none)."""
    img = np.random.default_rng(seed).normal(60, 10, (COLOR_SIZE, COLOR_SIZE))
    for positive, (y, x) in zip(label[1:], [(10, 10), (10, 30), (30, 20)]):
        if positive:
            img[y - 5 : y + 5, x - 5 : x + 5] += 150
    return np.clip(img, 0, 255).astype(np.uint8)


def write_datalist(path: Path, header: dict, **splits) -> Path:
    path.write_text(json.dumps({**header, **splits}, indent=1))
    return path


def _color_metadata(copy: Path) -> None:
    """The copy's metadata names the tiny model's 4 labels (the shipped model has CheXpert's 5 + No Finding)."""
    meta_file = copy / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    pred = meta["network_data_format"]["outputs"]["pred"]
    pred["channel_def"] = {str(i): n for i, n in enumerate(COLOR_LABELS)}
    pred["num_channels"] = len(COLOR_LABELS)
    pred["thresholds"] = {n: 0.5 for n in COLOR_LABELS}
    meta_file.write_text(json.dumps(meta))


@tiny_data("xray_color_classification")
def color_classification_data(root: Path) -> TinyData:
    """16 grayscale 40x40 PNGs (8 train, 4 val, 4 test), a multi-label and a one-hot datalist."""
    splits = _write_splits(
        root, lambda seed, i, _: (color_film(COLOR_VECTORS[i % 4], seed), {"label": COLOR_VECTORS[i % 4]})
    )
    onehot = {
        k: [dict(item, label=[int(j == i % 4) for j in range(4)]) for i, item in enumerate(v)]
        for k, v in splits.items()
    }
    header = {"labels": COLOR_LABELS}
    return TinyData(
        root=root,
        datalist=write_datalist(root / "datalist.json", header, **splits),
        splits=splits,
        tests=sorted((root / "test").iterdir()),
        # 2 epochs at 32 px: stage 1 (backbone frozen) for epoch 1, stage 2 from epoch 2
        train={
            "dataset_dir": str(root),
            "image_size": 32,
            "batch_size": 4,
            "num_workers": 0,
            "max_epochs": 2,
            "frozen_epochs": 1,
        },
        inference={
            "dataset_dir": str(root),
            "input": str(root / "test"),
            "image_size": 32,
            "num_workers": 0,
            "gradcam": True,
            # the tiny model's labels, not the shipped model's (metadata.json)
            "label_names": COLOR_LABELS,
            "thresholds": dict(zip(COLOR_LABELS, (0.4, 0.45, 0.55, 0.6), strict=True)),
        },
        key_metric="mean_auc",
        chance=0.5,
        higher_is_better=True,
        predictions="predictions.csv",
        rows_per_file=1,
        out_channels=len(COLOR_LABELS),
        export_shapes=[(2, 1, 224, 224), (3, 1, 32, 32)],  # metadata's input size and the trained one
        extras={"multiclass": write_datalist(root / "multiclass.json", header, **onehot)},
        adapt_copy=_color_metadata,
    )


# -- xray_landmark_detection: three bright marks = three landmarks
LANDMARK_NAMES = ["apex", "carina", "dome"]
LANDMARK_SIZE = (72, 60)  # [x, y] of the films; the bundle resizes them to image_size
LANDMARK_SPACING = 0.5  # mm per pixel in the datalist


def landmark_film(points, seed: int) -> np.ndarray:
    """A noisy dark film (rows = y) with a bright 5x5 mark centred on each landmark [x, y]."""
    img = np.random.default_rng(seed).normal(50, 8, (LANDMARK_SIZE[1], LANDMARK_SIZE[0]))
    for x, y in points:
        img[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] += 160
    return np.clip(img, 0, 255).astype(np.uint8)


def landmark_points(seed: int) -> list[list[float]]:
    rng = np.random.default_rng(1000 + seed)
    base = np.array([[15.0, 12.0], [36.0, 30.0], [55.0, 46.0]])
    return (base + rng.uniform(-4, 4, base.shape)).round(1).tolist()


def _landmark_metadata(copy: Path) -> None:
    """The copy's metadata names the tiny model's 3 landmarks (the shipped model has 11)."""
    meta_file = copy / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {str(i): n for i, n in enumerate(LANDMARK_NAMES)}
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = len(LANDMARK_NAMES)
    meta_file.write_text(json.dumps(meta))


@tiny_data("xray_landmark_detection")
def landmark_detection_data(root: Path) -> TinyData:
    """16 grayscale 72x60 PNGs (8 train, 4 val, 4 test) with 3 landmarks each, spacing per film."""

    def film(seed, i, folder):
        points = landmark_points(seed)
        return landmark_film(points, seed), {"landmarks": points, "spacing": [LANDMARK_SPACING] * 2}

    splits = _write_splits(root, film)
    # one validation film lacks a landmark: marked NaN, never dropped
    splits["validation"][1]["landmarks"][2] = [float("nan"), float("nan")]
    # a model that learned nothing points at the middle of the film: its test MRE in mm
    centre = [(LANDMARK_SIZE[0] - 1) / 2, (LANDMARK_SIZE[1] - 1) / 2]
    chance = LANDMARK_SPACING * float(np.mean([math.dist(p, centre) for i in splits["test"] for p in i["landmarks"]]))
    conformal = root / "conformal.json"  # radii for inference (the calibrated ones are tested in the bundle's module)
    conformal.write_text(json.dumps({"coverage": 0.9, "unit": "mm", "radius": [1.0, 2.0, 3.0], "n_calibration": 9}))
    return TinyData(
        root=root,
        datalist=write_datalist(root / "datalist.json", {"landmark_names": LANDMARK_NAMES}, **splits),
        splits=splits,
        tests=sorted((root / "test").iterdir()),
        train={
            "dataset_dir": str(root),
            "image_size": 64,
            "batch_size": 4,
            "num_workers": 0,
            "max_epochs": 2,
            "sigma": 2.0,
            "encoder_weights": None,
        },
        evaluate={"conformal_file": str(conformal)},
        inference={
            "dataset_dir": str(root),
            "input": str(root / "test"),
            "conformal_file": str(conformal),
            "image_size": 64,
            "num_workers": 0,
            "sigma": 2.0,
            "landmark_names": LANDMARK_NAMES,
        },
        key_metric="mre",
        chance=chance,
        higher_is_better=False,
        predictions="landmarks.csv",
        rows_per_file=len(LANDMARK_NAMES),
        out_channels=len(LANDMARK_NAMES),
        export_shapes=[(2, 1, 64, 64)],
        adapt_copy=_landmark_metadata,
        # EfficientNet-Lite's batch norm (momentum 0.01) keeps its running statistics near their
        # start for the ~100 steps a tiny run has, so its eval-mode output stays uninformative;
        # the contract's learning run uses the ResNet-18 encoder (test MRE 2.0 mm, chance 9.2 mm)
        learn={
            "encoder": "resnet18",
            "max_epochs": 30,
            "batch_size": 2,
            "learning_rate": 0.003,
            "sigma": 3.0,
            "val_interval": 10,
        },
        extras={"conformal": conformal},
    )


# ---------------------------------------------------------------------------------------- shared runs
class BundleRuns:
    """The tiny data and the runs of each bundle, made once per session on first use.

    A run that failed fails every test asking for it again with the same error (it is not rerun).
    """

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory
        self._done: dict[tuple[str, str], Any] = {}

    def _once(self, name: str, what: str, make: Callable[[], Any]) -> Any:
        key = (name, what)
        if key not in self._done:
            try:
                self._done[key] = make()
            except BaseException as e:
                self._done[key] = e
        if isinstance(self._done[key], BaseException):
            raise self._done[key]
        return self._done[key]

    def data(self, name: str) -> TinyData:
        def make():
            assert name in TINY_DATA, (
                f"bundle {name} has no tiny data for its tests: register a builder with "
                f"@tiny_data({name!r}) in tests/bundle_checks.py (see TinyData)"
            )
            return TINY_DATA[name](self._tmp.mktemp(f"{name}_data"))

        return self._once(name, "data", make)

    def _run(
        self, name: str, what: str, run: Callable[[TinyData, Path], subprocess.CompletedProcess]
    ) -> SimpleNamespace:
        def make():
            data = self.data(name)
            out = self._tmp.mktemp(f"{name}_{what}")
            before = snapshot(BUNDLES_DIR / name)
            result = run(data, out)
            assert_ok(result)
            return SimpleNamespace(out=out, result=result, log=log_of(result), before=before)

        return self._once(name, what, make)

    def trained(self, name: str) -> SimpleNamespace:
        """train by ``python -m monai.bundle run`` (common.yaml + train.yaml); ``ckpt`` its model.pt."""
        run = self._run(name, "trained", lambda data, out: monai_bundle_run(name, "train", data.settings(out)))
        run.ckpt = run.out / "models" / "model.pt"
        return run

    def evaluated(self, name: str) -> SimpleNamespace:
        """evaluate (common + train + evaluate) of the trained model on the test split, into out/eval."""
        ckpt_dir = self.trained(name).ckpt.parent
        return self._run(
            name,
            "evaluated",
            lambda data, out: monai_bundle_run(
                name, "evaluate", {**data.settings(out), "ckpt_dir": str(ckpt_dir), **data.evaluate}
            ),
        )

    def learned(self, name: str) -> SimpleNamespace:
        """A train + evaluate run that must learn: the shared one, or one with the ``learn`` overrides."""
        data = self.data(name)
        if not data.learn:
            return self.evaluated(name)

        def run(data, out):
            settings = {**data.settings(out), **data.learn}
            result = monai_bundle_run(name, "train", settings)
            if result.returncode != 0:
                return result
            return monai_bundle_run(name, "evaluate", {**settings, **data.evaluate})

        return self._run(name, "learned", run)

    def inferred(self, name: str) -> SimpleNamespace:
        """inference (common + inference) of the trained model on the test films, into out."""
        ckpt = self.trained(name).ckpt
        return self._run(
            name, "inferred", lambda data, out: monai_bundle_run(name, "inference", data.inference_settings(ckpt, out))
        )

    def multi_gpu(self, name: str) -> SimpleNamespace:
        """``mimtl run NAME multi_gpu_train --nproc 2``: torchrun, 2 gloo CPU processes."""
        return self._run(
            name,
            "multi_gpu",
            lambda data, out: mimtl_run_process(name, "multi_gpu_train", data.settings(out), "--nproc", "2"),
        )


# -- xray_lung_segmentation: two dark lungs and a bright heart, as label maps 1 / 2 / 3
LUNG_SIZE = 64  # square films (rows = y); the bundle's training grid is LUNG_SIZE too
LUNG_LABELS = {"0": "background", "1": "left lung", "2": "right lung", "3": "heart"}
LUNG_SPACING = 0.5  # mm per pixel in the datalist


def lung_film(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy film and its label map: lungs (dark ellipses, the patient's left on the image's right), a bright heart."""
    rng = np.random.default_rng(2000 + seed)
    y, x = np.mgrid[:LUNG_SIZE, :LUNG_SIZE].astype(float)
    dy, dx = rng.uniform(-3, 3, 2)
    label = np.zeros((LUNG_SIZE, LUNG_SIZE), np.uint8)
    label[((x - 18 - dx) / 10) ** 2 + ((y - 30 - dy) / 20) ** 2 <= 1] = 2  # right lung, image left
    label[((x - 46 - dx) / 10) ** 2 + ((y - 30 - dy) / 20) ** 2 <= 1] = 1  # left lung, image right
    label[((x - 36 - dx) / 9) ** 2 + ((y - 42 - dy) / 7) ** 2 <= 1] = 3  # heart, over the left lung's edge
    img = np.choose(label, [120.0, 40.0, 40.0, 200.0]) + rng.normal(0, 10, label.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label


@tiny_data("xray_lung_segmentation")
def lung_segmentation_data(root: Path) -> TinyData:
    """16 grayscale 64x64 PNGs (8 train, 4 val, 4 test) with label maps (1 left lung, 2 right lung, 3 heart)."""
    (root / "labels").mkdir()

    def film(seed, i, folder):
        img, label = lung_film(seed)
        name = root / "labels" / f"{folder}_{i}_label.png"
        Image.fromarray(label).save(name)
        # absolute: the contract's bad-input test rewrites the datalist elsewhere, resolving only "image"
        return img, {"label": str(name), "spacing": [LUNG_SPACING, LUNG_SPACING]}

    splits = _write_splits(root, film)
    return TinyData(
        root=root,
        datalist=write_datalist(root / "datalist.json", {"labels": LUNG_LABELS}, **splits),
        splits=splits,
        tests=sorted((root / "test").iterdir()),
        train={
            "dataset_dir": str(root),
            "image_size": LUNG_SIZE,
            "batch_size": 4,
            "num_workers": 0,
            "max_epochs": 2,
            "encoder_weights": None,
        },
        inference={"dataset_dir": str(root), "input": str(root / "test"), "image_size": LUNG_SIZE, "num_workers": 0},
        key_metric="dice",
        # an all-foreground prediction scores 2a / (1 + a) for a structure of area share a (< 0.2 here)
        chance=0.35,
        higher_is_better=True,
        predictions="segmentation.csv",
        rows_per_file=1,
        out_channels=3,
        export_shapes=[(2, 1, 64, 64), (1, 1, 256, 256)],
        # EfficientNet-Lite's batch norm (momentum 0.01) keeps near its start for a tiny run's steps (see the
        # landmark bundle's data): the learning run uses the ResNet-18 encoder (test Dice ~0.9 after 10 epochs)
        learn={"encoder": "resnet18", "max_epochs": 10, "batch_size": 2, "learning_rate": 0.003, "val_interval": 5},
    )


# -- xray_tile_ae_pretraining: unlabelled films of a few shapes the autoencoder learns to rebuild
TAE_SIZE = 96  # 3 x 3 tiles of 32 px, the bundle's image_size


def tae_film(seed: int) -> np.ndarray:
    """A noisy film: a left-to-right ramp, a bright disc and a dark bar, placed at random."""
    rng = np.random.default_rng(3000 + seed)
    y, x = np.mgrid[:TAE_SIZE, :TAE_SIZE].astype(float)
    img = 40 + 120 * x / TAE_SIZE
    cy, cx = rng.uniform(20, 76, 2)
    img[(x - cx) ** 2 + (y - cy) ** 2 <= 15**2] = 230
    row = int(rng.uniform(10, 80))
    img[row : row + 6, 10:86] = 10
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


@tiny_data("xray_tile_ae_pretraining")
def tile_ae_pretraining_data(root: Path) -> TinyData:
    """16 unlabelled grayscale 96x96 PNGs (8 train, 4 val, 4 test) in a datalist of images only."""
    splits = _write_splits(root, lambda seed, i, _: (tae_film(seed), {}))
    # a model that learned nothing outputs mid-gray: its mean absolute error on the test films in [0, 1]
    films = [np.asarray(Image.open(root / item["image"]), dtype=float) for item in splits["test"]]
    chance = float(np.mean([np.abs((f - f.min()) / (f.max() - f.min()) - 0.5).mean() for f in films]))
    return TinyData(
        root=root,
        datalist=write_datalist(root / "datalist.json", {}, **splits),
        splits=splits,
        tests=sorted((root / "test").iterdir()),
        train={
            "dataset_dir": str(root),
            "image_size": TAE_SIZE,
            "batch_size": 4,
            "num_workers": 0,
            "max_epochs": 2,
            "encoder_weights": None,
        },
        inference={"dataset_dir": str(root), "input": str(root / "test"), "image_size": TAE_SIZE, "num_workers": 0},
        key_metric="recon_mae",
        chance=chance,
        higher_is_better=False,
        predictions="reconstruction.csv",
        rows_per_file=1,
        out_channels=1,
        export_shapes=[(2, 1, TAE_SIZE, TAE_SIZE), (1, 1, 288, 288)],
        learn={"encoder": "resnet18", "max_epochs": 20, "batch_size": 2, "learning_rate": 0.003, "val_interval": 10},
    )


# -- brain_tumor_acgan_augmentation: a blob tumour in 4 noisy sequences; HGG enhance in a ring, LGG do not
BRAIN_SHAPE = (24, 24, 16)  # voxels (x, y, z) at BRAIN_VOXEL mm: the bundle's grid, already a multiple of 8
BRAIN_VOXEL = 4.0
BRAIN_GRADES = ["LGG", "HGG"]


def brain_case(seed: int, hgg: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sequences (x, y, z, 4: flair, t1, t1ce, t2) and the BraTS seg (0, 1, 2, 4) of one case."""
    rng = np.random.default_rng(3000 + seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in BRAIN_SHAPE], indexing="ij"), -1)
    centre = np.array(BRAIN_SHAPE) / 2 + rng.uniform(-2, 2, 3)
    r = np.linalg.norm(grid - centre, axis=-1)
    radius = rng.uniform(3.5, 4.5)
    seg = np.zeros(BRAIN_SHAPE, np.uint8)
    seg[r <= radius + 2] = 2  # oedema
    seg[r <= radius] = 1  # core
    if hgg:
        seg[(r <= radius) & (r > radius - 1.5)] = 4  # enhancing rim
    brain = np.zeros(BRAIN_SHAPE + (4,), np.float32)
    brain[2:-2, 2:-2, 1:-1] = 100.0
    look = {0: [0, 0, 0, 0], 1: [60, -40, -40, 80], 2: [80, -10, 0, 60], 4: [40, -20, 150, 40]}
    for value, shift in look.items():
        brain[seg == value] += np.asarray(shift, np.float32)
    brain += rng.normal(0, 8, brain.shape).astype(np.float32)
    return brain, seg


@tiny_data("brain_tumor_acgan_augmentation")
def brain_tumour_data(root: Path) -> TinyData:
    """16 cases (8 train, 4 val, 4 test; half HGG): one 4D NIfTI of the 4 sequences and a BraTS seg each."""
    import nibabel as nib
    import torch

    from mimtl.networks.tumour_grader import GradeHead, save_grade_head

    affine = np.diag([BRAIN_VOXEL] * 3 + [1.0])
    splits, seed = {}, 0
    for key, (folder, n) in SPLITS.items():
        (root / folder).mkdir()
        splits[key] = []
        for i in range(n):
            hgg = i % 2 == 1
            image, seg = brain_case(seed, hgg)
            name = f"{folder}_{i}"
            nib.save(nib.Nifti1Image(image, affine), root / folder / f"{name}.nii.gz")
            (root / "seg").mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(seg, affine), root / "seg" / f"{name}_seg.nii.gz")
            # absolute label path: the contract's bad-input test rewrites the datalist elsewhere
            grade = BRAIN_GRADES[int(hgg)]
            item = {"image": f"{folder}/{name}.nii.gz", "label": str(root / "seg" / f"{name}_seg.nii.gz")}
            splits[key].append({**item, "grade": grade, "grade_label": int(hgg), "name": name})
            seed += 1
    # inference needs a grading head on the tiny network's 64 pooled features (init_filters 8)
    grader = root / "grader.pt"
    torch.manual_seed(0)
    save_grade_head(GradeHead(64, 2), grader, class_names=BRAIN_GRADES, info={"pooling": "mask"})
    # an untrained network's Dice: predicting one tumour class everywhere scores 2a / (1 + a) for a
    # class of volume share a (< 0.1 here)
    return TinyData(
        root=root,
        datalist=write_datalist(root / "datalist.json", {"grades": BRAIN_GRADES}, **splits),
        splits=splits,
        tests=sorted((root / "test").iterdir()),
        train={"dataset_dir": str(root), "batch_size": 2, "num_workers": 0, "max_epochs": 2},
        inference={"dataset_dir": str(root), "input": str(root / "test"), "grader_path": str(grader), "num_workers": 0},
        key_metric="dice",
        chance=0.2,
        higher_is_better=True,
        predictions="grades.csv",
        rows_per_file=1,
        out_channels=4,
        export_shapes=[(1, 4, 24, 24, 16), (2, 4, 16, 16, 8)],
        learn={"max_epochs": 20, "learning_rate": 0.003},  # test Dice ~0.7 (epoch 20 of a 30-epoch trial: 0.69)
        bad_inputs=[("missing", "does not exist"), ("empty", "is empty"), ("truncated", "is truncated")],
        extras={"grader": grader},
    )
