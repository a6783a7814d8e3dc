"""The figures a bundle publishes, computed by running it: ``eval_metrics``, thresholds, README tables.

Nothing in a bundle's ``metadata.json`` or README results is typed by hand. ``mimtl results NAME
--write`` runs the bundle's ``evaluate`` workflow on the test split (and, where the model's
output declares decision thresholds, on the validation split to choose them by Youden's J),
then writes:

- ``metadata.json``: ``eval_metrics`` (every value of evaluate's ``metrics.csv``, ``test_``
  prefixed, plus the conformal coverage where evaluate reports one) and the output's
  ``thresholds``;
- ``docs/README.md``: the table between ``<!-- mimtl:results:start -->`` and
  ``<!-- mimtl:results:end -->``, rendered from those files.

``tests/test_shipped_models.py`` runs the same computation and compares it with what is shipped.
What is read from evaluate's output folder: ``metrics.csv`` (MONAI ``MetricsSaver``),
``landmark_summary.json`` (:class:`mimtl.handlers.LandmarkReport`) and ``predictions.csv``
(:class:`mimtl.handlers.ClassificationWriter`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mimtl.bundle.bundle import Bundle, BundleError
from mimtl.utils import read_metrics

__all__ = [
    "RESULTS_END",
    "RESULTS_START",
    "compare_results",
    "compute_results",
    "evaluate_split",
    "render_results",
    "stale_includes",
    "sync_includes",
    "write_results",
]

RESULTS_START = "<!-- mimtl:results:start -->"
RESULTS_END = "<!-- mimtl:results:end -->"
#: Decimals kept in metadata.json; comparisons allow one unit of the last one.
DECIMALS = 4


def evaluate_split(bundle: Bundle, split: str, out_dir: Path) -> Path:
    """Run the bundle's evaluate workflow on ``split`` of its default data into ``out_dir``; returns ``out_dir``."""
    wf = bundle.workflow("evaluate", configure_logging=False, output_dir=str(out_dir), num_workers=0, eval_split=split)
    wf.initialize()
    try:
        wf.run()
    finally:
        wf.finalize()
    return out_dir


def _pred_spec(bundle: Bundle) -> dict[str, Any]:
    outputs = bundle.metadata.get("network_data_format", {}).get("outputs", {})
    return next(iter(outputs.values()), {})


def _youden_thresholds(bundle: Bundle, out_dir: Path) -> dict[str, float]:
    """Per-label thresholds from evaluate's ``predictions.csv`` on the validation split and the datalist's labels."""
    import numpy as np

    from mimtl.data.datalist import load_datalist
    from mimtl.metrics import youden_thresholds

    datalist = bundle.parser("evaluate").get_parsed_content("datalist")
    labels_by_file = {
        str(Path(item["image"]).resolve()): item["label"]
        for item in load_datalist(datalist, data_list_key="validation", deep=False)
    }
    with open(out_dir / "predictions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("status", "ok") == "ok"]
    if not rows:
        raise BundleError(f"{out_dir / 'predictions.csv'}: no predictions to choose thresholds on.")
    names = [c[len("prob_") :] for c in rows[0] if c.startswith("prob_")]
    probs = np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows])
    labels = np.array([labels_by_file[str(Path(r["file"]).resolve())] for r in rows], dtype=float)
    return {k: round(float(v), DECIMALS) for k, v in youden_thresholds(probs, labels, names).items()}


