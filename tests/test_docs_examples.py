"""Every fenced shell and Python example of the README and docs runs, or says why it cannot here.

Collected from README.md, docs/*.md, bundles/README.md and bundles/*/docs/README.md: each shell
command of a ```bash / ```sh / ```shell / ```console block (continuation lines joined) is one
example, and so is each ```python block; the test id is ``file:line``. An example either runs, as
written, or is listed in :data:`NOT_RUN` with the reason it cannot run here, and
:func:`test_every_example_runs_or_says_why` fails on a table entry that matches no example (a
stale one), so a new or changed example is never skipped silently.

What "as written" means here:

* Placeholders become real things (:data:`SUBSTITUTIONS`): ``NAME`` a shipped bundle, ``/my/films``
  a folder of 3 tiny PNG films, ``scan.dcm`` a tiny DICOM, ``/data/ISBI2015`` and the other public
  data sets a tiny folder in the published layout (built with the adapters' test fixtures),
  ``/path/to/a/model.pt`` a real checkpoint, output folders a temporary folder.
* Every example runs in a fresh folder holding a copy of ``bundles/`` (found first through
  ``$MIMTL_BUNDLE_PATH``), so what a command writes into "the bundle" (``models/model.onnx``,
  ``eval/``, a trained ``models/model.pt``) lands in the copy, where the test looks for it
  (:data:`EXPECT`); the shipped files are never touched. Examples from a bundle's README run in
  that bundle's folder (its README says "from the bundle folder").
* Long runs get cheap overrides (:data:`CHEAP`): tiny data and one or two epochs for training, a
  few films for the demo builders. They still run the code path the example names; runs that
  would only be cheap by no longer being what they claim (the 1 h experiments, ``make demo``)
  are in :data:`NOT_RUN`.
* Python blocks run in a subprocess (``OMP_NUM_THREADS=1``), fragments with a small setup
  (:data:`PYTHON_SETUP`, e.g. an input tensor a block uses but does not define); a block that
  shows a function's signature is checked against the real signature instead.

The demo data comes from the user cache (``$MIMTL_CACHE_DIR`` or ``~/.cache/mimtl``) as in
tests/test_shipped_models.py: built once, reused.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TIMEOUT = 900
SHELL_LANGS = {"bash", "sh", "shell", "console"}
PYTHON_LANGS = {"python", "py"}
LANDMARK, COLOR = "xray_landmark_detection", "xray_color_classification"


def doc_files() -> list[str]:
    files = ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))]
    files.append("bundles/README.md")
    files += sorted(p.relative_to(REPO).as_posix() for p in (REPO / "bundles").glob("*/docs/README.md"))
    return [f for f in files if (REPO / f).is_file()]


# ---------------------------------------------------------------------------------------- collecting
@dataclass(frozen=True)
class Example:
    doc: str  # path relative to the repository
    line: int  # 1-based line of the command (shell) or of the block's first line (python)
    kind: str  # "shell" or "python"
    text: str  # the command, continuation lines joined, or the whole python block

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def key(self) -> tuple[str, str]:
        """How the tables below name an example: its file and its text, without a trailing comment
        (shell) or its first line (python). Line numbers move when docs are edited; these do not."""
        if self.kind == "python":
            return self.doc, self.text.strip().splitlines()[0].strip()
        return self.doc, strip_comment(self.text)


def strip_comment(command: str) -> str:
    """A shell command without its trailing ``# comment`` and with runs of blanks made one."""
    out, quote = [], None
    for i, ch in enumerate(command):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            break
        out.append(ch)
    return " ".join("".join(out).split())


FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")


def collect(doc: str, root: Path = REPO) -> list[Example]:
    lines = (root / doc).read_text().splitlines()
    examples, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            if m:  # an unlabelled fence: skip its body
                i += 1
                while i < len(lines) and not FENCE.match(lines[i]):
                    i += 1
            i += 1
            continue
        lang, start = m.group(1).lower(), i + 1
        end = start
        while end < len(lines) and not re.match(r"^\s*```\s*$", lines[end]):
            end += 1
        body = lines[start:end]
        if lang in PYTHON_LANGS:
            examples.append(Example(doc, start + 1, "python", "\n".join(body)))
        elif lang in SHELL_LANGS:
            examples += shell_commands(doc, start, body, console=lang == "console")
        i = end + 1
    return examples


def shell_commands(doc: str, start: int, body: list[str], console: bool) -> list[Example]:
    out, j = [], 0
    while j < len(body):
        line, first = body[j], j
        if console:
            if not line.lstrip().startswith("$ "):
                j += 1
                continue
            line = line.lstrip()[2:]
        parts = [line]
        while parts[-1].rstrip().endswith("\\") and j + 1 < len(body):
            parts[-1] = parts[-1].rstrip()[:-1]
            j += 1
            parts.append(body[j].strip())
        j += 1
        command = " ".join(p.strip() for p in parts).strip()
        if command and not command.startswith("#"):
            out.append(Example(doc, start + first + 1, "shell", command))
    return out


EXAMPLES = [e for doc in doc_files() for e in collect(doc)]
BY_KEY = {e.key: e for e in EXAMPLES}

# ---------------------------------------------------------------------------------------- the reviewed tables
DEMO_ALL = "builds all four demo sets from real anatomy (~4 min on 2 cores); tests/test_demo*.py build each set small"
GRID = "runs the paper's experiment grid (~1 h on 2 cores); tests/test_experiment.py runs grids on tiny bundles"
BENCH = "runs the benchmark suite (minutes) and writes benchmarks/results/ in the checkout; tests/test_benchmarks.py runs the harness on tiny nets"

