"""The shipped weights reproduce every figure their bundle publishes.

Each bundle's ``evaluate`` config runs, as users run it, on the demo test split (built from real
anatomy into the user cache on first use, byte-identical for the same seed), and on the
validation split where the model's decision thresholds were chosen. Every value of
``eval_metrics`` and the thresholds in ``metadata.json``, and the results table in the bundle
README (all written by ``mimtl results NAME --write``), must match what the run gives. A change to
a reader, a transform, a network or a checkpoint that alters what the shipped model sees or
computes fails here.
"""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from mimtl.bundle import list_bundles, load_bundle
from mimtl.bundle.results import compare_results, compute_results, evaluate_split, stale_includes
from mimtl.utils import read_metrics

SHIPPED = sorted(b.name for b in list_bundles() if b.has_weights)


def test_bundles_with_weights_are_checked():
    assert {
        "xray_color_classification",
        "xray_landmark_detection",
        "brain_tumor_acgan_augmentation",
        "xray_tile_ae_pretraining",
        "xray_lung_segmentation",
    } <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reproduce_metadata_and_readme(name, tmp_path):
    bundle = load_bundle(name)
    results = compute_results(bundle, tmp_path)
    assert results["eval_metrics"], f"{name}: evaluate wrote no metrics"
    assert compare_results(bundle, results) == []


@pytest.mark.parametrize("name", sorted(b.name for b in list_bundles()))
def test_readme_includes_are_current(name):
    """A README block that repeats a generated file (an experiment's table) holds that file's text."""
    assert stale_includes(load_bundle(name)) == []


#: the validation key metric each shipped model was chosen by, and whether higher is better
KEY_METRIC = {
    "xray_color_classification": ("mean_auc", True),
    "xray_landmark_detection": ("mre", False),
    "brain_tumor_acgan_augmentation": ("dice", True),
    "xray_tile_ae_pretraining": ("recon_mae", False),
    "xray_lung_segmentation": ("dice", True),
}


def _training_log(name: str) -> list[dict[str, float]]:
    path = load_bundle(name).path / "docs" / "training_log.csv"
    assert path.is_file(), f"{name}: the shipped model's training log {path} is missing"
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


@pytest.mark.parametrize("name", sorted(KEY_METRIC))
def test_training_log_is_the_shipped_models(name, tmp_path):
    """docs/training_log.csv is the log of the run that made models/model.pt.

    Its best epoch (by the validation key metric the checkpoint was chosen by) is the one the README
    names, with the value it names, and evaluating the shipped weights on the validation split gives
    that epoch's logged value.
    """
    metric, higher = KEY_METRIC[name]
    bundle = load_bundle(name)
    log = _training_log(name)
    assert [int(r["epoch"]) for r in log] == list(range(1, len(log) + 1))
    best = (max if higher else min)(log, key=lambda r: r[f"val_{metric}"])
    readme = (bundle.path / "docs" / "README.md").read_text()
    assert "training_log.csv" in readme
    if name != "xray_landmark_detection":
        assert f"(epoch {int(best['epoch'])}, {best[f'val_{metric}']:.3f})" in readme
    if name == "xray_color_classification":
        frozen = next(r for r in log if int(r["epoch"]) == 6)
        assert f"validation mean AUC {frozen['val_mean_auc']:.3f} at the end of the frozen stage (epoch 6)" in readme
    if name == "xray_landmark_detection":
        mentioned = re.search(r"the checkpoint is epoch (\d+)", readme)
        assert mentioned and int(mentioned.group(1)) == int(best["epoch"]), "README names another checkpoint epoch"
        assert f"{best[f'val_{metric}']:.2f} after {int(best['epoch'])}" in readme
        radii = json.loads((bundle.path / "models" / "conformal.json").read_text())["radius"]
        assert (
            f"radii\n{min(radii):.2f}-{max(radii):.2f} mm" in readme
            or f"radii {min(radii):.2f}-{max(radii):.2f} mm" in readme
        )
    validation = read_metrics(evaluate_split(bundle, "validation", tmp_path / "validation"))
    assert validation[metric] == pytest.approx(best[f"val_{metric}"], abs=1e-4)


def test_headline_figures_did_not_drift():
    """The two figures the READMEs lead with, pinned here too, so a rewrite of metadata.json cannot move them silently."""
    assert load_bundle("xray_color_classification").metadata["eval_metrics"]["test_mean_auc"] == pytest.approx(
        0.7702, abs=2e-4
    )
    assert load_bundle("xray_landmark_detection").metadata["eval_metrics"]["test_mre"] == pytest.approx(
        1.9847, abs=2e-4
    )


BRAIN = "brain_tumor_acgan_augmentation"


