"""The comparison of classifier variants on a feature table, end to end: table in, tables and plots out.

:func:`compare_feature_table` reads a user's CSV/npz feature table
(:func:`~mimtl.data.feature_table.load_feature_table`), runs every variant under repeated stratified
CV (:func:`~mimtl.engines.feature_cv.cross_validate_variants`), checks the generated features of the
GAN on the first training fold against real ones (:mod:`mimtl.metrics.feature_quality`, the test
fold kept out), and writes to ``output_dir``:

* ``comparison.md``: one table per metric (mean +- sd, 95 % CI, difference to no augmentation and
  its corrected paired p-value), and the missing values that were imputed;
* ``comparison.csv``: the same rows, ``folds.csv``: every fold's metrics;
* ``feature_quality.json`` and ``feature_pca.png``.

From a shell: ``python -m mimtl.engines.feature_compare FILE --label COL --output-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mimtl.data.feature_table import FeatureTableError, load_feature_table
from mimtl.engines.feature_cv import (
    BASELINE,
    VariantSpec,
    check_class_sizes,
    cross_validate_variants,
    default_variants,
    summarise,
    summary_table,
)

__all__ = ["compare_feature_table", "generated_feature_quality", "main"]


def generated_feature_quality(
    X: np.ndarray,
    y: np.ndarray,
    variant: str = "acgan",
    seed: int = 0,
    n_splits: int = 5,
    gan_args: Mapping | None = None,
    plot: str | None = None,
) -> dict:
    """Train the GAN on the first stratified training fold and check its features against that fold and its test fold."""
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from mimtl.engines.acgan_sampler import ACGANOverSampler
    from mimtl.metrics.feature_quality import feature_quality_report, pca_plot

    train, test = next(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y))
    prep = [SimpleImputer(strategy="median", keep_empty_features=True).fit(X[train])]
    prep.append(StandardScaler().fit(prep[0].transform(X[train])))
    xtr, xte = (prep[1].transform(prep[0].transform(X[idx])) for idx in (train, test))
    classes, counts = np.unique(y[train], return_counts=True)
    want = {c: int(n) * 2 for c, n in zip(classes.tolist(), counts)}  # as many generated as real per class
    sampler = ACGANOverSampler(sampling_strategy=want, variant=variant, random_state=seed, **(gan_args or {}))
    xr, yr = sampler.fit_resample(xtr, y[train])
    fake, fake_y = xr[len(train) :], yr[len(train) :]
    report = feature_quality_report(xtr, y[train], fake, fake_y, xte, y[test])
    report["variant"] = variant
    if plot:
        pca_plot(xtr, y[train], fake, fake_y, plot, title=f"{variant}: real (o) vs generated (x), training fold 1")
    return report


def compare_feature_table(
    features: str | os.PathLike,
    label: str = "label",
    output_dir: str | os.PathLike = "comparison",
    id_column: str | None = None,
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
    ratios: Sequence[float] = (0.5, 1.0),
    gan: Sequence[str] = ("acgan", "tac-gan"),
    k_neighbors: int = 5,
    classifier: Mapping | None = None,
    gan_args: Mapping | None = None,
    variants: Mapping[str, VariantSpec] | None = None,
    metrics: Sequence[str] = ("balanced_accuracy", "macro_f1", "roc_auc", "ece"),
    quality: bool = True,
    progress: bool = True,
) -> str:
    """Compare the classifier variants on a feature table; write the outputs; return (and print) the markdown."""
    from mimtl.handlers._common import csv_text, write_atomic

    table = load_feature_table(features, label=label, id_column=id_column)
    names = [str(c) for c in table.classes]
    _, y = np.unique(table.labels, return_inverse=True)
    if variants is None:
        variants = default_variants(ratios, gan)
    if gan_args:
        variants = {
            k: VariantSpec(**{**v.__dict__, "sampler_args": {**gan_args, **v.sampler_args}})
            if v.sampler in ("acgan", "tac-gan", "projection", "wgan-gp")
            else v
            for k, v in variants.items()
        }
    try:  # named by the table's own column and class values, before any fitting
        check_class_sizes(table.labels, n_splits, k_neighbors, variants, label=label)
    except ValueError as e:
        raise FeatureTableError(f"{table.source}: {e}") from None
    failures: dict[str, str] = {}
    results = cross_validate_variants(
        table.features,
        y,
        variants,
        ids=table.case_ids,
        n_splits=n_splits,
        n_repeats=n_repeats,
        seed=seed,
        k_neighbors=k_neighbors,
        classifier=classifier,
        class_names=names,
        progress=progress,
        failures=failures,
    )
    out = Path(output_dir)
    metric_names = list(metrics) + [f"recall_{n}" for n in names]
    lines = [
        f"# Classifier variants on {table.source}",
        "",
        f"{len(y)} cases ({', '.join(f'{n}: {int((y == i).sum())}' for i, n in enumerate(names))}), "
        f"{table.features.shape[1]} features; {n_repeats} x stratified {n_splits}-fold CV, seed {seed}; "
        f"samplers and GANs fitted on training folds only. p: Nadeau-Bengio corrected paired t-test against '{BASELINE}'.",
    ]
    imputed = {k: v for k, v in table.missing.items() if v}
    lines += [
        "",
        "Missing values (median-imputed inside each training fold): " + (json.dumps(imputed) if imputed else "none"),
    ]
    if table.one_hot:
        lines.append("One-hot encoded: " + json.dumps(table.one_hot))
    for name, reason in failures.items():
        lines.append(f"Variant {name} could not run on these data and is left out ({reason})")
    summary = []
    for metric in metric_names:
        rows = summarise(results, metric, n_splits)
        summary += rows
        lines += ["", f"## {metric}", "", summary_table(rows)]
    gans = [g for g in gan if any(v.sampler == g for v in variants.values())]
    if quality and gans:
        # every GAN of the comparison, each on training fold 1: which of them generates usable features
        reports = {
            g: generated_feature_quality(
                table.features, y, g, seed, n_splits, gan_args, plot=str(out / f"feature_pca_{g}.png")
            )
            for g in gans
        }
        write_atomic(out / "feature_quality.json", json.dumps(reports, indent=1))
        lines += [
            "",
            "## Generated features (each GAN on training fold 1; PCA plots: feature_pca_<variant>.png)",
            "",
            "| variant | class | MMD² | precision | recall | NN-distance ratio (fake/real) | real-vs-fake AUC | train on generated, test on real (balanced accuracy) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for g, report in reports.items():
            tstr = report.get("train_synthetic_test_real")
            tstr = f"{tstr:.3f}" if tstr is not None else "—"
            for c, q in report["per_class"].items():
                lines.append(
                    f"| {g} | {names[int(c)]} | {q['mmd2']:.4f} | {q['precision']:.2f} | {q['recall']:.2f} | "
                    f"{q['memorisation']['ratio']:.2f} | {q['real_vs_fake_auc']:.2f} | {tstr} |"
                )
    text = "\n".join(lines) + "\n"
    write_atomic(out / "comparison.md", text)
    columns = ["variant", "metric", "n", "mean", "sd", "ci_low", "ci_high", "diff_vs_none", "p_vs_none"]
    write_atomic(out / "comparison.csv", csv_text(summary, columns))
    fold_rows = [
        {
            "variant": r.variant,
            "repeat": r.repeat,
            "fold": r.fold,
            **r.metrics,
            **{f"param:{k}": v for k, v in r.params.items()},
        }
        for r in results
    ]
    write_atomic(
        out / "folds.csv",
        csv_text(
            fold_rows,
            sorted({k for row in fold_rows for k in row}, key=lambda k: (k not in ("variant", "repeat", "fold"), k)),
        ),
    )
    print(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mimtl.engines.feature_compare", description=compare_feature_table.__doc__
    )
    parser.add_argument("features", help="CSV or npz feature table, one row per case")
    parser.add_argument("--label", default="label", help="the label column")
    parser.add_argument("--id-column", default=None)
    parser.add_argument("--output-dir", default="comparison")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k-neighbors", type=int, default=5)
    args = parser.parse_args(argv)
    from mimtl.data.feature_table import FeatureTableError

    try:
        compare_feature_table(
            args.features,
            args.label,
            args.output_dir,
            args.id_column,
            args.folds,
            args.repeats,
            args.seed,
            k_neighbors=args.k_neighbors,
        )
    except (FeatureTableError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
