"""The paper's experiment (Mehra et al., arXiv 2209.14097) as one resumable run: table in, tables and plot out.

:func:`minority_experiment` reads a feature table (:func:`~mimtl.data.feature_table.load_feature_table`),
subsamples its minority class to each size, and for every (size, seed) pair runs one stratified CV of
every classifier variant (:func:`~mimtl.engines.feature_cv.minority_pair`, what
:func:`~mimtl.engines.feature_cv.minority_sweep` runs per pair). It writes to ``output_dir``:

* ``runs.csv``: one row per (size, seed, variant, fold) with the fold's metrics, rewritten whole
  (atomically) after every pair, so a killed run resumes: a (size, seed, variant) whose folds are
  all there is not run again;
* ``settings.json``: what the numbers depend on (the table's SHA-256, label, folds, k, classifier,
  variants); resuming with other settings in the same folder is refused;
* ``results.md``: per metric (balanced accuracy first, then the minority class's recall), a table
  variant x minority size of ``mean ± sd`` over seeds x folds, and a paragraph computed from the
  numbers comparing the best GAN variant with SMOTE and class weights at each size (paired over the
  same seeds x folds, Nadeau-Bengio corrected p);
* ``results.png``: balanced accuracy against minority size, one line per variant (mean, sd band),
  no augmentation drawn prominently;
* ``summary.json``: variant -> size -> metric -> ``{mean, sd, n}``.

From a shell: ``python -m mimtl.engines.feature_experiment FILE --label COL --output-dir DIR --sizes 10 20 40
--seeds 0 1 2 3 4 --folds 5``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mimtl.data.feature_table import load_feature_table
from mimtl.engines.feature_cv import (
    BASELINE,
    VariantSpec,
    _corrected_t,
    check_class_sizes,
    default_variants,
    minority_pair,
    minority_subset,
)

__all__ = ["main", "minority_experiment", "read_runs", "summarise_runs"]

GAN_SAMPLERS = ("acgan", "tac-gan", "projection", "wgan-gp")
KEYS = ("minority_size", "seed", "variant", "fold")


def _variant_specs(
    variants: Mapping[str, VariantSpec | Mapping] | None,
    ratios: Sequence[float],
    gan: Sequence[str],
    gan_args: Mapping | None,
) -> dict[str, VariantSpec]:
    if variants is None:
        variants = default_variants(ratios, gan)
    specs = {}
    for name, v in variants.items():
        if isinstance(v, VariantSpec):
            spec = v
        elif isinstance(v, Mapping):
            try:
                spec = VariantSpec(**dict(v))
            except TypeError as e:
                raise ValueError(f"variant {name!r}: {e}") from e
        else:
            raise ValueError(
                f"variant {name!r} must be a VariantSpec or a mapping of its fields, got {type(v).__name__}"
            )
        if gan_args and spec.sampler in GAN_SAMPLERS:
            spec = VariantSpec(**{**spec.__dict__, "sampler_args": {**dict(gan_args), **spec.sampler_args}})
        specs[str(name)] = spec
    if not specs:
        raise ValueError("no variants to compare")
    return specs


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _check_settings(path: Path, settings: dict) -> dict:
    """The settings to store: ``settings``, with the variants of an earlier run in ``path`` kept.

    Raises:
        ValueError: ``path`` holds the settings of another run (another table, label, folds, ...), or a
            variant of the same name with another definition.
    """
    if not path.is_file():
        return settings
    old = json.loads(path.read_text(encoding="utf-8"))
    differ = [k for k in settings if k != "variants" and old.get(k) != settings[k]]
    differ += [
        f"variant {name!r}"
        for name, spec in settings["variants"].items()
        if name in old.get("variants", {}) and old["variants"][name] != spec
    ]
    if differ:
        raise ValueError(
            f"{path.parent} holds runs of other settings ({', '.join(differ)} differ from {path}); "
            "use another output_dir, or delete its runs.csv and settings.json to start over"
        )
    return {**settings, "variants": {**old.get("variants", {}), **settings["variants"]}}


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def read_runs(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``runs.csv`` (size, seed and fold as int, the metrics as float; none if no file)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row: dict[str, Any] = {"minority_size": int(r["minority_size"]), "seed": int(r["seed"])}
        row["variant"], row["fold"] = r["variant"], int(r["fold"])
        row.update({k: _number(v) for k, v in r.items() if k not in KEYS})
        out.append(row)
    return out


def _runs_text(rows: Sequence[Mapping], order: Sequence[str]) -> str:
    rank = {name: i for i, name in enumerate(order)}
    rows = sorted(
        rows,
        key=lambda r: (r["minority_size"], r["seed"], rank.get(r["variant"], len(rank)), r["variant"], r["fold"]),
    )
    metrics = sorted({k for r in rows for k in r if k not in KEYS})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*KEYS, *metrics], restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _stats(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if not len(v):
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def summarise_runs(
    rows: Sequence[Mapping], variants: Sequence[str], sizes: Sequence[int], seeds: Sequence[int], metrics: Sequence[str]
) -> dict:
    """variant -> str(size) -> metric -> ``{mean, sd, n}`` over the seeds x folds of ``rows`` (NaN left out; mean None if none)."""
    seeds = {int(s) for s in seeds}
    summary: dict = {}
    for name in variants:
        summary[name] = {}
        for size in sizes:
            cell = [r for r in rows if r["variant"] == name and r["minority_size"] == int(size) and r["seed"] in seeds]
            summary[name][str(int(size))] = {m: _stats([float(r.get(m, float("nan"))) for r in cell]) for m in metrics}
    return summary


def _paired(rows: Sequence[Mapping], a: str, b: str, size: int, seeds: set, n_splits: int) -> tuple[float, float, int]:
    """Mean balanced-accuracy difference ``a - b`` over the (seed, fold)s both have, its corrected p, and their number."""

    def values(name: str) -> dict:
        return {
            (r["seed"], r["fold"]): r["balanced_accuracy"]
            for r in rows
            if r["variant"] == name and r["minority_size"] == size and r["seed"] in seeds
        }

    va, vb = values(a), values(b)
    keys = sorted(set(va) & set(vb))
    diffs = np.array([va[k] - vb[k] for k in keys], dtype=float)
    if not len(diffs):
        return float("nan"), float("nan"), 0
    return float(diffs.mean()), _corrected_t(diffs, 1 / n_splits)[1], len(diffs)


def _find(specs: Mapping[str, VariantSpec], name: str, match) -> str | None:
    if name in specs:
        return name
    return next((n for n, s in specs.items() if match(s)), None)


def _fmt(stat: Mapping) -> str:
    return "—" if stat["mean"] is None else f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def _p(p: float) -> str:
    return "—" if math.isnan(p) else f"{p:.2f}" if p >= 0.01 else f"{p:.1g}"


def _comparison(
    rows: Sequence[Mapping],
    summary: Mapping,
    specs: Mapping[str, VariantSpec],
    sizes: Sequence[int],
    seeds: Sequence[int],
    n_splits: int,
) -> str:
    gans = [n for n, s in specs.items() if s.sampler in GAN_SAMPLERS]
    others = [
        (label, _find(specs, label, match))
        for label, match in (
            ("smote", lambda s: s.sampler == "smote"),
            ("class-weighted", lambda s: s.sampler is None and s.loss == "weighted"),
        )
    ]
    others = [(label, n) for label, n in others if n is not None]
    if not gans or not others:
        return "No comparison of a GAN variant with SMOTE or class weights: the run lacks " + (
            "a GAN variant." if not gans else "both SMOTE and a class-weighted variant."
        )
    seed_set = {int(s) for s in seeds}
    parts, tests, below = [], 0, 0
    for size in sizes:
        key = str(int(size))
        scored = [(summary[n][key]["balanced_accuracy"]["mean"], n) for n in gans]
        scored = [(m, n) for m, n in scored if m is not None]
        if not scored:
            parts.append(f"at {size} cases: no GAN result")
            continue
        mean, best = max(scored, key=lambda t: t[0])  # ties: the first in the variants' order
        tied = [n for m, n in scored if m == mean and n != best]
        cmp = []
        for _, other in others:
            diff, p, _ = _paired(rows, best, other, int(size), seed_set, n_splits)
            cmp.append(f"vs {other} {diff:+.3f} (p {_p(p)})")
            tests += not math.isnan(p)
            below += (not math.isnan(p)) and p < 0.05
        tie = f" ({' and '.join(tied)} {'has' if len(tied) == 1 else 'have'} the same mean)" if tied else ""
        parts.append(f"at {size} cases: {best} ({mean:.3f}) " + ", ".join(cmp) + tie)
    n_pairs = len(seed_set) * n_splits
    return (
        "Best GAN variant by mean balanced accuracy at each minority size, against "
        + " and ".join(n for _, n in others)
        + f" (mean paired difference in balanced accuracy over up to {n_pairs} seed × fold pairs, "
        "Nadeau-Bengio corrected p): "
        + "; ".join(parts)
        + f". {below} of {tests} of these differences have p < 0.05; picking the best GAN variant "
        "after the fact favours it, so these p-values are not corrected for that choice."
    )


def _plot(path: Path, summary: Mapping, variants: Sequence[str], sizes: Sequence[int], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mimtl.handlers._common import save_atomic

    fig, ax = plt.subplots(figsize=(8, 5))
    x = np.asarray([int(s) for s in sizes], dtype=float)
    for name in variants:
        stats = [summary[name][str(int(s))]["balanced_accuracy"] for s in sizes]
        mean = np.array([np.nan if s["mean"] is None else s["mean"] for s in stats])
        sd = np.array([np.nan if s["sd"] is None else s["sd"] for s in stats])
        if name == BASELINE:
            (line,) = ax.plot(x, mean, "o-", color="black", linewidth=3.0, zorder=5, label=f"{name} (no augmentation)")
        else:
            (line,) = ax.plot(x, mean, "o-", linewidth=1.3, alpha=0.9, label=name)
        ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.18 if name == BASELINE else 0.05)
    ax.set_xscale("log", base=2)  # sizes usually double: 10, 20, 40
    ax.set_xticks(x, minor=False)
    ax.minorticks_off()
    ax.set_xticklabels([str(int(s)) for s in sizes])
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, 0.0), min(hi, 1.02))  # sd bands may pass the metric's range
    ax.set_xlabel("minority-class cases")
    ax.set_ylabel("balanced accuracy (mean ± sd over seeds × folds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    try:
        save_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)


def minority_experiment(
    features: str | os.PathLike,
    label: str = "label",
    output_dir: str | os.PathLike = "experiment",
    minority_sizes: Sequence[int] = (10, 20, 40),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    n_splits: int = 5,
    ratios: Sequence[float] = (1.0,),
    gan: Sequence[str] = ("acgan", "tac-gan", "wgan-gp"),
    k_neighbors: int = 5,
    gan_args: Mapping | None = None,
    classifier: Mapping | None = None,
    variants: Mapping[str, VariantSpec | Mapping] | None = None,
    metrics: Sequence[str] = ("balanced_accuracy", "macro_f1", "roc_auc", "ece"),
    id_column: str | None = None,
    progress: bool = True,
) -> dict:
    """Every classifier variant at each minority-class size, over seeds x stratified folds; resumable.

    Args:
        features: a CSV or npz feature table (:func:`~mimtl.data.feature_table.load_feature_table`).
        label: its label column; the smallest class is the minority class that is subsampled.
        output_dir: where ``runs.csv``, ``settings.json``, ``results.md``, ``results.png`` and
            ``summary.json`` go; a (size, seed, variant) already in its ``runs.csv`` is not run again.
        minority_sizes: minority-class sizes (each at most the class's count).
        seeds: one subsample and one stratified CV per seed and size.
        n_splits: folds of the stratified CV.
        ratios, gan: the GAN variants of :func:`~mimtl.engines.feature_cv.default_variants`.
        k_neighbors: neighbours of the SMOTE-type samplers.
        gan_args: arguments of every GAN sampler (e.g. ``{"epochs": 300}``).
        classifier: defaults of :class:`~mimtl.engines.feature_classifier.FeatureMLPClassifier`.
        variants: name -> :class:`~mimtl.engines.feature_cv.VariantSpec` or a mapping of its fields
            (default: ``default_variants(ratios, gan)``).
        metrics: metrics to report (balanced accuracy is always reported, first); the minority
            class's recall ``recall_<name>`` is added.
        id_column: the table's case-id column.
        progress: a progress bar over the (size, seed) pairs.

    Returns:
        variant -> str(size) -> metric -> ``{"mean", "sd", "n"}`` (also ``summary.json``).

    Raises:
        FeatureTableError: an unusable table.
        ValueError: a size larger than the minority class, or too small for ``n_splits`` folds or
            SMOTE's ``k_neighbors + 1``; an unknown metric; ``output_dir`` holding runs of other settings.
    """
    from tqdm.auto import tqdm

    from mimtl.handlers._common import write_atomic

    table = load_feature_table(features, label=label, id_column=id_column)
    names = [str(c) for c in table.classes]
    _, y = np.unique(table.labels, return_inverse=True)
    counts = np.bincount(y, minlength=len(names))
    minority = int(counts.argmin())
    specs = _variant_specs(variants, ratios, gan, gan_args)
    sizes = [int(s) for s in minority_sizes]
    seeds = [int(s) for s in seeds]
    if not sizes or not seeds:
        raise ValueError(f"minority_sizes and seeds must not be empty, got {sizes} and {seeds}")
    metric_names = ["balanced_accuracy", *[m for m in metrics if m != "balanced_accuracy"]]
    if f"recall_{names[minority]}" not in metric_names:
        metric_names.append(f"recall_{names[minority]}")
    known = {"balanced_accuracy", "macro_f1", "roc_auc", "ece", *(f"recall_{n}" for n in names)}
    unknown = [m for m in metric_names if m not in known]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(known)}")
    for size in sizes:  # every size checked before any work
        if size > counts[minority]:
            raise ValueError(
                f"minority size {size} exceeds the {counts[minority]} cases of class {names[minority]!r} in {label!r}"
            )
        subset = np.asarray(names)[y[minority_subset(y, size, 0, minority)]]
        try:
            check_class_sizes(subset, n_splits, k_neighbors, specs, label)
        except ValueError as e:
            raise ValueError(f"minority size {size}: {e}") from e

    out = Path(output_dir)
    settings = {
        "table_sha256": hashlib.sha256(Path(features).read_bytes()).hexdigest(),
        "label": label,
        "id_column": id_column,
        "minority": names[minority],
        "n_splits": int(n_splits),
        "k_neighbors": int(k_neighbors),
        "classifier": _jsonable(dict(classifier or {})),
        "variants": {name: _jsonable(spec.__dict__) for name, spec in specs.items()},
    }
    settings = _check_settings(out / "settings.json", settings)
    write_atomic(out / "settings.json", json.dumps(settings, indent=1) + "\n")

    runs_path = out / "runs.csv"
    rows = read_runs(runs_path)
    folds = set(range(n_splits))
    have: dict[tuple[int, int, str], set] = {}
    for r in rows:
        have.setdefault((r["minority_size"], r["seed"], r["variant"]), set()).add(r["fold"])
    pairs = [(size, seed) for size in sizes for seed in seeds]
    todo = {p: [n for n in specs if have.get((*p, n), set()) != folds] for p in pairs}
    bar = tqdm(
        total=len(pairs),
        initial=sum(not v for v in todo.values()),
        desc="minority experiment",
        unit="pair",
        disable=not progress,
    )
    for (size, seed), missing in todo.items():
        if not missing:
            continue
        bar.set_postfix(size=size, seed=seed)
        new = minority_pair(
            table.features,
            y,
            {n: specs[n] for n in missing},
            size,
            seed,
            minority=minority,
            ids=table.case_ids,
            n_splits=n_splits,
            k_neighbors=k_neighbors,
            classifier=classifier,
            class_names=names,
            progress=False,
        )
        stale = {(size, seed, n) for n in missing}
        rows = [r for r in rows if (r["minority_size"], r["seed"], r["variant"]) not in stale] + new
        write_atomic(runs_path, _runs_text(rows, list(specs)))
        bar.update(1)
    bar.close()

    rows = read_runs(runs_path)  # the numbers as stored: a resumed and a fresh run summarise the same way
    summary = summarise_runs(rows, list(specs), sizes, seeds, metric_names)
    write_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")

    lines = [
        f"# Minority-size experiment on {Path(table.source).name}",
        "",
        f"{len(y)} cases ({', '.join(f'{n}: {int(c)}' for n, c in zip(names, counts))}), "
        f"{table.features.shape[1]} features. The minority class {names[minority]!r} is subsampled to "
        f"{', '.join(map(str, sizes))} cases (every case of the other classes kept) with seeds "
        f"{', '.join(map(str, seeds))}; each subsample is compared by one stratified {n_splits}-fold CV, "
        "samplers and GANs fitted on training folds only. Cells: mean ± sd over seeds × folds.",
    ]
    for metric in metric_names:
        lines += [
            "",
            f"## {metric}",
            "",
            "| variant | " + " | ".join(f"{s} cases" for s in sizes) + " |",
            "|---|" + "---|" * len(sizes),
        ]
        for name in specs:
            lines.append(f"| {name} | " + " | ".join(_fmt(summary[name][str(s)][metric]) for s in sizes) + " |")
    lines += [
        "",
        "## GAN against SMOTE and class weights",
        "",
        _comparison(rows, summary, specs, sizes, seeds, n_splits),
    ]
    text = "\n".join(lines) + "\n"
    write_atomic(out / "results.md", text)
    _plot(out / "results.png", summary, list(specs), sizes, f"{Path(table.source).name}: minority {names[minority]!r}")
    print(text)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mimtl.engines.feature_experiment",
        description="The minority-size experiment on a feature table (resumable); writes runs.csv, "
        "results.md, results.png and summary.json.",
    )
    parser.add_argument("features", help="CSV or npz feature table, one row per case")
    parser.add_argument("--label", default="label", help="the label column")
    parser.add_argument("--id-column", default=None)
    parser.add_argument("--output-dir", default="experiment")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 40], help="minority-class sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.0], help="GAN minority:majority ratios")
    parser.add_argument("--gan", nargs="*", default=["acgan", "tac-gan", "wgan-gp"], help="GAN variants")
    parser.add_argument("--k-neighbors", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None, help="the classifier's training epochs")
    parser.add_argument("--gan-epochs", type=int, default=None, help="the GANs' training epochs")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from mimtl.data.feature_table import FeatureTableError

    try:
        minority_experiment(
            args.features,
            label=args.label,
            output_dir=args.output_dir,
            minority_sizes=args.sizes,
            seeds=args.seeds,
            n_splits=args.folds,
            ratios=args.ratios,
            gan=args.gan,
            k_neighbors=args.k_neighbors,
            gan_args=None if args.gan_epochs is None else {"epochs": args.gan_epochs},
            classifier=None if args.epochs is None else {"epochs": args.epochs},
            id_column=args.id_column,
            progress=not args.no_progress,
        )
    except (FeatureTableError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
