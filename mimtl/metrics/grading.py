"""Metrics of a grading classifier on imbalanced classes: per-class recall, balanced accuracy, macro F1,
ROC AUC and calibration (expected calibration error), from class probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["expected_calibration_error", "grading_metrics"]


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: ``sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)|`` over equal-width confidence bins.

    Args:
        y_true: class indices ``(n,)`` into the columns of ``proba``.
        proba: class probabilities ``(n, C)``.
        n_bins: number of bins on [0, 1].
    """
    y_true = np.asarray(y_true).astype(int)
    proba = np.asarray(proba, dtype=float)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def grading_metrics(
    y_true: np.ndarray, proba: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Balanced accuracy, macro F1, ROC AUC (one-vs-rest macro for more than 2 classes), ECE and the
    recall of each class (``recall_<name>``) of predictions ``argmax(proba)``.

    ``y_true`` holds class indices into the columns of ``proba``. ROC AUC is NaN when a class is absent
    from ``y_true``.
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    proba = np.asarray(proba, dtype=float)
    n_classes = proba.shape[1]
    names = [str(c) for c in (class_names if class_names is not None else range(n_classes))]
    labels = list(range(n_classes))
    pred = proba.argmax(axis=1)
    out = {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "ece": expected_calibration_error(y_true, proba),
    }
    if len(np.unique(y_true)) < n_classes:
        out["roc_auc"] = float("nan")
    elif n_classes == 2:
        out["roc_auc"] = float(roc_auc_score(y_true, proba[:, 1]))
    else:
        out["roc_auc"] = float(roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels))
    recalls = recall_score(y_true, pred, labels=labels, average=None, zero_division=0)
    out.update({f"recall_{name}": float(r) for name, r in zip(names, recalls)})
    return out
