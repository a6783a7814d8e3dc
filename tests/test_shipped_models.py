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

import pytest

from mimtl.bundle import list_bundles, load_bundle
from mimtl.bundle.results import compare_results, compute_results

SHIPPED = sorted(b.name for b in list_bundles() if b.has_weights)


def test_bundles_with_weights_are_checked():
    assert {"xray_color_classification", "xray_landmark_detection"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reproduce_metadata_and_readme(name, tmp_path):
    bundle = load_bundle(name)
    results = compute_results(bundle, tmp_path)
    assert results["eval_metrics"], f"{name}: evaluate wrote no metrics"
    assert compare_results(bundle, results) == []


def test_headline_figures_did_not_drift():
    """The two figures the READMEs lead with, pinned here too, so a rewrite of metadata.json cannot move them silently."""
    assert load_bundle("xray_color_classification").metadata["eval_metrics"]["test_mean_auc"] == pytest.approx(
        0.6526, abs=2e-4
    )
    assert load_bundle("xray_landmark_detection").metadata["eval_metrics"]["test_mre"] == pytest.approx(
        1.4788, abs=2e-4
    )
