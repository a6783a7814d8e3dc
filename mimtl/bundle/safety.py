"""Audit of bundle configs received from elsewhere.

A MONAI bundle config is code: ``_target_`` imports and calls any dotted name, a string that
starts with ``$`` is passed to ``eval`` (``$import x`` executes an import) and ``_mode_: debug``
starts pdb. This module walks a config *without instantiating anything* and reports each
construct that reaches outside the names a mimtl bundle needs (monai, mimtl, torch, ignite,
numpy, a few harmless builtins). It is a screen for review, not a sandbox: a clean report
means nothing unusual was found, so a human can read the rest with ordinary care.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Finding", "audit_config", "audit_config_files", "TRUSTED_MODULES"]

#: Roots of dotted names a config may instantiate or use in an expression.
TRUSTED_MODULES = frozenset({"monai", "mimtl", "torch", "ignite", "numpy", "np", "math", "scipy"})
#: Builtins that cannot reach the file system, the network or the interpreter.
SAFE_BUILTINS = frozenset(
    {
        "abs", "all", "any", "bool", "dict", "enumerate", "float", "int", "isinstance", "len", "list", "max",
        "min", "range", "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip", "None", "True", "False",
    }
)  # fmt: skip
#: Attribute paths under trusted roots that still download, unpickle or execute code.
RISKY_PATHS = (
    "torch.hub",
    "torch.load",
    "torch.jit.load",
    "torch.package",
    "torch.utils.cpp_extension",
    "numpy.load",
    "np.load",
    "monai.apps.download",
    "monai.apps.utils.download",
    "monai.bundle.download",
    "monai.bundle.load",
    "monai.utils.module.instantiate",
)
_REF = re.compile(r"@[\w#:]+")  # "@id" references are resolved by MONAI, not eval'ed names
_REF_NAME = "_ref_"


@dataclass(frozen=True)
class Finding:
    """One construct of a config that needs a human's trust before it is run."""

    source: str  # config file (or "override")
    config_id: str  # where in the config, MONAI id syntax ("train::trainer::...")
    construct: str  # the text found
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.config_id or '<root>'}: {self.construct!r}: {self.reason}"


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """Yield ``(id, key, value)`` for every leaf and every mapping key of a parsed config."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            child = f"{path}::{k}" if path else str(k)
            yield child, k, v
            yield from _walk(v, child)
    elif isinstance(node, Sequence) and not isinstance(node, str):
        for i, v in enumerate(node):
            child = f"{path}::{i}" if path else str(i)
            yield child, None, v
            yield from _walk(v, child)


def _is_risky_path(dotted: str) -> bool:
    return any(dotted == p or dotted.startswith(p + ".") or dotted.startswith(p + "_") for p in RISKY_PATHS)


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _audit_target(target: str) -> str | None:
    """Return why a ``_target_`` value is not trusted, or None."""
    if "." not in target:
        # MONAI resolves a bare name among its own modules first and then falls back to
        # pydoc.locate, which also finds builtins such as ``eval``.
        from monai.bundle.config_item import ComponentLocator

        if ComponentLocator().get_component_module_name(target) is None:
            return "bare name that is not a MONAI component (could resolve to a builtin)"
        return None
    if target.split(".")[0] not in TRUSTED_MODULES:
        return f"imports from '{target.split('.')[0]}', outside {sorted(TRUSTED_MODULES)}"
    if _is_risky_path(target):
        return "downloads, unpickles or executes code"
    return None


def _import_names(expr: str) -> tuple[str, list[str]] | None:
    """For ``$import a.b as c`` / ``$from a import b as c``: the module root and the names bound."""
    body = expr[1:].strip()
    if not re.match(r"^(import|from)\s", body):
        return None
    try:
        node = ast.parse(body).body[0]
    except SyntaxError:
        return "<unparsable>", []
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0], [a.asname or a.name for a in node.names]
    return node.names[0].name.split(".")[0], [a.asname or a.name.split(".")[0] for a in node.names]


def _audit_expression(expr: str, aliases: frozenset[str] = frozenset()) -> list[str]:
    """Return the reasons a ``$`` expression is not trusted (empty when it is)."""
    imported = _import_names(expr)
    if imported:
        return [] if imported[0] in TRUSTED_MODULES else [f"imports '{imported[0]}'"]
    body = expr[1:].strip()
    try:
        tree = ast.parse(_REF.sub(_REF_NAME, body), mode="eval")
    except SyntaxError as e:
        return [f"not a Python expression ({e.msg})"]
    reasons = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            reasons.append(f"dunder attribute '{node.attr}'")
        elif isinstance(node, ast.Name):
            name = node.id
            if name.startswith("__"):
                reasons.append(f"dunder name '{name}'")
            elif name not in TRUSTED_MODULES | SAFE_BUILTINS | aliases | {_REF_NAME} and not _is_comprehension_var(tree, name):
                reasons.append(f"uses '{name}', which is neither a trusted module nor a safe builtin")
        elif isinstance(node, ast.Call):
            dotted = _dotted(node.func)
            if dotted and _is_risky_path(dotted) and not _has_weights_only(node):
                reasons.append(f"calls '{dotted}' (downloads, unpickles or executes code)")
    return sorted(set(reasons))


def _has_weights_only(call: ast.Call) -> bool:
    # torch.load(..., weights_only=True) refuses pickled code, so it is safe to allow.
    dotted = _dotted(call.func)
    return dotted == "torch.load" and any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords
    )


def _is_comprehension_var(tree: ast.AST, name: str) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            if any(isinstance(t, ast.Name) and t.id == name for t in ast.walk(node.target)):
                return True
        if isinstance(node, ast.Lambda) and name in {a.arg for a in node.args.args}:
            return True
    return False


def audit_config(config: Any, source: str = "config") -> list[Finding]:
    """Audit one parsed config (dict/list) and return the findings, in document order.

    Args:
        config: the loaded YAML/JSON content.
        source: a label used in the findings (usually the file name).
    """
    # Names bound by trusted imports (``$import torch.distributed as dist``) are trusted too.
    aliases = frozenset(
        name
        for _, _, value in _walk(config, "")
        if isinstance(value, str) and value.startswith("$") and (imp := _import_names(value))
        if imp[0] in TRUSTED_MODULES
        for name in imp[1]
    )
    findings = []
    for config_id, key, value in _walk(config, ""):
        if key == "_target_" and isinstance(value, str):
            reason = _audit_target(value)
            if reason:
                findings.append(Finding(source, config_id, value, reason))
        elif key == "_mode_" and value == "debug":
            findings.append(Finding(source, config_id, value, "starts the pdb debugger"))
        elif isinstance(value, str) and value.startswith("$"):
            findings.extend(Finding(source, config_id, value, r) for r in _audit_expression(value, aliases))
    return findings


def audit_config_files(files: Sequence[str | Path], overrides: Mapping[str, Any] | None = None) -> list[Finding]:
    """Audit config files (YAML or JSON) and command-line overrides together."""
    from monai.bundle import ConfigParser

    findings = []
    for f in files:
        findings += audit_config(ConfigParser.load_config_file(str(f)), source=str(f))
    for k, v in (overrides or {}).items():
        findings += [Finding("override", k, x.construct, x.reason) for x in audit_config({k: v}, "override")]
    return findings
