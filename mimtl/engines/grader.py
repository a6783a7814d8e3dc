"""Fit the grading head of the ACGAN method on a feature table and save it for :class:`TumourGrader`.

:func:`fit_grader` fits one variant's pipeline (:func:`mimtl.engines.feature_cv.make_pipeline`:
median imputation -> standardisation -> [sampler, e.g. the ACGAN] -> MLP) on the training cases,
turns it into a :class:`~mimtl.networks.tumour_grader.GradeHead` and writes it with its provenance.
Bundle config::

    fit_grader:
      _target_: mimtl.engines.grader.fit_grader
      features: '$@bundle_root + "/out/features/features.npz"'
      output: '$@bundle_root + "/models/grader.pt"'
      sampler: acgan
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mimtl.errors import DataValidationError

__all__ = ["fit_grader"]


def _rows(case_ids: list[str], wanted: Sequence[Any], what: str, source: Path) -> np.ndarray:
    wanted = [f"{c}" for c in wanted]
    index = {c: i for i, c in enumerate(case_ids)}
    unknown = [c for c in wanted if c not in index]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise DataValidationError(f"{source}: {len(unknown)} {what} case id(s) not in the feature table: {shown}")
    if len(set(wanted)) != len(wanted):
        raise DataValidationError(f"{source}: the {what} case ids repeat a case")
    return np.asarray([index[c] for c in wanted], dtype=int)


def fit_grader(
    features: str | os.PathLike,
    output: str | os.PathLike,
    label: str = "label",
    train_ids: Sequence[str] | None = None,
    sampler: str | None = "acgan",
    ratio: float = 1.0,
    loss: str = "ce",
    seed: int = 0,
    classifier: Mapping[str, Any] | None = None,
    sampler_args: Mapping[str, Any] | None = None,
    test_ids: Sequence[str] | None = None,
    expected_features: int | None = None,
    metrics_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Fit the grading pipeline on the training cases and save it as a grade head at ``output``.

    Args:
        features: ``features.npz`` of :func:`~mimtl.engines.feature_extraction.extract_features`, or
            a CSV (see :func:`~mimtl.data.feature_table.load_feature_table`).
        output: the grade-head file (e.g. ``models/grader.pt``), written atomically.
        label: the label column/array.
        train_ids: the case ids to fit on (default: every row).
        sampler: a :data:`~mimtl.engines.feature_cv.SAMPLERS` name, or ``None``/``"none"``.
        ratio: minority:majority ratio the sampler balances to.
        loss: the classifier loss (``ce``, ``weighted``, ``focal``).
        seed: seeds the sampler and the classifier.
        classifier: :class:`~mimtl.engines.feature_classifier.FeatureMLPClassifier` arguments
            (``hidden``, ``epochs``, ...).
        sampler_args: the sampler's arguments (e.g. ``{epochs: 200}`` for the ACGAN).
        test_ids: case ids to score the saved head on (never used for fitting).
        expected_features: the feature count the stage-1 network gives; a table of another is refused.
        metrics_path: also write the returned summary there as JSON.

    Returns:
        ``{"output", "class_names", "n_features", "n_train", "train_counts"}`` plus, with ``test_ids``,
        ``"n_test"`` and ``"metrics"`` (:func:`mimtl.metrics.grading.grading_metrics` of the saved head).

    Raises:
        FeatureTableError: a missing/unreadable table, one class in it, another feature count than
            ``expected_features``.
        DataValidationError: (a ``ValueError``) unknown or repeated case ids, training cases of one class, test cases of a class
            the head was not trained on (each naming the table).
    """
    import torch

    import mimtl
    from mimtl.data.feature_table import load_feature_table
    from mimtl.engines.feature_cv import VariantSpec, make_pipeline
    from mimtl.metrics.grading import grading_metrics
    from mimtl.networks.tumour_grader import GradeHead, save_grade_head

    source = Path(features)
    table = load_feature_table(source, label=label, expected_features=expected_features)
    case_ids = [f"{c}" for c in table.case_ids]
    X, y = np.asarray(table.features, dtype=np.float64), np.asarray(table.labels)
    train = np.arange(len(y)) if train_ids is None else _rows(case_ids, train_ids, "training", source)
    test = None if test_ids is None else _rows(case_ids, test_ids, "test", source)
    if test is not None and set(train.tolist()) & set(test.tolist()):
        shared = sorted(case_ids[i] for i in set(train.tolist()) & set(test.tolist()))
        raise DataValidationError(f"{source}: cases in both the training and the test ids: {', '.join(shared[:5])}")
    classes = np.unique(y[train]).tolist()
    if len(classes) < 2:
        raise DataValidationError(
            f"{source}: the training cases hold one class only ({label!r} = {classes}); grading needs 2 or more"
        )
    sampler = None if sampler in (None, "", "none", "None") else sampler
    spec = VariantSpec(
        sampler=sampler,
        ratio=float(ratio),
        loss=loss,
        sampler_args=dict(sampler_args or {}),
        classifier_args=dict(classifier or {}),
    )
    pipeline = make_pipeline(spec, seed=int(seed))
    pipeline.fit(X[train], y[train])
    clf = pipeline.named_steps["classifier"]
    head = GradeHead.from_pipeline(pipeline)
    class_names = [f"{c}" for c in clf.classes_]
    counts = {f"{c}": int((y[train] == c).sum()) for c in clf.classes_}
    info = {
        "class_names": class_names,
        "feature_names": list(table.feature_names),
        "n_features": int(X.shape[1]),
        "label": label,
        "features": str(source),
        "sampler": sampler,
        "ratio": float(ratio),
        "loss": loss,
        "seed": int(seed),
        "classifier": dict(classifier or {}),
        "sampler_args": dict(sampler_args or {}),
        "train_case_ids": [case_ids[i] for i in train],
        "train_counts": counts,
        "mimtl_version": mimtl.__version__,
    }
    out = save_grade_head(head, output, class_names, info)
    summary: dict[str, Any] = {
        "output": str(out),
        "class_names": class_names,
        "n_features": int(X.shape[1]),
        "n_train": int(len(train)),
        "train_counts": counts,
    }
    if test is not None:
        unseen = sorted({f"{c}" for c in y[test]} - set(class_names))
        if unseen:
            raise DataValidationError(f"{source}: test cases of class(es) {unseen} the training cases do not hold")
        with torch.no_grad():
            proba = torch.softmax(head(torch.as_tensor(X[test], dtype=torch.float32)), dim=1).numpy()
        y_idx = np.asarray([class_names.index(f"{c}") for c in y[test]], dtype=int)
        summary["n_test"] = int(len(test))
        summary["metrics"] = grading_metrics(y_idx, proba, class_names)
    if metrics_path is not None:
        from mimtl.utils import replace_atomic

        # the head's file name, not this machine's path to it: the JSON travels with the bundle
        text = json.dumps({**summary, "output": Path(output).name}, indent=2, default=str) + "\n"
        replace_atomic(Path(metrics_path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return summary