#: examples that cannot run here, each with the reason (file, command without comment | first line of a python block)
#: why the commands of the bundles without weights are not run here
BRAIN = (
    "runs on the 200-case demo brain set or a real BraTS download; the bundle's module runs each workflow on tiny data"
)
NO_WEIGHTS = (
    "trains on the whole demo set (10-30 min on 2 cores) or reads a user's folder; tests/test_shipped_models.py "
    "evaluates the shipped weights and runs inference on the demo test split, and tests/test_bundle_contract.py "
    "runs train, evaluate, inference and multi_gpu_train of this bundle on tiny data"
)
NOT_RUN: dict[tuple[str, str], str] = {
    # the brain bundle's commands run on the 200-case demo brain set (its build, 12 epochs of 3D
    # training, GAN fits over 25 folds); tests/test_brain_tumor_acgan_augmentation.py runs every
    # workflow (the chain by MONAI's runner, compare on a foreign table, grader, inference,
    # experiment) on tiny data and tests/test_shipped_models.py evaluates the shipped weights
    ("bundles/brain_tumor_acgan_augmentation/docs/README.md", "mimtl run brain_tumor_acgan_augmentation run"): BRAIN,
    (
        "bundles/brain_tumor_acgan_augmentation/docs/README.md",
        "mimtl run brain_tumor_acgan_augmentation run --set resume=true",
    ): BRAIN,
    ("bundles/brain_tumor_acgan_augmentation/docs/README.md", "mimtl run brain_tumor_acgan_augmentation train"): BRAIN,
    (
        "bundles/brain_tumor_acgan_augmentation/docs/README.md",
        "mimtl run brain_tumor_acgan_augmentation evaluate",
    ): BRAIN,
    (
        "bundles/brain_tumor_acgan_augmentation/docs/README.md",
        "mimtl run brain_tumor_acgan_augmentation features",
    ): BRAIN,
    (
        "bundles/brain_tumor_acgan_augmentation/docs/README.md",
        "mimtl run brain_tumor_acgan_augmentation compare",
    ): BRAIN,
    ("bundles/brain_tumor_acgan_augmentation/docs/README.md", "mimtl run brain_tumor_acgan_augmentation grader"): BRAIN,
    (
        "bundles/brain_tumor_acgan_augmentation/docs/README.md",
        "mimtl run brain_tumor_acgan_augmentation experiment",
    ): BRAIN,
    (
        "bundles/brain_tumor_acgan_augmentation/docs/README.md",
        "mimtl run brain_tumor_acgan_augmentation inference --set input=/data/brats_cases --set output_dir=out",
    ): BRAIN,
    (
        "bundles/brain_tumor_acgan_augmentation/docs/README.md",
        "mimtl run brain_tumor_acgan_augmentation compare --set features=my_features.csv --set label=grade",
    ): BRAIN,
    (
        "bundles/brain_tumor_acgan_augmentation/docs/README.md",
        "python -m monai.bundle run --config_file \"['configs/common.yaml','configs/run.yaml']\" --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root .",
    ): BRAIN,
    (
        "bundles/brain_tumor_acgan_augmentation/docs/README.md",
        "mimtl data adapt brats /data/MICCAI_BraTS2020_TrainingData --out brats.json",
    ): BRAIN,
    (
        "bundles/brain_tumor_acgan_augmentation/docs/README.md",
        "mimtl run brain_tumor_acgan_augmentation run --override configs/data/brats.yaml --set datalist=brats.json",
    ): BRAIN,
    # the T-AE and lung segmentation bundles' README commands train on the whole demo set or read a
    # user's folder; the shipped-model tests and the bundle contract run each workflow
    ("bundles/xray_lung_segmentation/docs/README.md", "mimtl run xray_tile_ae_pretraining train"): NO_WEIGHTS,
    (
        "bundles/xray_lung_segmentation/docs/README.md",
        "mimtl run xray_lung_segmentation train --set encoder_weights=bundle:xray_tile_ae_pretraining",
    ): NO_WEIGHTS,
    ("bundles/xray_lung_segmentation/docs/README.md", "mimtl run xray_lung_segmentation evaluate"): NO_WEIGHTS,
    (
        "bundles/xray_lung_segmentation/docs/README.md",
        "mimtl run xray_lung_segmentation inference --set input=/my/films --set output_dir=out",
    ): NO_WEIGHTS,
    (
        "bundles/xray_lung_segmentation/docs/README.md",
        "mimtl run xray_lung_segmentation inference --set input=/my/films --set pixel_spacing=0.14",
    ): NO_WEIGHTS,
    (
        "bundles/xray_lung_segmentation/docs/README.md",
        "mimtl run xray_lung_segmentation train --set decoder=psp --set reconstruction=false --set encoder_weights=imagenet",
    ): NO_WEIGHTS,
    (
        "bundles/xray_lung_segmentation/docs/README.md",
        "mimtl run xray_lung_segmentation multi_gpu_train --nproc 2",
    ): NO_WEIGHTS,
    (
        "bundles/xray_lung_segmentation/docs/README.md",
        "mimtl run xray_lung_segmentation train --set datalist=/my/jsrt_datalist.json",
    ): NO_WEIGHTS,
    (
        "bundles/xray_lung_segmentation/docs/README.md",
        "python -m monai.bundle run --config_file \"['configs/common.yaml','configs/train.yaml']\" --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root .",
    ): NO_WEIGHTS,
    (
        "bundles/xray_lung_segmentation/docs/README.md",
        "python -m monai.bundle run --config_file \"['configs/common.yaml','configs/inference.yaml']\" --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root . --input /my/films",
    ): NO_WEIGHTS,
    ("bundles/xray_tile_ae_pretraining/docs/README.md", "mimtl run xray_tile_ae_pretraining train"): NO_WEIGHTS,
    (
        "bundles/xray_tile_ae_pretraining/docs/README.md",
        "mimtl run xray_tile_ae_pretraining train --set datalist=/my/unlabelled --set val_source=/my/val",
    ): NO_WEIGHTS,
    ("bundles/xray_tile_ae_pretraining/docs/README.md", "mimtl run xray_tile_ae_pretraining evaluate"): NO_WEIGHTS,
    (
        "bundles/xray_tile_ae_pretraining/docs/README.md",
        "mimtl run xray_tile_ae_pretraining inference --set input=/my/films --set output_dir=out",
    ): NO_WEIGHTS,
    (
        "bundles/xray_tile_ae_pretraining/docs/README.md",
        "mimtl run xray_tile_ae_pretraining multi_gpu_train --nproc 2",
    ): NO_WEIGHTS,
    (
        "bundles/xray_tile_ae_pretraining/docs/README.md",
        "mimtl run xray_lung_segmentation train --set encoder_weights=bundle:xray_tile_ae_pretraining",
    ): NO_WEIGHTS,
    (
        "bundles/xray_tile_ae_pretraining/docs/README.md",
        "python -m monai.bundle run --config_file \"['configs/common.yaml','configs/train.yaml']\" --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root .",
    ): NO_WEIGHTS,
    (
        "README.md",
        "make demo",
    ): "installs everything into .venv/ and runs every bundle on the full demo data (~10 min); tests/test_demo.py runs `mimtl demo`",
    ("README.md", "make test"): "installs everything into .venv/ and runs this test suite",
    ("README.md", "mimtl run xray_color_classification experiment"): GRID,
    ("README.md", "mimtl run xray_landmark_detection experiment"): GRID,
    ("README.md", "mimtl data demo all --out demo_data"): DEMO_ALL,
    (
        "docs/bundles.md",
        "mimtl run xray_color_classification experiment --set seeds=[0,1,2] --set output_dir=/runs/color",
    ): GRID,
    ("docs/demo_data.md", "mimtl data demo all --out demo_data"): DEMO_ALL,
    (
        "docs/installation.md",
        "python3 -m venv .venv && . .venv/bin/activate",
    ): "creates a virtual environment (the install steps below need it)",
    (
        "docs/installation.md",
        "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu",
    ): "installs packages from PyTorch's index (no network here)",
    ("docs/installation.md", 'pip install -e ".[all]"'): "installs packages",
    (
        "docs/installation.md",
        "make demo TORCH=torch TORCH_INDEX=https://download.pytorch.org/whl/cu126",
    ): "installs a CUDA torch build (several GB) and needs a GPU",
    ("docs/installation.md", "make demo TORCH=torch TORCH_INDEX="): "installs PyPI's CUDA torch build (several GB)",
    (
        "docs/installation.md",
        "MIMTL_WHEELHOUSE=/media/wheels mimtl data fetch",
    ): "needs the two wheels downloaded elsewhere (the cache here already holds the sources, so it would not read them); tests/test_sources.py reads a wheelhouse",
    ("docs/performance.md", "python benchmarks/run_all.py"): BENCH + "; also rewrites docs/performance.md",
    ("docs/performance.md", "python benchmarks/run_all.py --quick"): BENCH,
    (
        "docs/performance.md",
        "python benchmarks/run_all.py --threads 1 --no-compile --out /tmp/t1.json --no-docs",
    ): BENCH,
    (
        "docs/performance.md",
        "python benchmarks/run_all.py --bundle bundles/<name> --bundle-override dataset_dir=/data/x",
    ): BENCH,
    (
        "docs/performance.md",
        "python benchmarks/run_all.py --render benchmarks/results/full.json",
    ): "rewrites the tables of docs/performance.md in the checkout from the full run's JSON (not kept in git)",
    (
        "docs/usage.md",
        "mimtl run NAME train --set train::trainer::max_epochs=5 --set device=cuda",
    ): "needs a GPU (device=cuda)",
    ("docs/usage.md", "mimtl data demo all --out demo_data"): DEMO_ALL,
    (
        "docs/usage.md",
        "mimtl run NAME train --resume ...same --set options...",
    ): "a template (`...same --set options...` are the killed run's own); tests/test_resume.py kills and resumes both bundles",
    (
        "docs/usage.md",
        "python -m monai.bundle run --config_file ... --resume true",
    ): "a template (`...` are the killed run's files); tests/test_resume.py resumes both bundles",
    (f"bundles/{COLOR}/docs/README.md", f"mimtl run {COLOR} experiment"): GRID,
    (f"bundles/{LANDMARK}/docs/README.md", f"mimtl run {LANDMARK} experiment"): GRID,
    (
        "docs/usage.md",
        "mimtl domain fit NAME --coverage 0.95",
    ): "runs inference over the 340 training and validation films (minutes); tests/test_domain.py fits through the same code on a small datalist",
    (
        "docs/usage.md",
        "mimtl domain report NAME --write",
    ): "runs inference over the test split and 84 foreign inputs (minutes) and rewrites the README table; tests/test_domain.py runs the same report on both bundles",
}


