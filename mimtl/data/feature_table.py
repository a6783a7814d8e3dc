"""Feature tables: one row per case, numeric columns, a label column (stages 2 and 3 of the ACGAN bundle).

A table is a CSV file (header row; a label column, optionally a case-id column; other columns are
features) or an ``.npz`` file (``features`` (n, d), the label array named by ``label``, optional
``case_ids`` and ``feature_names``). Categorical CSV columns (any non-numeric value) are one-hot
encoded; empty cells and ``NA``/``NaN`` become NaN and are imputed later, inside each training fold.
:func:`load_feature_table` returns a :class:`FeatureTable` whose ``missing`` says how many values of
each column were missing.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mimtl.errors import DataValidationError

__all__ = ["FeatureTable", "FeatureTableError", "load_feature_table"]

MISSING = {"", "na", "nan", "n/a", "null", "none", "?"}
ID_COLUMNS = ("case_id", "id", "case", "subject", "patient_id")


class FeatureTableError(DataValidationError):
    """A feature table that cannot be used; the message names the file and the column or key.

    A :class:`~mimtl.errors.DataValidationError` (so a ``ValueError``): ``mimtl run`` shows it without a traceback.
    """


@dataclass
class FeatureTable:
    features: np.ndarray  # (n, d) float64, NaN where missing
    labels: np.ndarray  # (n,) as read (strings or numbers)
    case_ids: list
    feature_names: list[str]
    source: str
    missing: dict[str, int] = field(default_factory=dict)  # column -> number of missing values
    one_hot: dict[str, list[str]] = field(default_factory=dict)  # categorical column -> its categories

    @property
    def classes(self) -> list:
        return np.unique(self.labels).tolist()


def _is_missing(value: str) -> bool:
    return value.strip().lower() in MISSING


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _read_csv(path: Path, label: str, id_column: str | None) -> FeatureTable:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if label not in columns:
        raise FeatureTableError(f"{path}: no label column {label!r} (columns: {', '.join(columns)})")
    if id_column is None:
        id_column = next((c for c in columns if c.lower() in ID_COLUMNS), None)
    elif id_column not in columns:
        raise FeatureTableError(f"{path}: no case-id column {id_column!r} (columns: {', '.join(columns)})")
    labels = [r[label].strip() for r in rows]
    for i, value in enumerate(labels):
        if _is_missing(value):
            raise FeatureTableError(f"{path}: row {i + 2} has no value in the label column {label!r}")
    numeric_labels = [_number(v) for v in labels]
    label_array = np.array(numeric_labels if all(v is not None for v in numeric_labels) else labels)
    ids = [r[id_column] for r in rows] if id_column else list(range(len(rows)))
    blocks, names, missing, one_hot = [], [], {}, {}
    for col in columns:
        if col in (label, id_column):
            continue
        raw = [r[col] if r[col] is not None else "" for r in rows]
        gaps = [_is_missing(v) for v in raw]
        missing[col] = int(sum(gaps))
        values = [None if g else _number(v) for v, g in zip(raw, gaps)]
        if all(v is not None or g for v, g in zip(values, gaps)):
            blocks.append(np.array([np.nan if v is None else v for v in values], dtype=np.float64)[:, None])
            names.append(col)
            continue
        categories = sorted({v.strip() for v, g in zip(raw, gaps) if not g})
        one_hot[col] = categories
        block = np.zeros((len(rows), len(categories)))
        for i, (v, g) in enumerate(zip(raw, gaps)):
            if g:
                block[i] = np.nan  # imputed like any missing value
            else:
                block[i, categories.index(v.strip())] = 1.0
        blocks.append(block)
        names += [f"{col}={c}" for c in categories]
    if not blocks:
        raise FeatureTableError(f"{path}: no feature columns besides {label!r}")
    return FeatureTable(np.hstack(blocks), label_array, ids, names, str(path), missing, one_hot)


def _read_npz(path: Path, label: str) -> FeatureTable:
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        if "features" not in z:
            raise FeatureTableError(f"{path}: no 'features' array (arrays: {', '.join(keys)})")
        if label not in z:
            raise FeatureTableError(f"{path}: no label array {label!r} (arrays: {', '.join(keys)})")
        features = np.asarray(z["features"], dtype=np.float64)
        labels = np.asarray(z[label])
        ids = z["case_ids"].tolist() if "case_ids" in z else list(range(len(labels)))
        names = (
            z["feature_names"].astype(str).tolist()
            if "feature_names" in z
            else [f"f{i}" for i in range(features.shape[-1])]
        )
    if features.ndim != 2:
        raise FeatureTableError(f"{path}: 'features' must be (cases, features), got shape {features.shape}")
    if len(labels) != len(features):
        raise FeatureTableError(f"{path}: {len(features)} feature rows but {len(labels)} labels in {label!r}")
    missing = {n: int(c) for n, c in zip(names, np.isnan(features).sum(axis=0))}
    return FeatureTable(features, labels, ids, names, str(path), missing)


def load_feature_table(
    path: str | os.PathLike,
    label: str = "label",
    id_column: str | None = None,
    expected_features: int | Sequence[str] | None = None,
) -> FeatureTable:
    """Read a CSV or npz feature table, one-hot encode categorical columns, keep missing values as NaN.

    Args:
        path: the ``.csv`` or ``.npz`` file.
        label: the label column (CSV) or array (npz).
        id_column: the case-id column (CSV; default: the first of ``case_id``, ``id``, ``case``, ...).
        expected_features: the number (or names) of features another stage was built on; a table of
            another dimension is refused.

    Raises:
        FeatureTableError: a missing file, label column or features; a label column of one class; a
            feature dimension other than ``expected_features``.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureTableError(f"{path}: feature table not found")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        table = _read_npz(path, label)
    elif suffix in (".csv", ".tsv", ".txt"):
        table = _read_csv(path, label, id_column)
    else:
        raise FeatureTableError(f"{path}: a feature table must be .csv or .npz, not {suffix or 'no suffix'}")
    if len(table.classes) < 2:
        raise FeatureTableError(
            f"{path}: the label column {label!r} holds one class only ({table.classes}); grading needs 2 or more"
        )
    if expected_features is not None:
        want = expected_features if isinstance(expected_features, int) else len(expected_features)
        if table.features.shape[1] != want:
            raise FeatureTableError(
                f"{path}: {table.features.shape[1]} features per case, but the other stage was built on {want} "
                "(feature dimensions differ between stages)"
            )
    return table
