"""Fit, calibrate and report a bundle's out-of-domain guard (``mimtl domain fit|report NAME``).

Any bundle whose inference config has a ``domain_check`` (a :class:`~mimtl.handlers.DomainCheck`
among its handlers, before the writers) gets the guard from here, with nothing of its own:

* :func:`fit_domain` runs that inference config, as a user runs it, on the training split of the
  bundle's datalist (the train config's ``datalist``) with the check collecting each film's
  pooled features, image statistics and (where the config names one) median point confidence;
  fits a :class:`~mimtl.metrics.domain.DomainModel` on them; runs it again on the validation
  split and calibrates the threshold there at ``coverage`` (default 95 %); writes
  ``models/domain.pt`` (tensors: ``torch.load(weights_only=True)``) and ``models/domain.json``.
* :func:`compute_domain_report` runs inference with the shipped ``domain.pt`` on the test split
  and on foreign inputs (those of :mod:`mimtl.sim.domain_foreign`, passed in); :func:`write_domain_report` writes
  the table between ``<!-- mimtl:domain:start -->`` and ``<!-- mimtl:domain:end -->`` in
  ``docs/README.md`` and the score histogram ``docs/domain_scores.png``;
  :func:`compare_domain_report` says where the shipped README differs (``tests/test_domain.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mimtl.bundle.bundle import Bundle, BundleError

__all__ = [
    "DOMAIN_END",
    "DOMAIN_START",
    "collect_domain",
    "compare_domain_report",
    "compute_domain_report",
    "fit_domain",
    "render_domain_report",
    "split_files",
    "write_domain_report",
]

DOMAIN_START = "<!-- mimtl:domain:start -->"
DOMAIN_END = "<!-- mimtl:domain:end -->"
#: The id of the DomainCheck in a bundle's inference config.
CHECK_ID = "domain_check"
HISTOGRAM = "domain_scores.png"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def split_files(bundle: Bundle, split: str, datalist: str | os.PathLike | None = None) -> list[str]:
    """The image files of one split of the bundle's datalist (its train config's ``datalist`` by default)."""
    from mimtl.data.datalist import load_datalist

    if datalist is None:
        datalist = bundle.parser("train").get_parsed_content("datalist")
    items = load_datalist(datalist, data_list_key=split, deep=False)
    if not items:
        raise BundleError(f"{datalist}: the '{split}' list is empty: nothing to fit or calibrate on.")
    return [str(item["image"]) for item in items]


def collect_domain(
    bundle: Bundle,
    files: Sequence[str | os.PathLike],
    domain_file: str | os.PathLike | None = None,
    config: str = "inference",
    progress: bool = True,
    desc: str = "",
    output_dir: str | os.PathLike | None = None,
    **override: Any,
) -> list[dict[str, Any]]:
    """Run the bundle's inference on ``files``; one record per film the check saw.

    Each record: ``file``, ``features``, ``stats``, ``confidence`` (the vectors the domain model
    scores) and the verdict (``in_domain``, ``domain_score``, ``domain_reason``; ``None`` when
    ``domain_file`` is None). The writers' outputs go to ``output_dir`` (default: a temporary
    folder); overlays are not drawn.
    """
    parser = bundle.parser(config)
    if CHECK_ID not in parser.config:
        raise BundleError(
            f"bundle '{bundle.name}' config '{config}' has no '{CHECK_ID}' (a mimtl.handlers.DomainCheck among its "
            "handlers): there is no guard to fit."
        )
    extra = {k: False for k in ("overlay", "gradcam") if k in parser.config}
    with tempfile.TemporaryDirectory() as tmp:
        wf = bundle.workflow(
            config,
            configure_logging=False,
            allow_new_keys=True,
            input=[str(f) for f in files],
            output_dir=str(output_dir) if output_dir is not None else tmp,
            num_workers=0,
            **extra,
            **{
                f"{CHECK_ID}::collect": True,
                f"{CHECK_ID}::domain_file": None if domain_file is None else str(domain_file),
                f"{CHECK_ID}::on_out_of_domain": "flag",
            },
            **override,
        )
        wf.initialize()
        try:
            check = wf.parser.get_parsed_content(CHECK_ID)
            evaluator = wf.parser.get_parsed_content("evaluator")
            if progress:
                from ignite.contrib.handlers import ProgressBar

                ProgressBar(desc=desc or f"{bundle.name} domain", persist=True).attach(evaluator)
            wf.run()
        finally:
            wf.finalize()
    if not check.records:
        raise BundleError(f"bundle '{bundle.name}': no film of {len(files)} could be scored (all failed to load?).")
    return list(check.records)


def _stack(records: Sequence[Mapping[str, Any]], key: str) -> torch.Tensor | None:
    values = [r[key] for r in records]
    if any(v is None for v in values):
        return None
    if key == "confidence":
        return torch.tensor(values, dtype=torch.float64)
    return torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values])


def fit_domain(
    bundle: Bundle,
    coverage: float = 0.95,
    out: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    train_split: str = "training",
    val_split: str = "validation",
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Fit the bundle's domain model on ``train_split`` and calibrate it on ``val_split``; write it.

    Returns:
        ``(path of domain.pt, the JSON summary written beside it)``.
    """
    from mimtl.metrics.domain import DomainModel

    if not 0.0 < coverage < 1.0:
        raise BundleError(f"coverage must be between 0 and 1 (e.g. 0.95), got {coverage}.")
    if not bundle.has_weights:
        raise BundleError(f"bundle '{bundle.name}' has no models/model.pt: train it before fitting its domain model.")
    out = Path(out) if out is not None else bundle.path / "models" / "domain.pt"
    train = collect_domain(bundle, split_files(bundle, train_split, datalist), progress=progress, desc="fit")
    check = bundle.parser("inference").get_parsed_content(f"{CHECK_ID}::confidence_key", default=None)
    use_confidence = check is not None and _stack(train, "confidence") is not None
    layer = bundle.parser("inference").get_parsed_content(f"{CHECK_ID}::layer", default=None)
    if layer is None:
        layer = getattr(bundle.network(), "domain_layer", "")
    model = DomainModel.fit(
        _stack(train, "features"),
        _stack(train, "stats"),
        use_confidence=use_confidence,
        bundle=bundle.name,
        layer=f"{layer}",
        checkpoint_sha256=_sha256(bundle.weights_path),
        train_split=train_split,
        val_split=val_split,
    )
    val = collect_domain(bundle, split_files(bundle, val_split, datalist), progress=progress, desc="calibrate")
    model.calibrate(
        _stack(val, "features"),
        _stack(val, "stats"),
        _stack(val, "confidence") if use_confidence else None,
        coverage=coverage,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out, model.summary()


# -- the report ------------------------------------------------------------------------------------
def _rates(records: Sequence[Mapping[str, Any]], flagged: bool) -> tuple[int, int]:
    hits = sum((r["in_domain"] is False) == flagged for r in records)
    return hits, len(records)


def _verdicts(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in ("file", "in_domain", "domain_score", "domain_reason")} for r in records]


