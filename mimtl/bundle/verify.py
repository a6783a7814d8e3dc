"""Offline bundle verification: the checks the MONAI model zoo runs on every bundle, and a few more.

Each check returns a :class:`CheckResult`; :func:`verify_bundle` runs them all and never stops
at the first failure, so one run tells a user everything that is wrong.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mimtl.bundle.bundle import Bundle, load_checkpoint
from mimtl.errors import root_cause

__all__ = ["METADATA_SCHEMA", "REQUIRED_FILES", "VERIFY_CHECKS", "CheckResult", "verify_bundle"]

#: The metadata JSON schema shipped with mimtl, used offline by ``monai.bundle verify_metadata``.
METADATA_SCHEMA = Path(str(resources.files("mimtl.bundle") / "metadata_schema.json"))
#: Files every bundle must have (``.yaml`` configs may also be ``.json``).
REQUIRED_FILES = (
    "LICENSE",
    "configs/metadata.json",
    "configs/train.yaml",
    "configs/evaluate.yaml",
    "configs/inference.yaml",
    "configs/multi_gpu_train.yaml",
    "configs/logging.conf",
    "docs/README.md",
    "models/model.pt",
)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one verification check."""

    name: str
    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"[{'PASS' if self.ok else 'FAIL'}] {self.name}" + (f": {self.detail}" if self.detail else "")


@contextmanager
def _quiet_monai() -> Iterator[None]:
    # MONAI's scripts log their whole argument dict at INFO; the checks report for themselves.
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("monai")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No hash value provided")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def ships_no_weights(bundle: Bundle) -> bool:
    """The bundle declares that it ships no trained weights yet (metadata ``"weights": null``) and has none.

    Such a bundle passes without ``models/model.pt``; its TorchScript check exports the randomly
    initialised network instead (the export path is still verified), and says so.
    """
    meta = bundle.metadata
    return "weights" in meta and meta["weights"] is None and not bundle.has_weights


def check_files(bundle: Bundle) -> CheckResult:
    missing = []
    for rel in REQUIRED_FILES:
        if rel == "models/model.pt" and ships_no_weights(bundle):
            continue
        p = bundle.path / rel
        if rel.endswith(".yaml") and not p.is_file():
            p = p.with_suffix(".json")
        if not p.is_file():
            missing.append(rel)
    return CheckResult("required files", not missing, f"missing: {', '.join(missing)}" if missing else "")


def check_metadata(bundle: Bundle) -> CheckResult:
    from monai.bundle import verify_metadata

    # verify_metadata "downloads" the schema to filepath and skips that when the file exists,
    # so pointing it at the shipped schema keeps the check offline.
    with _quiet_monai():
        verify_metadata(meta_file=str(bundle.meta_file), filepath=str(METADATA_SCHEMA))
    meta = bundle.metadata
    if meta["version"] not in meta["changelog"]:
        return CheckResult("metadata", False, f"version {meta['version']} has no entry in changelog")
    return CheckResult("metadata", True, f"version {meta['version']}, schema {METADATA_SCHEMA.name}")


def _check_properties(bundle: Bundle, name: str) -> CheckResult:
    """The ids MONAI's bundle properties require of workflow ``name`` exist in its merged configs.

    Checked on the parsed config, without instantiating anything: verification reads no data
    (the default data set is built when a workflow first reads it), so it runs offline.
    """
    from monai.bundle.properties import InferProperties, TrainProperties
    from monai.utils import BundleProperty, BundlePropertyConfig

    properties = InferProperties if name == "inference" else TrainProperties
    parser = bundle.parser(name)
    missing = [
        p[BundlePropertyConfig.ID]
        for p in properties.values()
        if p.get(BundleProperty.REQUIRED, False) and p[BundlePropertyConfig.ID] not in parser
    ]
    return CheckResult(f"{name} properties", not missing, f"missing ids: {', '.join(missing)}" if missing else "")


def check_train_properties(bundle: Bundle) -> CheckResult:
    return _check_properties(bundle, "train")


def check_inference_properties(bundle: Bundle) -> CheckResult:
    return _check_properties(bundle, "inference")


def check_net_in_out(bundle: Bundle) -> CheckResult:
    from monai.bundle import verify_net_in_out

    with _quiet_monai():
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(bundle.meta_file),
            config_file=[str(f) for f in bundle.config_files("inference")],  # common.yaml first
            device="cpu",
            bundle_root=str(bundle.path),
        )
    return CheckResult("network input/output", True, "matches network_data_format")


