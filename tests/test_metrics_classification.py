"""Per-label AUC handlers and threshold choice."""

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from mimtl.metrics import metric_name, per_label_auc, youden_thresholds


def test_metric_names_are_safe():
    assert metric_name("auc_", "Pleural Effusion") == "auc_pleural_effusion"
    with pytest.raises(ValueError, match="duplicate"):
        per_label_auc(["Lung Lesion", "lung-lesion"])


def test_per_label_auc_matches_hand_computed_values():
    # label 0: perfectly ranked (AUC 1); label 1: ranked backwards (AUC 0)
    preds = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.2, 0.7], [0.1, 0.9]])
    labels = torch.tensor([[1, 1], [1, 1], [0, 0], [0, 0]])
    engine = Engine(lambda e, b: b)
    for name, metric in per_label_auc(["A", "B"], prefix="auc_").items():
        metric.attach(engine, name)
    batch = [{"pred": p, "label": y} for p, y in zip(preds, labels)]
    state = engine.run([batch], max_epochs=1)
    assert state.metrics["auc_a"] == pytest.approx(1.0)
    assert state.metrics["auc_b"] == pytest.approx(0.0)


def test_youden_thresholds():
    probs = np.array([[0.9, 0.3], [0.7, 0.6], [0.4, 0.2], [0.1, 0.8]])
    labels = np.array([[1, 0], [1, -1], [0, 0], [0, 0]])
    t = youden_thresholds(probs, labels, ["A", "B"])
    assert t["A"] == pytest.approx(0.7)  # the lowest positive: sensitivity 1, specificity 1
    assert t["B"] == 0.5  # no positive left once the -1 entry is dropped
    with pytest.raises(ValueError, match="must both be"):
        youden_thresholds(probs[:, :1], labels, ["A", "B"])