def compute_domain_report(
    bundle: Bundle,
    foreign_inputs: Callable[[Sequence[str], Path], Mapping[str, Sequence[Path]]],
    work_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the test split and the foreign sets with the shipped ``models/domain.pt``.

    Args:
        foreign_inputs: ``(test films, folder) -> {set name: files}``, the inputs that must be
            flagged (:func:`mimtl.sim.domain_foreign.foreign_inputs`: the bundle layer does not
            import the simulator).
        work_dir: keep the foreign files and the inference outputs there (``foreign/``,
            ``test_output/``, ``foreign_output/``); default: a temporary folder.

    Returns:
        ``{"coverage": target, "test": {"passed", "n", "scores", "records"},
        "foreign": {set: {"flagged", "n", "scores", "records"}}}``; the records are the
        verdicts per file (``file``, ``in_domain``, ``domain_score``, ``domain_reason``).
    """
    domain_file = bundle.path / "models" / "domain.pt"
    if not domain_file.is_file():
        raise BundleError(
            f"bundle '{bundle.name}' has no {domain_file}: fit it first (mimtl domain fit {bundle.name})."
        )
    coverage = float(json.loads(domain_file.with_suffix(".json").read_text())["coverage_target"])
    test_files = split_files(bundle, "test")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        sets = foreign_inputs(test_files, root / "foreign")
        keep = work_dir is not None
        test = collect_domain(
            bundle,
            test_files,
            domain_file,
            progress=progress,
            desc="test split",
            output_dir=root / "test_output" if keep else None,
        )
        files = [str(f) for fs in sets.values() for f in fs]
        foreign = collect_domain(
            bundle,
            files,
            domain_file,
            progress=progress,
            desc="foreign inputs",
            output_dir=root / "foreign_output" if keep else None,
        )
    by_file = {str(Path(r["file"]).resolve()): r for r in foreign}
    report: dict[str, Any] = {"coverage": coverage, "foreign": {}}
    passed, n = _rates(test, flagged=False)
    report["test"] = {"passed": passed, "n": n, "scores": [r["domain_score"] for r in test], "records": _verdicts(test)}
    for name, fs in sets.items():
        records = [by_file[str(Path(f).resolve())] for f in fs if str(Path(f).resolve()) in by_file]
        flagged, m = _rates(records, flagged=True)
        missing = len(fs) - m
        if missing:
            raise BundleError(f"{name}: {missing} of {len(fs)} foreign files were not scored.")
        report["foreign"][name] = {
            "flagged": flagged,
            "n": m,
            "scores": [r["domain_score"] for r in records],
            "records": _verdicts(records),
        }
    return report


def _pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:.1f} % ({k}/{n})" if n else "-"


def render_domain_report(report: Mapping[str, Any]) -> str:
    """The README block (markers included) of a :func:`compute_domain_report`."""
    test = report["test"]
    total = sum(v["flagged"] for v in report["foreign"].values()), sum(v["n"] for v in report["foreign"].values())
    lines = [
        DOMAIN_START,
        "<!-- written by `mimtl domain report NAME --write` with models/domain.pt -->",
        "| inputs | share | rate |",
        "|---|---|---|",
        f"| demo test split (in domain) | passed (target {100 * report['coverage']:.0f} %) | **{_pct(test['passed'], test['n'])}** |",
    ]
    for name, v in report["foreign"].items():
        lines.append(f"| {name} | flagged | {_pct(v['flagged'], v['n'])} |")
    lines.append(f"| all foreign inputs | flagged | **{_pct(*total)}** |")
    lines += ["", f"![domain scores](./{HISTOGRAM})", DOMAIN_END]
    return "\n".join(lines)


def _histogram(report: Mapping[str, Any], path: Path) -> Path:
    """A PNG of the scores (log10) of the test split and of the foreign inputs, with the threshold at 1."""
    from PIL import Image, ImageDraw

    from mimtl.handlers._common import font, save_atomic

    def logs(scores: Sequence[Any]) -> list[float]:
        out = []
        for s in scores:
            s = float(s) if s is not None else math.nan
            out.append(3.0 if not math.isfinite(s) else min(max(math.log10(max(s, 1e-3)), -1.0), 3.0))
        return out

    test = logs(report["test"]["scores"])
    foreign = logs([s for v in report["foreign"].values() for s in v["scores"]])
    lo, hi, bins = -1.0, 3.0, 40
    width, height, left, bottom, top = 720, 360, 50, 50, 40

    def counts(values: list[float]) -> list[int]:
        c = [0] * bins
        for v in values:
            c[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
        return c

    ct, cf = counts(test), counts(foreign)
    peak = max([*ct, *cf, 1])
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    plot_w, plot_h = width - left - 20, height - bottom - top
    bar = plot_w / bins
    for k in range(bins):
        x0 = left + k * bar
        for j, (c, colour) in enumerate(((ct[k], (40, 110, 200)), (cf[k], (210, 60, 50)))):
            if c:
                h = c / peak * plot_h
                draw.rectangle(
                    (x0 + j * bar / 2, height - bottom - h, x0 + (j + 1) * bar / 2 - 1, height - bottom), fill=colour
                )
    x_t = left + (0.0 - lo) / (hi - lo) * plot_w
    draw.line((x_t, top - 5, x_t, height - bottom), fill=(0, 0, 0), width=2)
    draw.line((left, height - bottom, width - 20, height - bottom), fill=(0, 0, 0))
    small = font(12)
    for v in range(int(lo), int(hi) + 1):
        x = left + (v - lo) / (hi - lo) * plot_w
        draw.line((x, height - bottom, x, height - bottom + 4), fill=(0, 0, 0))
        draw.text((x - 10, height - bottom + 6), f"{10.0**v:g}", fill=(0, 0, 0), font=small)
    draw.text(
        (left, height - 22),
        "domain score (log scale; > 1 is out of domain, >= 1000 drawn at 1000)",
        fill=(0, 0, 0),
        font=small,
    )
    draw.text((left, 8), f"test split: {len(test)} films", fill=(40, 110, 200), font=font(14))
    draw.text((left + 230, 8), f"foreign inputs: {len(foreign)}", fill=(210, 60, 50), font=font(14))
    draw.text((x_t + 4, top - 5), "threshold", fill=(0, 0, 0), font=small)
    draw.text((4, top - 5), f"{peak}", fill=(0, 0, 0), font=small)
    return save_atomic(path, lambda tmp: img.save(tmp, format="PNG"))


def write_domain_report(bundle: Bundle, report: Mapping[str, Any]) -> list[Path]:
    """Write the README block and ``docs/domain_scores.png``; return the files written."""
    readme = bundle.path / "docs" / "README.md"
    text = readme.read_text(encoding="utf-8")
    if DOMAIN_START not in text or DOMAIN_END not in text:
        raise BundleError(f"{readme}: no {DOMAIN_START} ... {DOMAIN_END} block to write the domain table into.")
    head, rest = text.split(DOMAIN_START, 1)
    _, tail = rest.split(DOMAIN_END, 1)
    from mimtl.handlers._common import write_atomic

    write_atomic(readme, head + render_domain_report(report) + tail)
    return [readme, _histogram(report, bundle.path / "docs" / HISTOGRAM)]


def compare_domain_report(bundle: Bundle, report: Mapping[str, Any]) -> list[str]:
    """Where the shipped README and histogram differ from ``report`` (empty: they match)."""
    problems = []
    readme = (bundle.path / "docs" / "README.md").read_text(encoding="utf-8")
    if render_domain_report(report) not in readme:
        problems.append(
            "docs/README.md: the domain table differs from what the guard gives (run `mimtl domain report NAME --write`)"
        )
    if not (bundle.path / "docs" / HISTOGRAM).is_file():
        problems.append(f"docs/{HISTOGRAM} is missing (run `mimtl domain report NAME --write`)")
    return problems
