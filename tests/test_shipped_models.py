"""The shipped weights reproduce the held-out figures their bundle READMEs state.

Each bundle's ``evaluate`` config runs, as users run it, on the demo test split (built from real
anatomy into the user cache on first use, byte-identical for the same seed, and reused by
``mimtl verify --all``). A change to a reader, a transform, a network or a checkpoint that alters
what the shipped model sees or computes fails here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mimtl.bundle import load_bundle

#: bundle -> (metric in evaluate's metrics.csv, the value in the bundle README, tolerance)
README_FIGURES = {
    "xray_color_classification": ("mean_auc", 0.653, 0.002),  # macro ROC AUC over the 4 labels, test split
    "xray_landmark_detection": ("mre", 1.479, 0.01),  # mm on the original films, test split
}


def _metrics(path: Path) -> dict[str, float]:
    with open(path, newline="") as f:
        return {row[0]: float(row[1]) for row in csv.reader(f) if row}


@pytest.mark.parametrize("name", sorted(README_FIGURES))
def test_shipped_weights_reproduce_the_readme(name, tmp_path):
    bundle = load_bundle(name)
    assert bundle.weights_path.is_file(), f"{name} ships no models/model.pt"
    metric, expected, tolerance = README_FIGURES[name]
    wf = bundle.workflow("evaluate", configure_logging=False, output_dir=str(tmp_path), num_workers=0)
    wf.initialize()
    try:
        wf.run()
    finally:
        wf.finalize()
    measured = _metrics(tmp_path / "metrics.csv")
    assert metric in measured, f"metrics.csv of {name} has {sorted(measured)}"
    assert abs(measured[metric] - expected) <= tolerance, f"{name}: {metric} {measured[metric]:.4f}, README {expected}"
