"""A paper's experiment as one command: a grid of bundle runs, repeated over seeds, summarised.

Every cell of the grid is an ordinary run of the bundle's own ``train`` config followed by its
``evaluate`` config, with the cell's overrides, so the experiment measures exactly what users run.
Finished runs are appended to ``runs.csv`` as they end; a rerun skips them, so an interrupted
experiment resumes instead of starting over. A run cut off in the middle of its training continues
from its own resumable checkpoint (when the train config has a ``resume`` setting, as the shipped
bundles do: :class:`mimtl.handlers.ResumableCheckpoint`) instead of training again from scratch.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Factor", "GridExperiment", "PrerequisiteRun", "summarize_runs"]

logger = logging.getLogger(__name__)


@dataclass
class Factor:
    """One axis of the grid.

    Args:
        name: column name in the tables (``module``, ``fraction``, ...).
        levels: level label -> config overrides (id -> value) applied for that level.
    """

    name: str
    levels: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any]) -> Factor:
        """``{id: ID, values: [...]}`` (one id, a level per value) or ``{levels: {label: {id: value}}}``."""
        if "levels" in spec:
            levels = spec["levels"]
            if not isinstance(levels, Mapping) or not all(isinstance(v, Mapping) for v in levels.values()):
                raise ValueError(f"factor '{name}': 'levels' must map each level label to a dict of overrides.")
            return cls(name, {str(k): dict(v) for k, v in levels.items()})
        if "id" in spec and "values" in spec:
            return cls(name, {_label(v): {spec["id"]: v} for v in spec["values"]})
        raise ValueError(f"factor '{name}' needs either 'id' + 'values' or 'levels', got keys {sorted(spec)}.")


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class GridExperiment:
    """Run ``train`` then ``evaluate`` of a bundle for every grid cell and seed; tabulate a metric.

    Args:
        bundle: bundle name or folder.
        factors: factor name -> ``{id: ..., values: [...]}`` or ``{levels: {label: {id: value}}}``.
            The first factor is drawn as separate lines of the plot, the last one is its x axis.
        seeds: one run per seed and cell; the seed goes to the config id ``seed_id``.
        metric: the name in the evaluate config's ``metrics.csv`` (MONAI ``MetricsSaver``) to report.
        output_dir: where runs, ``runs.csv``, ``results.csv`` / ``results.md`` and ``results.png`` go.
        overrides: overrides applied to every run (e.g. fewer epochs, a smaller image size).
        higher_is_better: only used for wording in the table (AUC: True, MRE: False).
        seed_id: config id holding the seed.
        train_config, eval_config: config names in the bundle.
        title: the plot title.
        metric_label: the plot's y-axis label (default: ``metric``), e.g. with its unit.
        log_scale: a logarithmic y axis, for a metric whose cells differ by orders of magnitude
            (a landmark MRE of 200 mm beside 2 mm).
        extra_metrics: more ``metrics.csv`` names to record per run and tabulate after ``metric``
            (e.g. SDR beside MRE); the plot shows ``metric`` only.
        higher_is_better_extra: wording of each extra metric's table (default: ``higher_is_better``).
    """

    def __init__(
        self,
        bundle: str | os.PathLike,
        factors: Mapping[str, Mapping[str, Any]],
        seeds: Sequence[int],
        metric: str,
        output_dir: str | os.PathLike,
        overrides: Mapping[str, Any] | None = None,
        higher_is_better: bool = True,
        seed_id: str = "seed",
        train_config: str = "train",
        eval_config: str = "evaluate",
        title: str = "",
        extra_metrics: Sequence[str] = (),
        higher_is_better_extra: Sequence[bool] | None = None,
        metric_label: str | None = None,
        log_scale: bool = False,
    ) -> None:
        from mimtl.bundle.bundle import load_bundle

        if not factors:
            raise ValueError("an experiment needs at least one factor.")
        if not seeds:
            raise ValueError("an experiment needs at least one seed.")
        self.bundle = load_bundle(bundle)
        self.factors = [Factor.from_config(name, spec) for name, spec in factors.items()]
        self.seeds = [int(s) for s in seeds]
        self.metric = metric
        self.extra_metrics = [m for m in extra_metrics if m != metric]
        extra_better = higher_is_better_extra or [higher_is_better] * len(self.extra_metrics)
        if len(extra_better) != len(self.extra_metrics):
            raise ValueError("higher_is_better_extra needs one entry per extra metric.")
        self.better = {metric: higher_is_better, **dict(zip(self.extra_metrics, extra_better, strict=True))}
        self.output_dir = Path(output_dir)
        self.overrides = dict(overrides or {})
        self.higher_is_better = higher_is_better
        self.seed_id = seed_id
        self.train_config = train_config
        self.eval_config = eval_config
        self.title = title or f"{self.bundle.name}: {metric}"
        self.metric_label = metric_label or metric
        self.log_scale = log_scale
        self._check_ids()
        # runs resume inside training from their own checkpoint where the train config can
        self.resumable = self.bundle.parser(self.train_config).get("resume") is not None

    def _check_ids(self) -> None:
        """Fail before the first run if an override id does not exist in the train config."""
        from mimtl.bundle.overrides import check_override_keys

        ids = dict(self.overrides)
        ids[self.seed_id] = 0
        for factor in self.factors:
            for level in factor.levels.values():
                ids.update(level)
        check_override_keys(self.bundle.parser(self.train_config), ids, source=f"experiment on '{self.bundle.name}'")

    @property
    def runs_file(self) -> Path:
        return self.output_dir / "runs.csv"

    def cells(self) -> list[tuple[dict[str, str], int, dict[str, Any]]]:
        """Every (levels, seed, overrides) of the grid, in run order (seed outermost, so early results cover the grid)."""
        out = []
        for seed in self.seeds:
            for combo in itertools.product(*(f.levels.items() for f in self.factors)):
                levels = {f.name: label for f, (label, _) in zip(self.factors, combo)}
                overrides = dict(self.overrides)
                for _, level_overrides in combo:
                    overrides.update(level_overrides)
                overrides[self.seed_id] = seed
                out.append((levels, seed, overrides))
        return out

    def _run_name(self, levels: Mapping[str, str], seed: int) -> str:
        parts = [f"{k}-{v}" for k, v in levels.items()] + [f"seed{seed}"]
        return "_".join(p.replace(os.sep, "-").replace(" ", "") for p in parts)

    def _done(self) -> dict[str, dict[str, str]]:
        if not self.runs_file.is_file():
            return {}
        with open(self.runs_file, newline="") as f:
            return {row["run"]: row for row in csv.DictReader(f)}

    def _append(self, row: dict[str, Any]) -> None:
        """Rewrite runs.csv with the new row, atomically (a crash never leaves it half written)."""
        rows = list(self._done().values()) + [row]
        fields = ["run", *[f.name for f in self.factors], "seed", self.metric, *self.extra_metrics, "seconds"]
        tmp = self.runs_file.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.runs_file)

    def _run_one(self, run_dir: Path, overrides: dict[str, Any]) -> dict[str, float]:
        from mimtl.utils import read_metrics

        common = {**overrides, "ckpt_dir": str(run_dir / "models"), "output_dir": str(run_dir / "eval")}
        for config in (self.train_config, self.eval_config):
            # a run killed before it was recorded continues from its checkpoint (none: starts fresh)
            resume = {"resume": True} if self.resumable and config == self.train_config else {}
            wf = self.bundle.workflow(config, configure_logging=False, **{**common, **resume})
            wf.initialize()
            wf.run()
            wf.finalize()
        metrics = read_metrics(run_dir / "eval")
        for name in (self.metric, *self.extra_metrics):
            if name not in metrics:
                raise KeyError(
                    f"metric '{name}' not in {run_dir / 'eval' / 'metrics.csv'} (found: {', '.join(metrics) or 'none'})."
                )
        return {name: metrics[name] for name in (self.metric, *self.extra_metrics)}

    def _drop_resume_checkpoint(self, run_dir: Path) -> None:
        """A recorded run is never trained again: its resumable checkpoint (network + optimizer state,
        several times model.pt) only takes space."""
        from mimtl.handlers.resume import RESUME_FILENAME

        if self.resumable:
            (run_dir / "models" / RESUME_FILENAME).unlink(missing_ok=True)

    def run(self) -> Path:
        """Run every missing cell, then write the summary table and plot; returns ``results.md``."""
        from tqdm import tqdm

        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "experiment.json").write_text(
            json.dumps(
                {
                    "bundle": self.bundle.name,
                    "version": self.bundle.metadata.get("version"),
                    "factors": {f.name: f.levels for f in self.factors},
                    "seeds": self.seeds,
                    "metric": self.metric,
                    "extra_metrics": self.extra_metrics,
                    "overrides": self.overrides,
                },
                indent=1,
                default=str,
            )
        )
        done = self._done()
        todo = [(lv, s, ov) for lv, s, ov in self.cells() if self._run_name(lv, s) not in done]
        if done:
            logger.info(f"{len(done)} runs already in {self.runs_file}; {len(todo)} to go")
        for levels, seed, overrides in tqdm(todo, desc=f"{self.bundle.name} experiment", unit="run"):
            name = self._run_name(levels, seed)
            start = time.perf_counter()
            values = self._run_one(self.output_dir / "runs" / name, overrides)
            seconds = time.perf_counter() - start
            formatted = {k: f"{v:.6f}" for k, v in values.items()}
            self._append({"run": name, **levels, "seed": seed, **formatted, "seconds": f"{seconds:.1f}"})
            self._drop_resume_checkpoint(self.output_dir / "runs" / name)
            tqdm.write(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()) + f" ({seconds:.0f} s)")
        return self.summarize()

    def summarize(self) -> Path:
        """Write ``results.csv``, ``results.md`` and ``results.png`` from ``runs.csv``."""
        rows = list(self._done().values())
        names = [f.name for f in self.factors]
        orders = [list(f.levels) for f in self.factors]
        table = summarize_runs(rows, names, self.metric, orders)
        extra = {m: summarize_runs(rows, names, m, orders) for m in self.extra_metrics if all(r.get(m) for r in rows)}
        with open(self.output_dir / "results.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*names, "n", "mean", "sd", *(f"{m}_{s}" for m in extra for s in ("mean", "sd"))])
            for key, (n, mean, sd) in table.items():
                more = [f"{v:.4f}" for m in extra for v in extra[m].get(key, (0, math.nan, math.nan))[1:]]
                writer.writerow([*key, n, f"{mean:.4f}", f"{sd:.4f}", *more])
        md = self.output_dir / "results.md"
        md.write_text("\n".join([self.markdown(table), *(self.markdown(t, m) for m, t in extra.items())]))
        self.plot(table, self.output_dir / "results.png")
        return md

    def markdown(self, table: Mapping[tuple[str, ...], tuple[int, float, float]], metric: str | None = None) -> str:
        """A table with the first factor as rows and the last as columns (mean +- sd, n seeds)."""
        if len(self.factors) > 2:
            raise NotImplementedError("the markdown table is drawn for one or two factors.")
        metric = metric or self.metric
        rows_f, cols_f = self.factors[0], self.factors[-1]
        better = "higher" if self.better[metric] else "lower"
        lines = [
            f"{metric} (mean ± sd over seeds; {better} is better). Rows: {rows_f.name}; columns: {cols_f.name}.",
            "",
            "| " + " | ".join([rows_f.name, *cols_f.levels]) + " |",
            "|" + "---|" * (len(cols_f.levels) + 1),
        ]
        for r in rows_f.levels:
            cells = []
            for c in cols_f.levels:
                key = (r, c) if len(self.factors) == 2 else (r,)
                n, mean, sd = table.get(key, (0, math.nan, math.nan))
                cells.append(f"{mean:.3f} ± {sd:.3f} (n={n})" if n else "–")
            lines.append("| " + " | ".join([r, *cells]) + " |")
        return "\n".join(lines) + "\n"

    def figure(self, table: Mapping[tuple[str, ...], tuple[int, float, float]]) -> Any:
        """The plot as a matplotlib figure: mean +- sd against the last factor, a line per level of the first."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        series_f, x_f = self.factors[0], self.factors[-1]
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        xs = list(range(len(x_f.levels)))
        for s in series_f.levels if len(self.factors) > 1 else [None]:
            keys = [(s, x) if s is not None else (x,) for x in x_f.levels]
            stats = [table.get(k, (0, math.nan, math.nan)) for k in keys]
            ax.errorbar(xs, [m for _, m, _ in stats], yerr=[sd for *_, sd in stats], marker="o", capsize=3, label=s)
        ax.set_xticks(xs, list(x_f.levels))
        ax.set_xlabel(x_f.name)
        ax.set_ylabel(self.metric_label)
        if self.log_scale:
            ax.set_yscale("log")  # error bars reaching below 0 are clipped
        ax.set_title(self.title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(self.factors) > 1:
            ax.legend(title=series_f.name, fontsize=8)
        fig.tight_layout()
        return fig

    def plot(self, table: Mapping[tuple[str, ...], tuple[int, float, float]], path: Path) -> None:
        """Write :meth:`figure` to ``path`` (PNG, atomically)."""
        import matplotlib.pyplot as plt

        fig = self.figure(table)
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, path)


