"""The comparison of stage 3: classifier variants under repeated stratified cross-validation.

Every variant is an ``imblearn.pipeline.Pipeline``: impute missing values (median) -> standardise ->
[a sampler] -> :class:`~mimtl.engines.feature_classifier.FeatureMLPClassifier`. The pipeline is fitted
on the training fold only, so imputation statistics, scaling, SMOTE's neighbours and the GAN never
see a test-fold case (:func:`cross_validate_variants` returns the case ids of each fold so a test
can check it). Where a variant names a ``param_grid``, its hyper-parameters are chosen by an inner
stratified CV on the training fold (nested CV).

:func:`summarise` gives each variant's mean +- sd over all folds, a 95 % confidence interval and a
paired test against the no-augmentation baseline, both with the Nadeau-Bengio correction for the
overlap of training sets between folds (the plain paired t-test is over-confident there).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mimtl.engines.acgan_sampler import ACGANOverSampler, ratio_strategy
from mimtl.engines.feature_classifier import FeatureMLPClassifier
from mimtl.errors import DataValidationError
from mimtl.metrics.grading import grading_metrics

__all__ = [
    "BASELINE",
    "FoldResult",
    "VariantSpec",
    "check_class_sizes",
    "cross_validate_variants",
    "default_variants",
    "make_pipeline",
    "minority_pair",
    "minority_subset",
    "minority_sweep",
    "summarise",
    "summary_table",
]

logger = logging.getLogger(__name__)

BASELINE = "none"
SAMPLERS = ("random", "smote", "borderline-smote", "adasyn", "acgan", "tac-gan", "projection", "wgan-gp")


@dataclass
class VariantSpec:
    """One classifier variant: an optional sampler, the classifier loss, and an optional inner grid.

    ``sampler`` is one of :data:`SAMPLERS` or ``None``; ``ratio`` is the minority:majority ratio the
    sampler balances to; ``sampler_args`` / ``classifier_args`` go to their constructors;
    ``param_grid`` (pipeline parameter names, e.g. ``{"sampler__k_neighbors": [3, 5]}``) is searched
    by an inner stratified CV on each training fold.
    """

    sampler: str | None = None
    ratio: float = 1.0
    loss: str = "ce"
    sampler_args: dict = field(default_factory=dict)
    classifier_args: dict = field(default_factory=dict)
    param_grid: dict | None = None


def default_variants(
    ratios: Sequence[float] = (0.5, 1.0), gan: Sequence[str] = ("acgan", "tac-gan")
) -> dict[str, VariantSpec]:
    """No augmentation, class weights, focal loss, the imblearn samplers and the GANs at each ratio."""
    variants = {
        BASELINE: VariantSpec(),
        "class-weighted": VariantSpec(loss="weighted"),
        "focal": VariantSpec(loss="focal"),
        "random-oversampling": VariantSpec(sampler="random"),
        "smote": VariantSpec(sampler="smote"),
        "borderline-smote": VariantSpec(sampler="borderline-smote"),
        "adasyn": VariantSpec(sampler="adasyn"),
    }
    for name in gan:
        for r in ratios:
            variants[f"{name}@{r:g}"] = VariantSpec(sampler=name, ratio=r)
    return variants


def _sampler(spec: VariantSpec, seed: int, k_neighbors: int):
    from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE, RandomOverSampler

    strategy = ratio_strategy(spec.ratio)
    args = dict(spec.sampler_args)
    if spec.sampler == "random":
        return RandomOverSampler(sampling_strategy=strategy, random_state=seed, **args)
    if spec.sampler == "smote":
        return SMOTE(sampling_strategy=strategy, random_state=seed, **{"k_neighbors": k_neighbors, **args})
    if spec.sampler == "borderline-smote":
        return BorderlineSMOTE(sampling_strategy=strategy, random_state=seed, **{"k_neighbors": k_neighbors, **args})
    if spec.sampler == "adasyn":
        return ADASYN(sampling_strategy=strategy, random_state=seed, **{"n_neighbors": k_neighbors, **args})
    if spec.sampler in ACGANOverSampler.VARIANTS:
        return ACGANOverSampler(sampling_strategy=strategy, variant=spec.sampler, random_state=seed, **args)
    raise ValueError(f"variant sampler must be one of {SAMPLERS} or null, got {spec.sampler!r}")


def make_pipeline(spec: VariantSpec, seed: int = 0, k_neighbors: int = 5, classifier_defaults: Mapping | None = None):
    """The imblearn Pipeline of a variant: impute -> scale -> [sampler] -> MLP."""
    from imblearn.pipeline import Pipeline
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
    ]
    if spec.sampler is not None:
        steps.append(("sampler", _sampler(spec, seed, k_neighbors)))
    clf_args = {**(classifier_defaults or {}), **spec.classifier_args, "loss": spec.loss, "random_state": seed}
    steps.append(("classifier", FeatureMLPClassifier(**clf_args)))
    return Pipeline(steps)


def check_class_sizes(
    y: np.ndarray, n_splits: int, k_neighbors: int, variants: Mapping[str, VariantSpec], label: str = "label"
) -> None:
    """Refuse labels the protocol cannot use, naming the key and the class.

    Raises:
        DataValidationError (a ValueError): one class only; a class with fewer cases than ``n_splits`` (and fewer than 2); a
            class whose training-fold size cannot reach ``k_neighbors + 1`` for a SMOTE-type variant.
    """
    classes, counts = np.unique(y, return_counts=True)
    classes = classes.tolist()  # plain Python values in the messages
    if len(classes) < 2:
        raise DataValidationError(f"{label!r} holds one class only ({classes}): grading needs at least 2")
    for c, n in zip(classes, counts):
        if n < max(2, n_splits):
            raise DataValidationError(
                f"{label!r}: class {c!r} has {n} case(s); stratified {n_splits}-fold CV needs at least {max(2, n_splits)}"
            )
    smote_like = [name for name, v in variants.items() if v.sampler in ("smote", "borderline-smote", "adasyn")]
    if smote_like:
        smallest_train = int(counts.min() - math.ceil(counts.min() / n_splits))
        if smallest_train < k_neighbors + 1:
            c = classes[int(counts.argmin())]
            raise DataValidationError(
                f"{label!r}: class {c!r} has {counts.min()} cases, {smallest_train} in a training fold; "
                f"{', '.join(smote_like)} need at least k_neighbors + 1 = {k_neighbors + 1} (lower k_neighbors or drop them)"
            )


@dataclass
class FoldResult:
    variant: str
    repeat: int
    fold: int
    metrics: dict[str, float]
    train_ids: list
    test_ids: list
    params: dict = field(default_factory=dict)  # hyper-parameters chosen by the inner CV


def cross_validate_variants(
    X: np.ndarray,
    y: np.ndarray,
    variants: Mapping[str, VariantSpec],
    ids: Sequence | None = None,
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
    k_neighbors: int = 5,
    classifier: Mapping | None = None,
    class_names: Sequence[str] | None = None,
    progress: bool = True,
    pipeline_factory: Callable[..., Any] | None = None,
    failures: dict[str, str] | None = None,
) -> list[FoldResult]:
    """Fit and test every variant on the same repeated stratified folds.

    A variant that fails on a fold (e.g. ADASYN on classes so well separated that a minority case
    has no majority neighbour) is dropped from every fold, so that the others stay paired on the
    same folds; the reason is logged and, given a ``failures`` dict, recorded there by variant.

    Args:
        X: features (n, d), NaN for missing values (imputed inside each training fold).
        y: labels (n,).
        variants: name -> :class:`VariantSpec`.
        ids: case ids (default: row numbers), recorded per fold.
        n_splits, n_repeats, seed: ``RepeatedStratifiedKFold``'s.
        k_neighbors: neighbours of the SMOTE-type samplers.
        classifier: defaults of :class:`FeatureMLPClassifier` (epochs, hidden, ...).
        class_names: names of the sorted classes (for ``recall_<name>``).
        pipeline_factory: ``(spec, seed) -> pipeline`` replacing :func:`make_pipeline` (tests spy on it).
        failures: filled with variant -> ``"repeat r fold f: <Error>: <message>"`` for dropped variants.
    """
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold
    from tqdm.auto import tqdm

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    ids = list(range(len(y))) if ids is None else list(ids)
    check_class_sizes(y, n_splits, k_neighbors, variants)
    classes = np.unique(y)
    names = [str(c) for c in (class_names if class_names is not None else classes)]
    splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    splits = list(splitter.split(X, y))
    results: list[FoldResult] = []
    dropped: dict[str, str] = {}
    bar = tqdm(total=len(splits) * len(variants), desc="feature CV", unit="fit", disable=not progress)
    for i, (train, test) in enumerate(splits):
        repeat, fold = divmod(i, n_splits)
        fold_seed = seed * 1000 + i
        for name, spec in variants.items():
            if name in dropped:
                bar.update(1)
                continue
            if pipeline_factory is not None:
                model = pipeline_factory(spec, fold_seed)
            else:
                model = make_pipeline(spec, fold_seed, k_neighbors, classifier)
            params: dict = {}
            try:
                if spec.param_grid:
                    inner = StratifiedKFold(n_splits=3, shuffle=True, random_state=fold_seed)
                    search = GridSearchCV(
                        clone(model), spec.param_grid, cv=inner, scoring="balanced_accuracy", refit=True
                    )
                    search.fit(X[train], y[train])
                    model, params = search.best_estimator_, dict(search.best_params_)
                else:
                    model.fit(X[train], y[train])
            except (ValueError, RuntimeError) as e:  # what samplers raise on data they cannot resample
                dropped[name] = f"repeat {repeat + 1} fold {fold + 1}: {type(e).__name__}: {e}"
                logger.warning("variant %s dropped from the comparison: %s", name, dropped[name])
                bar.update(1)
                continue
            proba = model.predict_proba(X[test])
            y_idx = np.searchsorted(classes, y[test])
            metrics = grading_metrics(y_idx, proba, names)
            results.append(
                FoldResult(name, repeat, fold, metrics, [ids[j] for j in train], [ids[j] for j in test], params)
            )
            bar.update(1)
    bar.close()
    if failures is not None:
        failures.update(dropped)
    return [r for r in results if r.variant not in dropped]


def _corrected_t(diffs: np.ndarray, test_fraction: float) -> tuple[float, float]:
    """Nadeau-Bengio corrected resampled t statistic's (half-width factor, p-value) of paired differences."""
    from scipy import stats

    j = len(diffs)
    sd = float(np.std(diffs, ddof=1)) if j > 1 else 0.0
    se = math.sqrt((1 / j + test_fraction / (1 - test_fraction)) * sd**2) if j > 1 else float("nan")
    if not se or math.isnan(se):
        return se, float("nan") if not np.allclose(diffs, 0) else 1.0
    t = float(np.mean(diffs)) / se
    return se, float(2 * stats.t.sf(abs(t), df=j - 1))