# -- placeholders -> real things (see Assets); applied to every example's text, longest first
def substitutions(a: Assets, work: Path, name: str) -> dict[str, str]:
    return {
        "/data/CheXpert-v1.0-small": str(a.chexpert / "CheXpert-v1.0-small"),
        "/data/CheXpert": str(a.chexpert),
        "/data/chexpert": str(a.chexpert),
        "/data/ISBI2015": str(a.ceph),
        "/data/chest": str(a.shenzhen),
        "/my/films": str(a.films),
        "/data/my_pngs": str(a.films),
        "/data/films": str(a.films),
        "/data/my_dicoms": str(a.dicoms),
        "/data/case1.dcm": str(a.dicom),
        "scan.dcm": str(a.dicom),
        "chest.dcm": str(a.dicom),
        "/path/to/a/model.pt": str(a.color_model),  # another model's encoder, learned from films
        "/path/to/any/model.pt": str(a.color_model),
        "/runs/a/models/model.pt": str(a.color_model),  # a run's color module
        "runs/stage2/model.pt": str(a.color_model),
        "/runs/hand/models/model.pt": str(a.landmark_model),  # a landmark model (another anatomy)
        "/weights/densenet121-a639ec97.pth": str(a.densenet),
        "densenet121-a639ec97.pth": str(a.densenet),
        "/w/resnet18-f37072fd.pth": str(a.resnet18),
        "/shared/bundles": str(work / "bundles"),
        "/tmp/out": str(work / "tmp_out"),
        "my_datalist.json": str(a.color_tiny / "datalist.json"),
        "NAME": name,
    }