class PrerequisiteRun:
    """One workflow of a bundle that an experiment needs first, run only while its output is missing.

    For example the in-domain encoder of the landmark experiment: a chest-film classifier trained
    (fine-tuned end to end) on the demo films, whose checkpoint a grid level then names. Like the
    grid runs it resumes: a finished output is reused, never recomputed.

    Args:
        bundle: bundle name or folder.
        config: the workflow to run (e.g. ``"train"``).
        output: the file the workflow writes; present means done.
        overrides: config overrides (point its ``ckpt_dir`` / ``output_dir`` next to ``output``).
    """

    def __init__(
        self,
        bundle: str | os.PathLike,
        config: str,
        output: str | os.PathLike,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        from mimtl.bundle.bundle import load_bundle

        self.bundle = load_bundle(bundle)
        self.config = config
        self.output = Path(output)
        self.overrides = dict(overrides or {})

    def run(self) -> Path:
        """Run the workflow unless ``output`` exists; return ``output``."""
        if self.output.is_file():
            logger.info(f"{self.output} exists: {self.bundle.name} {self.config} not rerun")
            return self.output
        logger.info(f"running {self.bundle.name} {self.config} for {self.output} ...")
        wf = self.bundle.workflow(self.config, configure_logging=False, **self.overrides)
        wf.initialize()
        wf.run()
        wf.finalize()
        if not self.output.is_file():
            raise FileNotFoundError(f"{self.bundle.name} {self.config} finished without writing {self.output}.")
        return self.output


def summarize_runs(
    rows: Sequence[Mapping[str, str]], names: Sequence[str], metric: str, orders: Sequence[Sequence[str]]
) -> dict[tuple[str, ...], tuple[int, float, float]]:
    """(levels) -> (n, mean, sample sd) of ``metric`` over the runs, in the factors' level order."""
    groups: dict[tuple[str, ...], list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[n] for n in names), []).append(float(row[metric]))
    out = {}
    for key in itertools.product(*orders):
        values = groups.get(tuple(key))
        if not values:
            continue
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        out[tuple(key)] = (len(values), mean, sd)
    return out