def summarise(results: Sequence[FoldResult], metric: str = "balanced_accuracy", n_splits: int = 5) -> list[dict]:
    """Per variant: mean, sd, 95 % CI of ``metric`` over all folds, and the paired test against :data:`BASELINE`."""
    from scipy import stats

    by_variant: dict[str, dict[tuple[int, int], float]] = {}
    for r in results:
        by_variant.setdefault(r.variant, {})[(r.repeat, r.fold)] = r.metrics[metric]
    test_fraction = 1 / n_splits
    base = by_variant.get(BASELINE)
    rows = []
    for name, values in by_variant.items():
        keys = sorted(values)
        v = np.array([values[k] for k in keys])
        se, _ = _corrected_t(v - v.mean(), test_fraction)
        half = float(stats.t.ppf(0.975, df=max(1, len(v) - 1)) * se) if len(v) > 1 else float("nan")
        row = {
            "variant": name,
            "metric": metric,
            "n": len(v),
            "mean": float(v.mean()),
            "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "ci_low": float(v.mean() - half),
            "ci_high": float(v.mean() + half),
        }
        if base is not None and name != BASELINE:
            diffs = v - np.array([base[k] for k in keys])
            row["diff_vs_none"] = float(diffs.mean())
            row["p_vs_none"] = _corrected_t(diffs, test_fraction)[1]
        rows.append(row)
    return rows