#: which bundle ``NAME`` is in an example (default: the landmark bundle)
NAME_IS: dict[tuple[str, str], str] = {
    # trains on a CheXpert datalist: the classification bundle's data
    ("docs/usage.md", "mimtl run NAME train --set datalist=chexpert.json"): COLOR,
    # evaluate merges over train; the shipped classifier, on its own demo test split
    (
        "docs/usage.md",
        "python -m monai.bundle run --config_file \"['bundles/NAME/configs/common.yaml','bundles/NAME/configs/train.yaml','bundles/NAME/configs/evaluate.yaml']\" --meta_file bundles/NAME/configs/metadata.json --bundle_root bundles/NAME",
    ): COLOR,
    ("docs/usage.md", "mimtl run NAME evaluate"): COLOR,
}


def tiny(name: str, a: Assets, **more) -> dict:
    """Training overrides onto the bundle's tiny data of tests/bundle_checks.py: the landmark bundle
    for one epoch, the classification bundle for its two (one per stage)."""
    settings = dict(a.tiny[name].train)
    if name == LANDMARK:
        settings["max_epochs"] = 1
    return {**settings, **more}


def mimtl_sets(settings: dict) -> str:
    from bundle_checks import set_args

    return " ".join(f"{a}" if a == "--set" else shell_quote(a) for a in set_args(settings))


def monai_args(settings: dict) -> str:
    return " ".join(f"--{k} " + shell_quote("$None" if v is None else str(v)) for k, v in settings.items())


def shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


_TRAIN_LM = lambda a: mimtl_sets(tiny(LANDMARK, a))
_TRAIN_CLS = lambda a: mimtl_sets(tiny(COLOR, a))
# the shipped model (six labels) on its demo test split, not on the tiny data's four labels
_EVAL_CLS = lambda a: mimtl_sets({"num_workers": 0})
_DATALIST_TRAIN = lambda a: mimtl_sets(
    {"image_size": 64, "max_epochs": 1, "num_workers": 0, "batch_size": 2, "encoder_weights": None}
)
_CLS_DATALIST_TRAIN = lambda a: mimtl_sets(
    {"image_size": 32, "max_epochs": 1, "frozen_epochs": 0, "num_workers": 0, "batch_size": 4}
)
_README_LM = f"bundles/{LANDMARK}/docs/README.md"
_README_CLS = f"bundles/{COLOR}/docs/README.md"
_MONAI_TRAIN = "python -m monai.bundle run --config_file \"['bundles/NAME/configs/common.yaml','bundles/NAME/configs/train.yaml']\" --meta_file bundles/NAME/configs/metadata.json --bundle_root bundles/NAME"

#: what is appended to a long command (``--set`` for mimtl, ``--id value`` for MONAI's runner):
#: tiny data and one epoch (two for the classification bundle's two stages), nothing else
CHEAP: dict[tuple[str, str], Callable[[Assets], str]] = {
    ("README.md", "mimtl run xray_landmark_detection train --set encoder_weights=/path/to/a/model.pt"): lambda a: (
        mimtl_sets({k: v for k, v in tiny(LANDMARK, a).items() if k != "encoder_weights"})
    ),
    ("README.md", _MONAI_TRAIN): lambda a: monai_args(tiny(LANDMARK, a)),
    ("README.md", "mimtl run NAME train --set train::trainer::max_epochs=2"): lambda a: mimtl_sets(
        {k: v for k, v in tiny(LANDMARK, a).items() if k != "max_epochs"}
    ),
    ("README.md", "mimtl run NAME multi_gpu_train --nproc 2"): _TRAIN_LM,
    ("README.md", "mimtl run NAME train --override lab_b.yaml"): lambda a: mimtl_sets(
        {k: v for k, v in tiny(LANDMARK, a).items() if k not in ("dataset_dir", "max_epochs")}
    ),
    (
        "docs/adapters.md",
        "mimtl run xray_landmark_detection train --override bundles/xray_landmark_detection/configs/adapters/shenzhen_landmarks.yaml --set datalist=$PWD/chest.json",
    ): _DATALIST_TRAIN,
    # the published split needs the whole 279-film set; the tiny layout has 10 films
    ("docs/adapters.md", "mimtl data adapt shenzhen_landmarks /data/chest --out chest.json"): lambda a: (
        "--option split=seeded"
    ),
    ("docs/usage.md", _MONAI_TRAIN): lambda a: monai_args(tiny(LANDMARK, a)),
    (
        "docs/usage.md",
        "python -m monai.bundle run --config_file \"['bundles/NAME/configs/common.yaml','bundles/NAME/configs/train.yaml','bundles/NAME/configs/evaluate.yaml']\" --meta_file bundles/NAME/configs/metadata.json --bundle_root bundles/NAME",
    ): lambda a: monai_args({"num_workers": 0}),
    (
        "docs/usage.md",
        "torchrun --standalone --nproc_per_node=2 -m monai.bundle run --config_file \"['bundles/NAME/configs/common.yaml','bundles/NAME/configs/train.yaml','bundles/NAME/configs/multi_gpu_train.yaml']\" ...",
    ): lambda a: monai_args(tiny(LANDMARK, a)),
    ("docs/usage.md", "mimtl run NAME evaluate"): _EVAL_CLS,
    ("docs/usage.md", "mimtl run NAME multi_gpu_train --nproc 2"): _TRAIN_LM,
    ("docs/usage.md", "mimtl run NAME train --set datalist=chexpert.json"): _CLS_DATALIST_TRAIN,
    ("docs/usage.md", "mimtl run NAME train --override lab_b.yaml"): lambda a: mimtl_sets(
        {k: v for k, v in tiny(LANDMARK, a).items() if k not in ("dataset_dir", "max_epochs")}
    ),
    (_README_CLS, f"mimtl run {COLOR} train"): _TRAIN_CLS,
    (_README_CLS, f"mimtl run {COLOR} evaluate"): _EVAL_CLS,
    (_README_CLS, f"mimtl run {COLOR} multi_gpu_train --nproc 2"): _TRAIN_CLS,
    (
        _README_CLS,
        "torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"['configs/common.yaml','configs/train.yaml','configs/multi_gpu_train.yaml']\" --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root .",
    ): lambda a: monai_args(tiny(COLOR, a)),
    (_README_CLS, f"mimtl run {COLOR} train --set datalist=chexpert.json"): _CLS_DATALIST_TRAIN,
    (
        _README_CLS,
        f"mimtl run {COLOR} train --set backbone=densenet121 --set backbone_weights=/weights/densenet121-a639ec97.pth --set color_weights=/runs/a/models/model.pt --set freeze_color=true",
    ): lambda a: mimtl_sets(tiny(COLOR, a, image_size=64)),
    (_README_LM, f"mimtl run {LANDMARK} train"): _TRAIN_LM,
    (_README_LM, f"mimtl run {LANDMARK} multi_gpu_train --nproc 2"): _TRAIN_LM,
    (_README_LM, f"mimtl run {LANDMARK} train --set encoder_weights=null"): lambda a: mimtl_sets(
        {k: v for k, v in tiny(LANDMARK, a).items() if k != "encoder_weights"}
    ),
    (_README_LM, f"mimtl run {LANDMARK} train --set encoder_weights=/path/to/any/model.pt"): lambda a: mimtl_sets(
        {k: v for k, v in tiny(LANDMARK, a).items() if k != "encoder_weights"}
    ),
    (_README_LM, f"mimtl run {LANDMARK} train --set encoder_weights=bundle:xray_color_classification"): lambda a: (
        mimtl_sets({k: v for k, v in tiny(LANDMARK, a).items() if k != "encoder_weights"})
    ),
    (
        _README_LM,
        "torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"['configs/common.yaml','configs/train.yaml','configs/multi_gpu_train.yaml']\" --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root .",
    ): lambda a: monai_args(tiny(LANDMARK, a)),
    (
        _README_LM,
        f"mimtl run {LANDMARK} train --override configs/adapters/isbi2015_ceph.yaml --set datalist=$PWD/ceph.json",
    ): _DATALIST_TRAIN,
}