def check_torchscript(bundle: Bundle) -> CheckResult:
    """Export with MONAI's ckpt_export, reload, and compare with the eager network on one input."""
    import torch
    from monai.data import load_net_with_metadata

    from mimtl.bundle.export import example_input_shape, export_bundle

    eager = bundle.parser("inference").get_parsed_content("network_def", instantiate=True)
    x = torch.rand(example_input_shape(bundle), generator=torch.Generator().manual_seed(0))
    if ships_no_weights(bundle):  # no weights declared: the randomly initialised network is exported
        eager.eval()
        with tempfile.TemporaryDirectory() as tmp:
            torch.jit.save(torch.jit.script(eager), str(Path(tmp) / "model.ts"))
            ts_net = torch.jit.load(str(Path(tmp) / "model.ts"), map_location="cpu")
        with torch.no_grad():
            worst = max((a - b).abs().max().item() for a, b in zip(_flat(eager(x)), _flat(ts_net(x))))
        detail = f"no weights ship (metadata weights: null): random init exported, max |eager - reloaded| = {worst:.2e}"
        return CheckResult("TorchScript export + reload", worst <= 1e-4, detail)
    eager.load_state_dict(load_checkpoint(bundle.weights_path))  # strict: ckpt_export's copy is lenient
    eager.eval()
    with tempfile.TemporaryDirectory() as tmp, _quiet_monai():
        ts_file = export_bundle(bundle, "torchscript", out=Path(tmp) / "model.ts")
        ts_net, meta, _ = load_net_with_metadata(str(ts_file), map_location="cpu")
    with torch.no_grad():
        want, got = eager(x), ts_net(x)
    diffs = [(a - b).abs().max().item() for a, b in zip(_flat(want), _flat(got))]
    worst = max(diffs) if diffs else float("nan")
    ok = bool(diffs) and worst <= 1e-4 and meta.get("version") == bundle.version
    return CheckResult("TorchScript export + reload", ok, f"max |eager - reloaded| = {worst:.2e}")


def _flat(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat(v)]
    return [t for v in out for t in _flat(v)]


def check_config_safety(bundle: Bundle) -> CheckResult:
    from mimtl.bundle.safety import audit_config_files

    files = sorted(p for p in (bundle.path / "configs").iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    findings = audit_config_files([f for f in files if f.name != "metadata.json"])
    detail = "; ".join(str(f) for f in findings[:5]) + (f" (+{len(findings) - 5} more)" if len(findings) > 5 else "")
    return CheckResult("config safety audit", not findings, detail or "only monai/mimtl/torch constructs")


#: The checks, in the order they run. Later checks need the earlier ones' files.
def check_monai_config(bundle: Bundle) -> CheckResult:
    """``configs/inference.json`` (what ``monai.bundle.load`` reads) matches the YAML it is generated from."""
    from mimtl.bundle.monai_config import stale_monai_configs

    stale = stale_monai_configs(bundle)
    fix = f"; regenerate with `mimtl export {bundle.name} --format monai-config`"
    return CheckResult(
        "MONAI loader config", not stale, "; ".join(stale) + fix if stale else "configs/inference.json current"
    )


VERIFY_CHECKS: dict[str, Callable[[Bundle], CheckResult]] = {
    "required files": check_files,
    "metadata": check_metadata,
    "config safety audit": check_config_safety,
    "train properties": check_train_properties,
    "inference properties": check_inference_properties,
    "MONAI loader config": check_monai_config,
    "network input/output": check_net_in_out,
    "TorchScript export + reload": check_torchscript,
}


def verify_bundle(bundle: Bundle, on_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run every check on ``bundle``; an exception inside a check becomes a failed result."""
    results = []
    for name, check in VERIFY_CHECKS.items():
        try:
            result = check(bundle)
        except Exception as e:  # keep going: one broken check must not hide the others
            result = CheckResult(name, False, _one_line(e))
        results.append(result)
        if on_result:
            on_result(result)
    return results


def _one_line(e: BaseException, limit: int = 500) -> str:
    # MONAI wraps errors raised while instantiating a component; the cause is what helps.
    e = root_cause(e)
    text = f"{type(e).__name__}: " + (" ".join(str(e).split()) or repr(e))
    return text if len(text) <= limit else text[: limit - 3] + "..."