def test_brain_features_and_grader_reproduce_the_shipped_files(tmp_path):
    """docs/features.npz is what the shipped segmentation network extracts (checked on the test
    split), and models/grader.pt scores those features as docs/grader_metrics.json says."""
    import numpy as np

    from mimtl.metrics.grading import grading_metrics
    from mimtl.networks.tumour_grader import load_grade_head

    bundle = load_bundle(BRAIN)
    shipped = np.load(bundle.path / "docs" / "features.npz")
    wf = bundle.workflow("features", configure_logging=False, output_dir=str(tmp_path), feature_splits=["test"])
    wf.initialize()
    try:
        wf.run()
    finally:
        wf.finalize()
    fresh = np.load(tmp_path / "features.npz")
    rows = {c: i for i, c in enumerate(shipped["case_ids"].tolist())}
    index = [rows[c] for c in fresh["case_ids"].tolist()]
    # the same weights on another CPU: fp32 kernels (AVX2, AVX-512, AMX) round differently in the last bits
    np.testing.assert_allclose(fresh["features"], shipped["features"][index], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(fresh["label"], shipped["label"][index])
    grades, counts = np.unique(shipped["label"], return_counts=True)
    readme = (bundle.path / "docs" / "README.md").read_text()
    assert f"builds {len(shipped['label'])} cases" in readme
    assert "; ".join(f"{n} {g}" for g, n in zip(grades.tolist(), counts.tolist())) in readme  # "159 HGG; 41 LGG"

    head, info = load_grade_head(bundle.path / "models" / "grader.pt")
    assert set(info["train_case_ids"]).isdisjoint(fresh["case_ids"].tolist())
    with torch.no_grad():
        proba = torch.softmax(head(torch.from_numpy(fresh["features"])), 1).numpy()
    y = np.searchsorted(info["class_names"], fresh["label"])
    got = grading_metrics(y, proba, info["class_names"])
    shipped_metrics = json.loads((bundle.path / "docs" / "grader_metrics.json").read_text())["metrics"]
    for key, value in shipped_metrics.items():
        assert got[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


LUNG = "xray_lung_segmentation"


def test_lung_robustness_and_unseen_figures_reproduce(tmp_path):
    """docs/robustness/robustness_cases.csv is what the shipped weights give: the clean test split, the
    unseen set and two corruption cells are recomputed here (the whole 17 x 5 grid is the
    `robustness` command's job) and must match per film; the README shows the shipped summary."""
    bundle = load_bundle(LUNG)
    shipped = bundle.path / "docs" / "robustness"
    with open(shipped / "robustness_cases.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    table = {(r["case"], r["corruption"], int(r["severity"])): float(r["dice"]) for r in rows}
    cells = {(c, s) for _, c, s in table}
    assert len(cells) == 1 + 17 * 5 + 1, "the shipped run covers clean, 17 corruptions x 5 severities and unseen"
    wf = bundle.workflow(
        "robustness",
        configure_logging=False,
        output_dir=str(tmp_path),
        **{
            "robustness#corruptions": ["gaussian_noise", "elastic_transform"],
            "robustness#severities": [3],
            "robustness#n_bootstrap": 0,
            "robustness#progress": False,
            "robustness_baseline": None,
        },
    )
    wf.initialize()
    try:
        wf.run()
    finally:
        wf.finalize()
    with open(tmp_path / "robustness" / "robustness_cases.csv", newline="") as f:
        again = list(csv.DictReader(f))
    assert {(r["corruption"], int(r["severity"])) for r in again} == {
        ("clean", 0),
        ("gaussian_noise", 3),
        ("elastic_transform", 3),
        ("unseen", 0),
    }
    for r in again:
        key = (r["case"], r["corruption"], int(r["severity"]))
        assert float(r["dice"]) == pytest.approx(table[key], abs=2e-4), key
    readme = (bundle.path / "docs" / "README.md").read_text()
    assert (shipped / "robustness.md").read_text().strip() in readme


@pytest.mark.parametrize(
    "name, table",
    [
        ("xray_color_classification", "predictions.csv"),
        ("xray_landmark_detection", "landmarks.csv"),
        ("xray_tile_ae_pretraining", "reconstruction.csv"),
        ("xray_lung_segmentation", "segmentation.csv"),
    ],
)
def test_inference_runs_on_its_default_demo_input(name, table, tmp_path):
    """What a new user runs first: inference with no input given reads the demo test split's
    datalist, whose items carry more than the film (labels, findings, a style record with nulls);
    only the film may go on to the batch, and every film gets a row."""
    bundle = load_bundle(name)
    wf = bundle.workflow("inference", configure_logging=False, output_dir=str(tmp_path))
    wf.initialize()
    try:
        wf.run()
    finally:
        wf.finalize()
    with open(tmp_path / table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["status"] == "ok" for r in rows), [r["status"] for r in rows if r["status"] != "ok"][:3]