#: text replaced in an example before it runs, for a cheaper run of the same thing
REPLACE: dict[tuple[str, str], list[tuple[str, str]]] = {
    # a fresh rendezvous port: the other pytest worker may run torchrun at the same time
    (
        _README_LM,
        "torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"['configs/common.yaml','configs/train.yaml','configs/multi_gpu_train.yaml']\" --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root .",
    ): [("torchrun --nproc_per_node", "torchrun --standalone --nproc_per_node")],
    (
        _README_CLS,
        "torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"['configs/common.yaml','configs/train.yaml','configs/multi_gpu_train.yaml']\" --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root .",
    ): [("torchrun --nproc_per_node", "torchrun --standalone --nproc_per_node")],
    # the same styled builders on a few films (2-5 s of CPU each for a styled film)
    ("docs/simulator.md", "mimtl data demo classification --out demo_cls_oa --n 24 --style other_acquisition"): [
        ("--n 24", "--n 4")
    ],
    ("docs/simulator.md", "mimtl data demo landmarks --out demo_lm_rand --n 24 --style randomized"): [
        ("--n 24", "--n 4")
    ],
    ("docs/simulator.md", "from dataclasses import replace"): [("n=12", "n=6"), ("n=6, style=mine", "n=2, style=mine")],
    # the same builder, 8 films instead of 100 (~0.2 s of CPU each)
    ("docs/demo_data.md", "mimtl data demo classification --out demo_data/cls --n 100"): [("--n 100", "--n 8")],
    ("docs/demo_data.md", "from mimtl.sim.demo import build_demo"): [("n=100", "n=8")],
    # 2 cases of the brain set at its documented size and spacing instead of 60
    ("docs/demo_data.md", "from mimtl.sim.brain import build_brain_tumours"): [
        ("n=60", "n=2"),
        ("sheet_cases=12", "sheet_cases=2"),
    ],
    # the trailing `...` of the multi-GPU line stands for the --meta_file/--bundle_root of the lines above
    (
        "docs/usage.md",
        "torchrun --standalone --nproc_per_node=2 -m monai.bundle run --config_file \"['bundles/NAME/configs/common.yaml','bundles/NAME/configs/train.yaml','bundles/NAME/configs/multi_gpu_train.yaml']\" ...",
    ): [(" ...", " --meta_file bundles/NAME/configs/metadata.json --bundle_root bundles/NAME")],
}

#: commands run first, in the same shell (an earlier example the command relies on, or a file it names)
LAB_B = "printf 'dataset_dir: {tiny}\\ntrain::trainer::max_epochs: 1\\n' > lab_b.yaml  # docs/usage.md's lab_b.yaml, pointed at tiny data"
BEFORE: dict[tuple[str, str], list] = {
    ("README.md", "mimtl check-data ceph.json"): [
        ("README.md", "mimtl data adapt isbi2015_ceph /data/ISBI2015 --out ceph.json")
    ],
    ("README.md", "mimtl audit lab_b.yaml"): [LAB_B],
    ("README.md", "mimtl run NAME train --override lab_b.yaml"): [LAB_B],
    ("docs/usage.md", "mimtl run NAME train --override lab_b.yaml"): [LAB_B],
    ("docs/adapters.md", "mimtl check-data chexpert.json --keys image"): [
        ("docs/adapters.md", "mimtl data adapt chexpert /data/chexpert --out chexpert.json")
    ],
    (
        "docs/adapters.md",
        "mimtl run xray_landmark_detection train --override bundles/xray_landmark_detection/configs/adapters/shenzhen_landmarks.yaml --set datalist=$PWD/chest.json",
    ): [("docs/adapters.md", "mimtl data adapt shenzhen_landmarks /data/chest --out chest.json")],
    ("docs/installation.md", "mimtl list"): [("docs/installation.md", "export MIMTL_BUNDLE_PATH=/shared/bundles")],
    ("docs/usage.md", "mimtl run NAME train --set datalist=chexpert.json"): [
        ("docs/usage.md", "mimtl data adapt chexpert /data/CheXpert --out chexpert.json --option uncertain=ones")
    ],
    (_README_CLS, f"mimtl run {COLOR} train --set datalist=chexpert.json"): [
        (_README_CLS, "mimtl data adapt chexpert /data/CheXpert-v1.0-small --out chexpert.json")
    ],
    (
        _README_LM,
        f"mimtl run {LANDMARK} train --override configs/adapters/isbi2015_ceph.yaml --set datalist=$PWD/ceph.json",
    ): [
        "mimtl data adapt isbi2015_ceph /data/ISBI2015 --out ceph.json --option num_validation=2  # the README's table (20 of the real set's 150)"
    ],
}

