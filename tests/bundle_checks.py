"""Helpers shared by the end-to-end tests of the shipped bundles."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def yaml_value(value) -> str:
    """A value as ``mimtl run --set`` reads it."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    return json.dumps(value)  # JSON numbers, booleans, null, lists and objects are YAML too


def set_args(overrides: dict) -> list[str]:
    """``--set id=value`` arguments of ``mimtl run``."""
    return [arg for k, v in overrides.items() for arg in ("--set", f"{k}={yaml_value(v)}")]


def hashes(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def snapshot(bundle: Path) -> dict:
    return {"models": hashes(bundle / "models"), "dirs": {d for d in ("eval", "experiment") if (bundle / d).exists()}}


def assert_bundle_untouched(bundle: Path, before: dict, written_under: Path) -> None:
    """No run of the tests wrote into the bundle folder.

    The shipped ``models/`` must be byte for byte what it was. One exception keeps this true while
    someone trains the shipped model in the background: ``models/model.pt`` (or its
    ``conformal.json``) may change, but never into a file these tests wrote (all under ``written_under``).
    """
    ours = {hashlib.sha256(p.read_bytes()).hexdigest() for p in written_under.rglob("*") if p.is_file()}
    assert any(written_under.rglob("*.pt")), f"no checkpoint was written under {written_under}"
    after = snapshot(bundle)
    for name, digest in after["models"].items():
        if before["models"].get(name) != digest:
            assert name in ("model.pt", "conformal.json"), f"{bundle / 'models' / name} appeared or changed during the tests"
            assert digest not in ours, f"a test wrote its output into {bundle / 'models' / name}"
    assert after["dirs"] <= before["dirs"], f"a test wrote default outputs into {bundle}: {after['dirs']}"