def summary_table(rows: Sequence[dict]) -> str:
    """A markdown table of :func:`summarise`'s rows (mean +- sd, 95 % CI, difference to none and its p)."""
    lines = ["| variant | mean ± sd | 95 % CI | Δ vs none | p (corrected t) |", "|---|---|---|---|---|"]
    for r in rows:
        diff = f"{r['diff_vs_none']:+.3f}" if "diff_vs_none" in r else "—"
        p = f"{r['p_vs_none']:.3f}" if "p_vs_none" in r and not math.isnan(r["p_vs_none"]) else "—"
        lines.append(
            f"| {r['variant']} | {r['mean']:.3f} ± {r['sd']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {diff} | {p} |"
        )
    return "\n".join(lines)


def minority_subset(y: np.ndarray, size: int, seed: int, minority: Any = None) -> np.ndarray:
    """Row indices of ``y`` that :func:`minority_sweep` keeps at ``(size, seed)``: every case of the other
    classes and ``size`` cases of ``minority`` (default: the smallest class) drawn without replacement.

    Raises:
        ValueError: ``size`` larger than the minority class.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    minority = classes[int(counts.argmin())].item() if minority is None else minority  # a plain value for messages
    pool = np.flatnonzero(y == minority)
    if size > len(pool):
        raise ValueError(f"minority size {size} exceeds the {len(pool)} cases of class {minority!r}")
    keep_minor = np.random.default_rng([int(seed), int(size)]).choice(pool, size=int(size), replace=False)
    return np.sort(np.r_[np.flatnonzero(y != minority), keep_minor])


def minority_pair(
    X: np.ndarray,
    y: np.ndarray,
    variants: Mapping[str, VariantSpec],
    size: int,
    seed: int,
    minority: Any = None,
    ids: Sequence | None = None,
    n_splits: int = 5,
    **cv_args: Any,
) -> list[dict]:
    """One (size, seed) of :func:`minority_sweep`: the subset, one stratified CV of every variant, one row per fold."""
    X, y = np.asarray(X), np.asarray(y)
    ids = list(range(len(y))) if ids is None else list(ids)
    keep = minority_subset(y, size, seed, minority)
    results = cross_validate_variants(
        X[keep],
        y[keep],
        variants,
        ids=[ids[i] for i in keep],
        n_splits=n_splits,
        n_repeats=1,
        seed=int(seed),
        **cv_args,
    )
    return [
        {"minority_size": int(size), "seed": int(seed), "variant": r.variant, "fold": r.fold, **r.metrics}
        for r in results
    ]


def minority_sweep(
    X: np.ndarray,
    y: np.ndarray,
    variants: Mapping[str, VariantSpec],
    minority_sizes: Sequence[int] = (10, 20, 40),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    minority: Any = None,
    ids: Sequence | None = None,
    n_splits: int = 5,
    **cv_args: Any,
) -> list[dict]:
    """The paper's experiment: each variant at each minority-class size, over seeds x stratified folds.

    For each size and seed, ``size`` cases of the minority class (default: the smallest) are drawn
    without replacement (every case of the other classes is kept), and one stratified ``n_splits``-fold
    CV runs every variant on that subset (:func:`minority_pair`). The subset is drawn before any split,
    so the test folds hold the reduced prevalence too. Returns one row per (size, seed, variant, fold)
    with the fold's metrics. :func:`mimtl.engines.feature_experiment.minority_experiment` runs it from
    a table, resumably, and writes its tables and plot.

    Raises:
        ValueError: a size larger than the minority class, or one the CV cannot split.
    """
    rows: list[dict] = []
    for size in minority_sizes:
        for seed in seeds:
            rows += minority_pair(X, y, variants, size, seed, minority, ids, n_splits, **cv_args)
    return rows