def compute_results(bundle: Bundle, work_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run the bundle's evaluation and collect what it publishes.

    Returns:
        ``{"eval_metrics": {...}, "thresholds": {...} or None, "summary": landmark summary or None,
        "split": "test"}``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        test_dir = evaluate_split(bundle, "test", root / "test")
        metrics = {f"test_{k}": round(v, DECIMALS) for k, v in read_metrics(test_dir).items()}
        summary = None
        if (test_dir / "landmark_summary.json").is_file():
            summary = json.loads((test_dir / "landmark_summary.json").read_text())
            coverage = (summary.get("conformal_coverage") or {}).get("overall")
            if coverage is not None:
                metrics["test_conformal_coverage"] = round(float(coverage), DECIMALS)
        thresholds = validation = None
        if "thresholds" in _pred_spec(bundle):
            val_dir = evaluate_split(bundle, "validation", root / "validation")
            thresholds = _youden_thresholds(bundle, val_dir)
            validation = {f"validation_{k}": round(v, DECIMALS) for k, v in read_metrics(val_dir).items()}
    return {
        "split": "test",
        "eval_metrics": metrics,
        "thresholds": thresholds,
        "validation_metrics": validation,
        "summary": summary,
    }


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _landmark_table(summary: Mapping[str, Any]) -> list[str]:
    unit, overall = summary["unit"], summary["overall"]
    sdr_keys = [f"sdr_{t:g}" for t in summary["thresholds"]]
    per = sorted((p for p in summary["per_landmark"] if isinstance(p.get("mre"), float)), key=lambda p: p["mre"])
    lines = [
        "| | value |",
        "|---|---|",
        f"| MRE | **{overall['mre']:.2f} {unit}** (sd {overall['mre_sd']:.2f}, median {overall['mre_median']:.2f}"
        + (f"; {summary['mre_px']:.2f} px)" if "mre_px" in summary and unit != "px" else ")")
        + " |",
        f"| SDR @ {' / '.join(f'{t:g}' for t in summary['thresholds'])} {unit} | "
        + " / ".join(_percent(overall[k]) for k in sdr_keys)
        + " |",
    ]
    if len(per) >= 2:
        lines.append(f"| best landmark (MRE) | {per[0]['name'].replace('_', ' ')} {per[0]['mre']:.2f} {unit} |")
        lines.append(f"| worst landmark (MRE) | {per[-1]['name'].replace('_', ' ')} {per[-1]['mre']:.2f} {unit} |")
    coverage = summary.get("conformal_coverage") or {}
    if coverage.get("overall") is not None:
        per_lm = [c for c in coverage.get("per_landmark", []) if isinstance(c, float) and math.isfinite(c)]
        spread = f"; {_percent(min(per_lm))}-{_percent(max(per_lm))} per landmark" if per_lm else ""
        lines.append(
            f"| conformal coverage (target {_percent(coverage['target'])}) | **{_percent(coverage['overall'])}**"
            f" overall{spread} |"
        )
    lines.append(f"| films / points | {summary['n_images']} / {overall['n_points']} |")
    return lines


def _metrics_table(metrics: Mapping[str, float], thresholds: Mapping[str, float] | None) -> list[str]:
    lines = ["| metric | value |" if not thresholds else "| metric | value | threshold (Youden's J, validation) |"]
    lines.append("|---|---|" if not thresholds else "|---|---|---|")
    names = {k.lower().replace(" ", "_"): k for k in (thresholds or {})}
    for key, value in metrics.items():
        label = names.get(key.removeprefix("test_auc_"))
        cell = f"{thresholds[label]:.4f}" if thresholds and label else ""
        lines.append(f"| {key} | {value:.4f} |" + (f" {cell} |" if thresholds else ""))
    return lines


def render_results(results: Mapping[str, Any]) -> str:
    """The README block (markers included) for ``results`` (from :func:`compute_results`)."""
    body = (
        _landmark_table(results["summary"])
        if results.get("summary")
        else _metrics_table(results["eval_metrics"], results.get("thresholds"))
    )
    note = f"<!-- written by `mimtl results NAME --write` from evaluate on the {results['split']} split -->"
    if results.get("validation_metrics"):
        shown = ", ".join(f"{k} {v:.4f}" for k, v in results["validation_metrics"].items() if "mean" in k)
        body = [*body, "", f"(validation split, where the thresholds were chosen: {shown})"]
    return "\n".join([RESULTS_START, note, *body, RESULTS_END])


def _write_atomic(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as f:
        f.write(text)
    os.replace(f.name, path)


def write_results(bundle: Bundle, results: Mapping[str, Any]) -> list[Path]:
    """Write ``results`` into ``metadata.json`` and the README's results block; returns the files written.

    Raises:
        BundleError: the README has no results markers (add them where the table goes).
    """
    meta = dict(bundle.metadata)
    meta["eval_metrics"] = dict(results["eval_metrics"])
    if results.get("thresholds") is not None:
        _pred_spec_of(meta)["thresholds"] = dict(results["thresholds"])
    _write_atomic(bundle.meta_file, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    readme = bundle.path / "docs" / "README.md"
    text = readme.read_text(encoding="utf-8")
    if RESULTS_START not in text or RESULTS_END not in text:
        raise BundleError(f"{readme}: no {RESULTS_START} ... {RESULTS_END} block to write the results into.")
    head, rest = text.split(RESULTS_START, 1)
    _, tail = rest.split(RESULTS_END, 1)
    _write_atomic(readme, head + render_results(results) + tail)
    sync_includes(bundle)
    return [bundle.meta_file, readme]


#: A README block that repeats a generated markdown file of the bundle's docs/ (e.g. an
#: experiment's results.md), so the README shows the table and cannot drift from it.
INCLUDE_BLOCK = re.compile(r"<!-- mimtl:include (\S+) -->\n(.*?)<!-- mimtl:include:end -->", re.S)


def _included(bundle: Bundle, relative: str) -> str:
    path = bundle.path / "docs" / relative
    if not path.is_file():
        raise BundleError(f"{bundle.path / 'docs' / 'README.md'} includes {relative}, which does not exist in docs/.")
    return path.read_text(encoding="utf-8").strip() + "\n"


def sync_includes(bundle: Bundle) -> bool:
    """Rewrite every ``<!-- mimtl:include FILE -->`` block of the README with FILE's text; True if it changed."""
    readme = bundle.path / "docs" / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = INCLUDE_BLOCK.sub(
        lambda m: f"<!-- mimtl:include {m.group(1)} -->\n{_included(bundle, m.group(1))}<!-- mimtl:include:end -->",
        text,
    )
    if new != text:
        _write_atomic(readme, new)
    return new != text


def stale_includes(bundle: Bundle) -> list[str]:
    """The README's include blocks whose text is not their file's (empty: all current)."""
    readme = (bundle.path / "docs" / "README.md").read_text(encoding="utf-8")
    return [
        f"docs/README.md: the block of {m.group(1)} differs from the file (run `mimtl results NAME --write`)"
        for m in INCLUDE_BLOCK.finditer(readme)
        if m.group(2) != _included(bundle, m.group(1))
    ]


def _pred_spec_of(meta: dict[str, Any]) -> dict[str, Any]:
    outputs = meta["network_data_format"]["outputs"]
    return outputs[next(iter(outputs))]


def compare_results(bundle: Bundle, results: Mapping[str, Any]) -> list[str]:
    """Differences between freshly computed ``results`` and what the bundle publishes (empty: none)."""
    problems = []
    tolerance = 10.0**-DECIMALS * 1.5  # one unit of the last kept decimal, and rounding
    shipped = bundle.metadata.get("eval_metrics", {})
    if set(shipped) != set(results["eval_metrics"]):
        problems.append(f"eval_metrics keys {sorted(shipped)} != computed {sorted(results['eval_metrics'])}")
    for key, value in results["eval_metrics"].items():
        if key in shipped and abs(float(shipped[key]) - value) > tolerance:
            problems.append(f"eval_metrics.{key}: metadata {shipped[key]}, evaluate gives {value}")
    if results.get("thresholds") is not None:
        shipped_t = _pred_spec(bundle).get("thresholds", {})
        for key, value in results["thresholds"].items():
            if abs(float(shipped_t.get(key, math.nan)) - value) > tolerance or not math.isfinite(
                float(shipped_t.get(key, math.nan))
            ):
                problems.append(f"thresholds.{key}: metadata {shipped_t.get(key)}, validation gives {value}")
    readme = (bundle.path / "docs" / "README.md").read_text(encoding="utf-8")
    if render_results(results) not in readme:
        problems.append(
            "docs/README.md: the results block differs from what evaluate gives (run `mimtl results NAME --write`)"
        )
    return problems + stale_includes(bundle)