#: the code an example names as its input but does not define (python), run first
PYTHON_SETUP: dict[tuple[str, str], str] = {
    (
        "docs/networks.md",
        "from mimtl.networks import efficientnet_lite0, IMAGENET_LITE_MEAN, IMAGENET_LITE_STD",
    ): "import torch\nrgb_0_255 = torch.randint(0, 256, (2, 3, 224, 224)).float()",
    ("docs/networks.md", "import torch"): "import torch\nx01 = torch.rand(2, 1, 64, 64)",
    # the block continues the one above it
    ("docs/usage.md", "from monai.bundle import load"): "@docs/usage.md:import mimtl",
    (
        "docs/demo_data.md",
        "from monai.data import load_decathlon_datalist",
    ): "@docs/demo_data.md:from mimtl.sim.brain import build_brain_tumours",
}

#: files an example says it writes (globs, relative to the folder it runs in)
EXPECT: dict[tuple[str, str], list[str]] = {
    (
        "README.md",
        "mimtl run xray_color_classification inference --set input=/my/films --set gradcam=true --set output_dir=out",
    ): ["out/predictions.csv", "out/gradcam/film0_gradcam.png"],
    ("README.md", "mimtl run xray_landmark_detection inference --set input=/my/films --set output_dir=out"): [
        "out/landmarks.csv",
        "out/landmarks.json",
        "out/overlays/*.png",
    ],
    ("README.md", "mimtl export NAME --format onnx"): ["bundles/xray_landmark_detection/models/model.onnx"],
    ("README.md", "mimtl data adapt isbi2015_ceph /data/ISBI2015 --out ceph.json"): ["ceph.json"],
    ("README.md", "import mimtl"): ["out/landmarks.csv"],
    ("docs/adapters.md", "from mimtl.data.adapters import adapt, write_datalist"): ["chexpert.json"],
    ("docs/demo_data.md", "mimtl data demo classification --out demo_data/cls --n 100"): [
        "demo_data/cls/datalist.json",
        "demo_data/cls/contact_sheet.png",
    ],
    ("docs/demo_data.md", "from mimtl.sim.demo import build_demo"): ["demo_data/cls/datalist.json"],
    ("docs/demo_data.md", "from mimtl.sim.brain import build_brain_tumours"): [
        "data/brain/datalist.json",
        "data/brain/contact_sheet.png",
    ],
    ("docs/usage.md", "mimtl run NAME evaluate"): ["bundles/xray_color_classification/eval/metrics.csv"],
    ("docs/usage.md", "mimtl run NAME inference --set dataset_dir=/data/my_pngs --set output_dir=/tmp/out"): [
        "tmp_out/landmarks.csv"
    ],
    ("docs/usage.md", "mimtl export NAME --format onnx"): ["bundles/xray_landmark_detection/models/model.onnx"],
    ("docs/usage.md", "import mimtl"): ["tmp_out/landmarks.csv"],
    (_README_CLS, f"mimtl run {COLOR} train"): ["models/model.pt"],
    (_README_CLS, f"mimtl run {COLOR} evaluate"): ["eval/metrics.csv", "eval/predictions.csv"],
    (_README_CLS, f"mimtl run {COLOR} inference --set input=/my/films --set gradcam=true"): [
        "eval/predictions.csv",
        "eval/gradcam/film0_gradcam.png",
    ],
    (_README_CLS, "import mimtl"): ["tmp_out/predictions.csv", "tmp_out/gradcam/*.png"],
    (_README_LM, f"mimtl run {LANDMARK} calibrate"): ["models/conformal.json"],
    (_README_LM, f"mimtl run {LANDMARK} evaluate"): [
        "eval/metrics.csv",
        "eval/landmark_*.csv",
        "eval/landmark_summary.json",
    ],
    (_README_LM, f"mimtl run {LANDMARK} inference --set input=/my/films --set output_dir=out"): ["out/landmarks.csv"],
    (_README_LM, "import mimtl"): ["tmp_out/landmarks.csv", "tmp_out/landmarks.json", "tmp_out/overlays/*.png"],
}

#: examples that take more than a few seconds (training, torchrun, evaluation on the demo split, export)
SLOW_WORDS = (
    " train",
    "multi_gpu_train",
    "torchrun",
    "verify --all",
    "mimtl export",
    " calibrate",
    " evaluate",
    "evaluate.yaml",
    "demo classification",
    "build_demo",
    "build_brain_tumours",
    "load_decathlon_datalist",
)


def is_slow(e: Example) -> bool:
    return any(w in e.text for w in SLOW_WORDS)


# ---------------------------------------------------------------------------------------- what the examples read
class Assets:
    """Tiny stand-ins for the files and folders the examples name, made once per session."""

    def __init__(self, root: Path):
        from bundle_checks import TINY_DATA

        self.root = root
        self.films = root / "films"  # 3 small gray PNG films, no spacing
        self.films.mkdir()
        for i in range(3):
            ramp = np.add.outer(np.arange(64), np.arange(64)) * (i + 2) % 256
            Image.fromarray(ramp.astype(np.uint8)).save(self.films / f"film{i}.png")
        self.dicoms = root / "dicoms"  # 2 DX DICOM films with a pixel spacing
        self.dicoms.mkdir()
        for i in range(2):
            write_dicom(self.dicoms / f"case{i}.dcm", seed=i)
        self.dicom = write_dicom(root / "scan.dcm", seed=7)
        self.tiny = {}
        for name in (LANDMARK, COLOR):
            (root / f"tiny_{name}").mkdir()
            self.tiny[name] = TINY_DATA[name](root / f"tiny_{name}")
        self.color_tiny = self.tiny[COLOR].root
        self.color_model = REPO / "bundles" / COLOR / "models" / "model.pt"
        self.landmark_model = REPO / "bundles" / LANDMARK / "models" / "model.pt"
        self.chexpert = make_chexpert_layout(root / "chexpert")
        self.ceph = make_ceph_layout(root / "ISBI2015")
        self.shenzhen = make_shenzhen_layout(root / "shenzhen")
        self.densenet, self.resnet18 = torchvision_files(root / "weights")


