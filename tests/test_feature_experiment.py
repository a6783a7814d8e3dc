"""The minority-size experiment of the ACGAN method (arXiv 2209.14097) as one resumable run: its files agree
with each other, a killed run resumes where it stopped, sizes the protocol cannot use are refused before
any work, and the command exits 2 on a bad table."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import statistics

import numpy as np
import pytest

from mimtl.engines import feature_experiment
from mimtl.engines.feature_cv import _corrected_t, default_variants
from mimtl.engines.feature_experiment import main, minority_experiment

SIZES, SEEDS, FOLDS = (8, 16), (0, 1), 3
FAST = {
    "label": "grade",
    "minority_sizes": SIZES,
    "seeds": SEEDS,
    "n_splits": FOLDS,
    "k_neighbors": 3,
    "classifier": {"epochs": 5, "hidden": (16,)},
    "gan_args": {"epochs": 3, "hidden": (32,), "latent_size": 8},
    "progress": False,
}
VARIANTS = list(default_variants((1.0,), ("acgan", "tac-gan", "wgan-gp")))


def _toy_csv(path, n_major=40, n_minor=20, dim=4, shift=1.5):
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (n_major, dim)), rng.normal(shift, 1, (n_minor, dim))]
    labels = ["low"] * n_major + ["high"] * n_minor
    lines = ["case_id," + ",".join(f"f{i}" for i in range(dim)) + ",grade"]
    lines += [f"c{i}," + ",".join(f"{v:.4f}" for v in row) + f",{g}" for i, (row, g) in enumerate(zip(x, labels))]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    table = _toy_csv(root / "toy.csv")
    out = root / "out"
    summary = minority_experiment(table, output_dir=out, **FAST)
    return table, out, summary


def _runs(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _spy(monkeypatch):
    calls = []
    real = feature_experiment.minority_pair

    def spy(X, y, variants, size, seed, *args, **kwargs):
        calls.append((size, seed, tuple(variants)))
        return real(X, y, variants, size, seed, *args, **kwargs)

    monkeypatch.setattr(feature_experiment, "minority_pair", spy)
    return calls


def test_outputs_exist_and_agree(experiment):
    _, out, summary = experiment
    runs = _runs(out / "runs.csv")
    assert len(runs) == len(SIZES) * len(SEEDS) * FOLDS * len(VARIANTS)
    assert {(int(r["minority_size"]), int(r["seed"]), r["variant"], int(r["fold"])) for r in runs} == {
        (s, seed, v, f) for s in SIZES for seed in SEEDS for v in VARIANTS for f in range(FOLDS)
    }
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text()) == summary
    assert list(summary) == VARIANTS and all(list(summary[v]) == ["8", "16"] for v in VARIANTS)

    md = (out / "results.md").read_text()
    headings = re.findall(r"^## (\S+)$", md, flags=re.M)
    assert headings == ["balanced_accuracy", "macro_f1", "roc_auc", "ece", "recall_high"]  # minority recall added
    assert "| variant | 8 cases | 16 cases |" in md
    for v in VARIANTS:
        assert re.search(rf"^\| {re.escape(v)} \| \d\.\d{{3}} ± \d\.\d{{3}} \| \d\.\d{{3}} ± \d\.\d{{3}} \|$", md, re.M)
    # the paragraph is computed: the best GAN variant by mean balanced accuracy, paired differences and corrected p
    gans = [v for v in VARIANTS if "@" in v]
    for size in SIZES:
        best = max(gans, key=lambda v: summary[v][str(size)]["balanced_accuracy"]["mean"])
        expected = []
        for other in ("smote", "class-weighted"):
            keys = sorted(
                (r["seed"], r["fold"]) for r in runs if r["variant"] == best and r["minority_size"] == str(size)
            )
            sel = {
                v: {
                    (r["seed"], r["fold"]): float(r["balanced_accuracy"])
                    for r in runs
                    if r["variant"] == v and r["minority_size"] == str(size)
                }
                for v in (best, other)
            }
            diffs = np.array([sel[best][k] - sel[other][k] for k in keys])
            p = _corrected_t(diffs, 1 / FOLDS)[1]
            p_text = "—" if math.isnan(p) else f"{p:.2f}" if p >= 0.01 else f"{p:.1g}"
            expected.append(f"vs {other} {diffs.mean():+.3f} (p {p_text})")
        mean = summary[best][str(size)]["balanced_accuracy"]["mean"]
        assert f"at {size} cases: {best} ({mean:.3f}) " + ", ".join(expected) in md


def test_summary_equals_a_recomputation_from_runs_csv(experiment):
    _, out, summary = experiment
    runs = _runs(out / "runs.csv")
    md = (out / "results.md").read_text()
    for v in VARIANTS:
        for size in SIZES:
            for metric in ("balanced_accuracy", "macro_f1", "roc_auc", "ece", "recall_high"):
                values = [float(r[metric]) for r in runs if r["variant"] == v and r["minority_size"] == str(size)]
                got = summary[v][str(size)][metric]
                assert got["n"] == len(SEEDS) * FOLDS
                assert got["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
                assert got["sd"] == pytest.approx(statistics.stdev(values), abs=1e-12)
        cells = " | ".join(
            f"{statistics.fmean(vals):.3f} ± {statistics.stdev(vals):.3f}"
            for vals in (
                [float(r["balanced_accuracy"]) for r in runs if r["variant"] == v and r["minority_size"] == str(s)]
                for s in SIZES
            )
        )
        assert f"| {v} | {cells} |" in md  # the first table is balanced accuracy


def test_a_killed_run_resumes_only_the_missing_pair(experiment, tmp_path, monkeypatch):
    table, out, summary = experiment
    resumed = tmp_path / "out"
    shutil.copytree(out, resumed)
    lines = (resumed / "runs.csv").read_text().splitlines()
    kept = [line for line in lines if not line.startswith("16,1,")]
    assert len(lines) - len(kept) == FOLDS * len(VARIANTS)
    (resumed / "runs.csv").write_text("\n".join(kept) + "\n")

    calls = _spy(monkeypatch)
    again = minority_experiment(table, output_dir=resumed, **FAST)
    assert calls == [(16, 1, tuple(VARIANTS))]  # only the deleted pair, every variant of it
    assert (resumed / "runs.csv").read_text() == (out / "runs.csv").read_text()  # seeded: the same numbers
    assert again == summary

    calls.clear()  # a finished run runs nothing; a variant added later runs alone
    minority_experiment(table, output_dir=resumed, **{**FAST, "minority_sizes": (8,), "seeds": (0,)})
    assert calls == []

    with pytest.raises(ValueError, match=r"holds runs of other settings \(n_splits differ"):
        minority_experiment(table, output_dir=resumed, **{**FAST, "n_splits": 2})
    assert calls == []


def test_sizes_the_protocol_cannot_use_are_refused_before_any_work(experiment, tmp_path, monkeypatch):
    table = experiment[0]
    calls = _spy(monkeypatch)
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="minority size 21 exceeds the 20 cases of class 'high' in 'grade'"):
        minority_experiment(table, output_dir=out, **{**FAST, "minority_sizes": (8, 21)})
    with pytest.raises(ValueError, match=r"minority size 4: 'grade': class 'high' has 4 cases, 2 in a training fold"):
        minority_experiment(table, output_dir=out, **{**FAST, "minority_sizes": (8, 4)})
    with pytest.raises(ValueError, match=r"minority size 2: 'grade': class 'high' has 2 case\(s\); stratified 3-fold"):
        minority_experiment(table, output_dir=out, **{**FAST, "minority_sizes": (2,)})
    assert calls == [] and not out.exists()


def test_variants_as_dicts_and_no_gan_to_compare(experiment, tmp_path):
    table = experiment[0]
    variants = {"none": {}, "smote": {"sampler": "smote"}}
    args = {**FAST, "minority_sizes": (8,), "seeds": (0,), "variants": variants, "metrics": ("balanced_accuracy",)}
    summary = minority_experiment(table, output_dir=tmp_path, **args)
    assert list(summary) == ["none", "smote"] and set(summary["smote"]["8"]) == {"balanced_accuracy", "recall_high"}
    assert len(_runs(tmp_path / "runs.csv")) == 2 * FOLDS
    assert "No comparison of a GAN variant with SMOTE or class weights: the run lacks a GAN variant." in (
        (tmp_path / "results.md").read_text()
    )


def test_command_runs_and_exits_2_on_bad_input(experiment, tmp_path, capsys):
    table = experiment[0]
    one = tmp_path / "one.csv"
    one.write_text("f,grade\n1,HGG\n2,HGG\n3,HGG\n")
    assert main([str(one), "--label", "grade", "--output-dir", str(tmp_path / "o")]) == 2
    assert (
        "error: " in (err := capsys.readouterr().err)
        and "one.csv: the label column 'grade' holds one class only" in err
    )
    assert main([str(table), "--label", "grade", "--output-dir", str(tmp_path / "o"), "--sizes", "30"]) == 2
    assert "error: minority size 30 exceeds the 20 cases of class 'high'" in capsys.readouterr().err

    out = tmp_path / "cli"
    argv = [str(table), "--label", "grade", "--output-dir", str(out), "--sizes", "8", "--seeds", "0", "--folds", "3"]
    assert main([*argv, "--k-neighbors", "3", "--epochs", "2", "--gan", "--no-progress"]) == 0  # no GAN variants
    assert len(_runs(out / "runs.csv")) == 7 * 3  # the 7 variants without a GAN x 3 folds
    assert "## balanced_accuracy" in capsys.readouterr().out
