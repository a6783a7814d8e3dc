"""The package's shape: layers import downward only, old import paths still work, every config target resolves."""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path
from pydoc import locate

import pytest
import yaml
from monai.bundle.config_item import ComponentLocator

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mimtl"

# What each part of mimtl may import from the rest of mimtl. Lower layers never import upward:
# readers know nothing of datalists, networks nothing of bundles, and no library code imports the
# command line or the demo. ``sim`` builds data sets, so it may use readers and datalist writers.
ALLOWED = {
    "errors": set(),
    "utils": set(),
    "io": {"errors"},
    "transforms": {"errors", "io"},
    "data": {"errors", "io", "transforms"},
    # a network may build on an array helper (the T-AE's stored permutation set lives with its tiling
    # transform), and saves its own small weight files atomically (the grading head)
    "networks": {"errors", "transforms", "utils"},
    "losses": {"errors", "transforms"},
    "metrics": {"errors", "transforms", "utils"},
    "inferers": {"errors"},
    # trainers and the feature-augmentation protocols drive networks, losses, metrics and handlers
    "engines": {"errors", "io", "data", "transforms", "networks", "losses", "metrics", "inferers", "handlers", "utils"},
    "handlers": {"errors", "io", "data", "transforms", "metrics"},
    "sim": {"errors", "io", "data", "transforms", "utils"},
    "bundle": {"errors", "io", "data", "transforms", "networks", "metrics", "engines", "handlers", "utils"},
}


def _is_shim(path: Path) -> bool:
    """A deprecated alias module kept for one release (it replaces itself in sys.modules)."""
    return "sys.modules[__name__] = _moved" in path.read_text()


def _mimtl_imports(path: Path) -> set[str]:
    """The mimtl subpackages a file imports, at any depth (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n.split(".")[1] for n in names if n.startswith("mimtl.")}
    return found


def test_layers_import_downward_only():
    violations = []
    for layer, allowed in ALLOWED.items():
        files = [PACKAGE / f"{layer}.py"] if (PACKAGE / f"{layer}.py").is_file() else (PACKAGE / layer).rglob("*.py")
        for path in files:
            if _is_shim(path):
                continue
            for target in _mimtl_imports(path) - allowed - {layer}:
                violations.append(f"{path.relative_to(ROOT)} imports mimtl.{target}")
    assert not violations, "\n".join(sorted(violations))


def test_every_layer_is_listed():
    """A new subpackage has to say where it sits."""
    parts = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    unplaced = parts - set(ALLOWED) - {"__init__", "__main__", "cli", "demo", "_bundles"}
    assert not unplaced, f"add these to ALLOWED with their permitted imports: {sorted(unplaced)}"


@pytest.mark.parametrize(
    "old, new",
    [
        ("mimtl.io.datalist", "mimtl.data.datalist"),
        ("mimtl.io.dataset", "mimtl.data.dataset"),
        ("mimtl.io.validate", "mimtl.data.validate"),
        ("mimtl.io.adapters", "mimtl.data.adapters"),
        ("mimtl.io.demo", "mimtl.sim.demo"),
        ("mimtl.io.drr", "mimtl.sim.drr"),
        ("mimtl.io.sources", "mimtl.sim.sources"),
        ("mimtl.inferers.landmarks", "mimtl.transforms.heatmaps"),
    ],
)
def test_old_module_paths_alias_the_new_modules(old, new):
    """For one release, an old import path is the new module itself (same object), with a warning."""
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


@pytest.mark.parametrize(
    "package, name, new",
    [
        ("mimtl.io", "TolerantDataset", "mimtl.data"),
        ("mimtl.io", "StandardizeImageMetad", "mimtl.transforms"),
        ("mimtl.inferers", "decode_heatmaps", "mimtl.transforms"),
        ("mimtl.inferers", "LandmarkDecoder", "mimtl.transforms"),
    ],
)
def test_old_names_still_resolve(package, name, new):
    with pytest.warns(DeprecationWarning):
        old = getattr(importlib.import_module(package), name)
    assert old is getattr(importlib.import_module(new), name)


def _targets(node, where=""):
    """``(id, name)`` of every ``_target_`` in a parsed config."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield where, value
            else:
                yield from _targets(value, f"{where}::{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _targets(value, f"{where}::{i}")


SHIPPED_CONFIGS = sorted(
    p for p in (ROOT / "bundles").glob("*/configs/**/*") if p.suffix in (".yaml", ".json") and p.name != "metadata.json"
)


def test_shipped_configs_are_found():
    assert len(SHIPPED_CONFIGS) >= 10


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "bundles")))
def test_every_target_in_shipped_configs_resolves(config):
    """Each ``_target_`` names a class or function MONAI's locator or a dotted import finds (nothing is called)."""
    locator = ComponentLocator()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # shipped configs use the current names
        unresolved = []
        for where, name in _targets(yaml.safe_load(config.read_text()) or {}):
            module = locator.get_component_module_name(name)
            found = locate(name) if "." in name else (module is not None)
            if not found:
                unresolved.append(f"{where}: {name}")
    assert not unresolved, f"{config.name}: unresolved _target_: {unresolved}"