def write_dicom(path: Path, seed: int) -> Path:
    """A 64 x 80 12-bit DX film with an Imager Pixel Spacing, as a detector writes it."""
    from pydicom import uid
    from pydicom.dataset import FileDataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    pixels = (
        np.add.outer(np.arange(64), np.arange(80)) * 20 + np.random.default_rng(seed).integers(0, 200, (64, 80))
    ) % 4096
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def make_chexpert_layout(root: Path) -> Path:
    """CheXpert-v1.0-small as published (train.csv, valid.csv, patient folders), tiny JPEGs."""
    from test_adapters import make_chexpert

    return make_chexpert(root)


def make_ceph_layout(root: Path) -> Path:
    """The ISBI 2015 layout (RawImage/..., AnnotationsByMD/400_{senior,junior}), films large enough for the points."""
    from test_adapters import ceph_points, make_ceph

    make_ceph(root)
    for bmp in root.glob("RawImage/*/*.bmp"):  # the fixture's 12x15 films hold none of its points
        case = int(bmp.stem)
        xs, ys = zip(*ceph_points(case, "senior") + ceph_points(case, "junior"))
        Image.new("L", (max(xs) + 20, max(ys) + 20), 128).save(bmp)
    return root


def make_shenzhen_layout(root: Path) -> Path:
    """The Shenzhen chest landmark layout (chest/pngs, chest/labels) of 10 films."""
    from test_adapters_chest_landmarks import make_chest

    return make_chest(root, [f"CHNCXR_{k:04d}_0" for k in range(1, 11)], size=(40, 30))


def torchvision_files(root: Path) -> tuple[Path, Path]:
    """densenet121-a639ec97.pth and resnet18-f37072fd.pth: torchvision's layout, random values."""
    import torch
    from test_color_networks import _torchvision_densenet, _torchvision_resnet

    from mimtl.networks import create_backbone

    root.mkdir()
    densenet, resnet = root / "densenet121-a639ec97.pth", root / "resnet18-f37072fd.pth"
    torch.save(_torchvision_densenet(create_backbone("densenet121", num_classes=1000), False), densenet)
    torch.save(_torchvision_resnet(create_backbone("resnet18", num_classes=1000)), resnet)
    return densenet, resnet


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    return Assets(tmp_path_factory.mktemp("doc_assets"))


# ---------------------------------------------------------------------------------------- running
def environment(work: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    env["MIMTL_BUNDLE_PATH"] = str(work / "bundles")  # the copy, found before the shipped bundles
    return env


def fresh_work(tmp_path: Path) -> Path:
    """A folder with a copy of bundles/ (without outputs of earlier runs)."""
    work = tmp_path / "work"
    ignore = shutil.ignore_patterns("eval", "experiment", "model.onnx", "model.ts", "__pycache__")
    for bundle in sorted((REPO / "bundles").iterdir()):
        if (bundle / "configs" / "metadata.json").exists():
            shutil.copytree(bundle, work / "bundles" / bundle.name, ignore=ignore)
    shutil.copy(REPO / "bundles" / "README.md", work / "bundles" / "README.md")
    return work


#: examples about the checkout itself, run in the repository root
IN_CHECKOUT = {("docs/performance.md", ". .venv/bin/activate")}


def cwd_of(e: Example, work: Path) -> Path:
    """Where an example runs: a bundle's README from its bundle folder, the rest from the work folder."""
    if e.key in IN_CHECKOUT:
        return REPO
    parts = Path(e.doc).parts
    if len(parts) == 4 and parts[0] == "bundles" and parts[2] == "docs":
        return work / "bundles" / parts[1]
    return work


def substitute(text: str, a: Assets, work: Path, name: str) -> str:
    subs = substitutions(a, work, name)
    pattern = re.compile("|".join(rf"(?<![\w.]){re.escape(k)}(?![\w])" for k in sorted(subs, key=len, reverse=True)))
    return pattern.sub(lambda m: subs[m.group(0)], text)


def prepared(e: Example, a: Assets, work: Path) -> str:
    """The example's text as it runs: replacements, placeholders, cheap overrides."""
    text = e.text
    for old, new in REPLACE.get(e.key, []):
        assert old in text, f"{e.id}: REPLACE entry {old!r} no longer in the example"
        text = text.replace(old, new)
    text = substitute(text, a, work, NAME_IS.get(e.key, LANDMARK))
    if e.key in CHEAP:
        text = strip_comment(text) + " " + CHEAP[e.key](a)
    return text


def shell_script(e: Example, a: Assets, work: Path) -> str:
    lines = []
    for before in BEFORE.get(e.key, []):
        if isinstance(before, tuple):
            lines.append(prepared(BY_KEY[before], a, work))
        else:
            lines.append(substitute(before.replace("{tiny}", str(a.tiny[LANDMARK].root)), a, work, LANDMARK))
    lines.append(prepared(e, a, work))
    return "\n".join(lines) + "\n"


def python_source(e: Example, a: Assets, work: Path) -> str:
    setup = PYTHON_SETUP.get(e.key, "")
    if setup.startswith("@"):  # the block continues an earlier one
        doc, first = setup[1:].split(":", 1)
        setup = prepared(BY_KEY[(doc, first)], a, work)
    return (setup + "\n" if setup else "") + prepared(e, a, work)


def run_checked(cmd: list[str], cwd: Path, work: Path, what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=environment(work), capture_output=True, text=True, timeout=TIMEOUT)
    log = (result.stdout[-4000:] + "\n" + result.stderr[-6000:]).strip()
    assert result.returncode == 0, f"exit {result.returncode}\n--- ran:\n{what}\n--- output:\n{log}"
    return result


def signature_call(code: str) -> ast.Call | None:
    """The call of a block that only shows a signature, ``f(arg, key=default, ...)``; else None."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr) or not isinstance(tree.body[0].value, ast.Call):
        return None
    call = tree.body[0].value
    if isinstance(call.func, ast.Name) and all(isinstance(x, ast.Name) for x in call.args):
        return call
    return None


SIGNATURE_MODULES = ["mimtl.data.adapters", "mimtl.networks", "mimtl.bundle", "mimtl"]


def check_signature(e: Example, call: ast.Call) -> None:
    """Every parameter the doc shows, in order, with its default, is the function's."""
    fn = None
    for module in SIGNATURE_MODULES:
        fn = getattr(importlib.import_module(module), call.func.id, None)
        if fn is not None:
            break
    assert fn is not None, f"{e.id}: no function {call.func.id} in {SIGNATURE_MODULES}"
    module = importlib.import_module(fn.__module__)
    params = list(inspect.signature(fn).parameters.values())
    shown = [(x.id, inspect.Parameter.empty) for x in call.args] + [(k.arg, k.value) for k in call.keywords]
    real = [(p.name, p.default) for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert [n for n, _ in shown] == [n for n, _ in real], (
        f"{e.id}: parameters {[n for n, _ in shown]} != {call.func.id}{inspect.signature(fn)}"
    )
    for (name, node), (_, default) in zip(shown, real):
        if node is inspect.Parameter.empty:
            assert default is inspect.Parameter.empty, f"{e.id}: {name} has a default ({default!r})"
        elif isinstance(node, ast.Name):
            assert getattr(module, node.id, object()) == default, (
                f"{e.id}: {name}={node.id}, but the default is {default!r}"
            )
        else:
            shown_value = ast.literal_eval(node)
            assert shown_value == default or (isinstance(default, tuple) and list(default) == shown_value), (
                f"{e.id}: {name}={shown_value!r}, but the default is {default!r}"
            )


# ---------------------------------------------------------------------------------------- tests
def params():
    out = []
    for e in EXAMPLES:
        marks = [pytest.mark.slow] if is_slow(e) and e.key not in NOT_RUN else []
        out.append(pytest.param(e, id=e.id, marks=marks))
    return out


_DONE: dict[str, str] = {}  # identical scripts (the same command in several docs) run once


@pytest.mark.parametrize("example", params())
def test_doc_example(example: Example, assets: Assets, tmp_path):
    e = example
    if e.key in NOT_RUN:
        pytest.skip(f"not run here: {NOT_RUN[e.key]}")
    if e.kind == "python" and (call := signature_call(e.text)) is not None:
        check_signature(e, call)
        return
    work = fresh_work(tmp_path)
    try:
        run_example(e, assets, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # 40 MB of bundle copy per example


def run_example(e: Example, assets: Assets, work: Path) -> None:
    cwd = cwd_of(e, work)
    if e.kind == "python":
        source = python_source(e, assets, work)
        run_checked([sys.executable, "-c", source], cwd, work, source)
    else:
        script = shell_script(e, assets, work)
        dedupe = f"{cwd}\n{script}".replace(str(work), "<work>")
        if e.key not in EXPECT and dedupe in _DONE:
            return  # the same command, run for another doc's example: passed there
        run_checked(["bash", "-e", "-c", script], cwd, work, script)
        _DONE[dedupe] = e.id
    for pattern in EXPECT.get(e.key, []):
        # relative to where the example ran, or to the work folder for a substituted absolute path (/tmp/out)
        found = list(cwd.glob(pattern)) or list(work.glob(pattern))
        assert found, f"{e.id}: the example says it writes {pattern}, but neither {cwd} nor {work} has such a file"


def test_every_example_runs_or_says_why():
    """Each table names examples that exist (no stale entries), and each entry of NOT_RUN gives a reason."""
    keys = {e.key for e in EXAMPLES}
    assert len(EXAMPLES) > 40, "the collector found too few examples: has the fence syntax changed?"
    for table in (IN_CHECKOUT, NOT_RUN, NAME_IS, CHEAP, REPLACE, BEFORE, PYTHON_SETUP, EXPECT):
        stale = [k for k in table if k not in keys]
        assert not stale, f"table entries that match no example (edited or removed?): {stale}"
    for before in BEFORE.values():
        assert all(b in keys for b in before if isinstance(b, tuple)), before
    for setup in PYTHON_SETUP.values():
        if setup.startswith("@"):
            assert tuple(setup[1:].split(":", 1)) in keys, setup
    assert all(len(reason) > 10 for reason in NOT_RUN.values())
    assert not set(NOT_RUN) & (set(CHEAP) | set(EXPECT) | set(BEFORE)), "an example is both run and not run"
    # a python block is named by its file and first line: those must be unique
    python = [e.key for e in EXAMPLES if e.kind == "python"]
    assert len(python) == len(set(python)), sorted(k for k in python if python.count(k) > 1)


def test_collector_reads_every_kind_of_block(tmp_path):
    """The collector sees each kind of fence, joins continuation lines and skips comments and console output."""
    doc = tmp_path / "x.md"
    doc.write_text(
        "```bash\n# a comment\nmimtl list   # trailing\nmimtl run a \\\n    --set b=1\n```\n"
        "```console\n$ mimtl info a\noutput line\n```\n```\nnot code\n```\n```python\nprint(1)\n```\n"
    )
    found = collect("x.md", root=tmp_path)
    assert [(e.line, e.kind, e.text) for e in found] == [
        (3, "shell", "mimtl list   # trailing"),
        (4, "shell", "mimtl run a --set b=1"),
        (8, "shell", "mimtl info a"),
        (15, "python", "print(1)"),
    ]
    assert found[0].key == ("x.md", "mimtl list")
