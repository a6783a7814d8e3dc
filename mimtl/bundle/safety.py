"""Allowlist audit of bundle configs received from elsewhere.

A MONAI bundle config is code: ``_target_`` imports and calls any dotted name, a string that
starts with ``$`` is passed to ``eval`` (``$import x`` imports any module), ``%file#id`` pulls in
another file and ``_mode_: debug`` starts pdb. This module reads a config *without
instantiating or evaluating anything* and accepts a construct only when it can show that every
name it uses reaches something on an allowlist; everything else, including anything it cannot
resolve, is a :class:`Finding`.

The rules (docs/sharing_configs.md says the same for users):

1. Dotted names (``_target_`` values and ``a.b.c`` chains in ``$`` expressions that start at
   ``monai``, ``torch``, ``np`` or ``numpy``, the names MONAI puts in ``eval``'s globals) are
   resolved against the real objects, one attribute at a time, without calling anything: a
   module is imported only when it is a submodule of an allowed package (monai, mimtl, torch,
   ignite, numpy, scipy, math), attributes of modules are read with ``getattr``, attributes of
   classes and other objects with ``inspect.getattr_static`` (no property or ``__getattr__`` runs).
   Every step that lands on a module must land on one of the allowed packages (``torch.os`` is
   the ``os`` module: refused) and outside :data:`DENIED`. The object reached must be a class or
   function *defined* in an allowed package and not in :data:`DENIED`, or a plain constant (a
   number, string, ``None``, a dtype, a memory format, a layout, an enum member). A module is
   never acceptable as a value.
2. No name or attribute that starts with ``_`` (dunders, name-mangled and private names), no
   attribute in :data:`DENIED_ATTRIBUTES` (frame/generator/code internals, ``mro``, string
   ``format``, and methods that load pickles or write files) on any object, including
   ``@references`` and call results, whose type the audit cannot know.
3. In ``$`` expressions: only the four eval globals above, :data:`SAFE_BUILTINS`, ``@``
   references and the names a lambda or comprehension binds; no import statement, no ``:=``,
   no statement of any kind; ``weights_only=`` must be literally ``True``, ``allow_pickle=``
   literally ``False``, no ``pickle_module=``, and ``**`` only on a dict literal.
   ``torch.load`` is accepted only with ``weights_only=True`` written out.
4. ``_target_`` is a dotted name (rule 1; a bare name must be one MONAI's ComponentLocator
   knows, else MONAI falls back to Python's locator, which finds builtins such as ``eval``) or a
   ``$`` expression that is a plain dotted name. A target taken from a ``@reference`` or computed
   (``"$'torch.o' + 's.system'"``) cannot be checked here: a finding. ``_mode_`` is literally
   ``default`` or ``callable``. ``%macros`` that read another file are findings.

:func:`enforce` applies the same checks at the point MONAI evaluates each expression and
instantiates each component, so text that only exists at run time (macros, nested
``ConfigParser`` runs such as an experiment's, computed strings) is checked too.
"""

from __future__ import annotations

import ast
import contextlib
import enum
import functools
import importlib
import inspect
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ALLOWED_PACKAGES",
    "DENIED",
    "DENIED_ATTRIBUTES",
    "SAFE_BUILTINS",
    "AuditError",
    "Finding",
    "audit_bundle",
    "audit_config",
    "audit_config_files",
    "audit_expression",
    "audit_logging_conf",
    "audit_target",
    "audit_weights",
    "enforce",
    "is_shipped",
]

#: Packages whose classes and functions a config may name.
ALLOWED_PACKAGES = frozenset({"monai", "mimtl", "torch", "ignite", "numpy", "scipy", "math"})
#: Kept for callers of the old API.
TRUSTED_MODULES = ALLOWED_PACKAGES
#: The globals MONAI's ConfigParser gives ``eval`` (``ConfigParser.__init__``'s default ``globals``).
EVAL_GLOBALS = {"monai": "monai", "torch": "torch", "np": "numpy", "numpy": "numpy"}
#: Builtins that cannot reach the file system, the network, the interpreter or other objects' internals.
SAFE_BUILTINS = frozenset(
    {
        "abs",
        "all",
        "any",
        "bool",
        "callable",
        "dict",
        "divmod",
        "enumerate",
        "filter",
        "float",
        "frozenset",
        "int",
        "isinstance",
        "issubclass",
        "iter",
        "len",
        "list",
        "map",
        "max",
        "min",
        "next",
        "pow",
        "range",
        "repr",
        "reversed",
        "round",
        "set",
        "slice",
        "sorted",
        "str",
        "sum",
        "tuple",
        "zip",
        "None",
        "True",
        "False",
    }
)
#: Builtins with a named reason (every other name that is not allowed is refused too).
_BUILTIN_REASONS = {
    **dict.fromkeys(
        ("getattr", "setattr", "delattr", "hasattr", "vars", "dir"), "reads or writes attributes by a computed name"
    ),
    **dict.fromkeys(
        ("eval", "exec", "compile", "__import__", "breakpoint", "input", "help"), "runs code or the debugger"
    ),
    **dict.fromkeys(("globals", "locals"), "reaches the interpreter's namespaces"),
    **dict.fromkeys(("open", "exit", "quit", "print"), "touches files or the process"),
    **dict.fromkeys(
        ("type", "object", "super", "classmethod", "staticmethod", "property", "memoryview"), "walks or builds classes"
    ),
}
#: Dotted names (a module, a class or a function, and everything under it) a config may not reach,
#: though they live in allowed packages: they load code or pickles, spawn processes, download, run
#: nested configs, or write files whose name and content a config chooses.
DENIED = (
    # torch: code and pickle loaders, compilers, process spawners, file writers
    "torch.save",
    "torch.serialization",
    "torch.jit",
    "torch.hub",
    "torch.package",
    "torch.ops",
    "torch.classes",
    "torch.library",
    "torch.utils.cpp_extension",
    "torch.utils.model_zoo",
    "torch.utils.benchmark",
    "torch.utils.collect_env",
    "torch.utils.hipify",
    "torch.utils.tensorboard",
    "torch.utils.data.datapipes",
    "torch.distributed.rpc",
    "torch.distributed.elastic",
    "torch.distributed.run",
    "torch.distributed.launch",
    "torch.distributed.launcher",
    "torch.distributed.checkpoint",
    "torch.multiprocessing",
    "torch.onnx",
    "torch.export",
    "torch.compile",
    "torch.fx",
    "torch.from_file",
    # numpy: pickles, raw file writers, ctypes, compilers
    "numpy.load",
    "numpy.save",
    "numpy.savez",
    "numpy.savez_compressed",
    "numpy.savetxt",
    "numpy.memmap",
    "numpy.lib.format",
    "numpy.lib.npyio",
    "numpy.lib._npyio_impl.load",
    "numpy.lib._npyio_impl.save",
    "numpy.lib._npyio_impl.savez",
    "numpy.lib._npyio_impl.savez_compressed",
    "numpy.lib._npyio_impl.savetxt",
    "numpy.ctypeslib",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing",
    "numpy.DataSource",
    "numpy.ma.load",
    "numpy.ma.dump",
    "numpy.ma.dumps",
    "numpy.ma.core.load",
    "numpy.ma.core.dump",
    "numpy.ma.core.dumps",
    # scipy: file readers/writers of arbitrary formats, ctypes callbacks, downloads
    "scipy.io",
    "scipy.LowLevelCallable",
    "scipy.datasets",
    "scipy.sparse.save_npz",
    # monai: nested configs, imports by name, downloads, pickles, subprocesses, TorchScript
    "monai.bundle",
    "monai.apps",
    "monai.auto3dseg",
    "monai.fl",
    "monai.utils.module.optional_import",
    "monai.utils.module.instantiate",
    "monai.utils.module.locate",
    "monai.utils.module.load_submodules",
    "monai.utils.misc.run_cmd",
    "monai.utils.misc.save_obj",
    "monai.data.torchscript_utils",
    "monai.networks.utils.convert_to_torchscript",
    "monai.networks.utils.convert_to_onnx",
    "monai.networks.utils.convert_to_trt",
    "monai.networks.trt_compiler",
    "monai.data.LMDBDataset",
    "monai.data.dataset.LMDBDataset",
    # ignite: process launchers
    "ignite.distributed.launcher",
    "ignite.distributed.Parallel",
    "ignite.distributed.utils.spawn",
    # mimtl: the command line, bundle loaders that run whole configs, the audit itself, downloads
    "mimtl.cli",
    "mimtl.__main__",
    "mimtl.demo",
    "mimtl.bundle.safety",
    "mimtl.bundle.verify",
    "mimtl.bundle.export",
    "mimtl.bundle.results",
    "mimtl.bundle.monai_config",
    "mimtl.bundle.domain",
    "mimtl.sim.domain_foreign",
    "mimtl.bundle.bundle.Bundle",
    "mimtl.bundle.bundle.load_bundle",
    "mimtl.sim.sources",
    "mimtl.io.sources",
    "mimtl.data.sources",
)
#: Callables accepted only when called with ``weights_only=True`` written out (refused otherwise,
#: also as a value: ``torch.serialization`` itself is on DENIED).
WEIGHTS_ONLY = ("torch.load",)
#: Attribute names refused on any object (in addition to every name that starts with "_").
DENIED_ATTRIBUTES = frozenset(
    {
        # interpreter internals reachable without dunders
        "mro",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "ag_await",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "f_trace",
        "tb_frame",
        "tb_next",
        "co_code",
        "co_consts",
        "func_globals",
        "func_code",
        "im_func",
        "im_self",
        "modules",
        "builtins",
        # str.format / format_map read attributes named inside the string ('{0.__class__}')
        "format",
        "format_map",
        # loaders and writers on whatever object a reference turns out to be
        "load",
        "loads",
        "dump",
        "dumps",
        "save",
        "savez",
        "tofile",
        "from_file",
        "load_library",
        "open",
        "write_text",
        "write_bytes",
        "unlink",
        "rmdir",
        "rename",
        "symlink_to",
        "hardlink_to",
        "chmod",
        "touch",
        "mkdir",
        "system",
        "popen",
        "spawn",
        "exec_module",
        "load_module",
        "import_module",
    }
)
#: Reasons MONAI's ``_mode_`` may hold.
_SAFE_MODES = ("default", "callable")
#: Keyword arguments that switch a loader to pickles.
_PICKLE_KEYWORDS = {"weights_only": True, "allow_pickle": False}
_MISSING = object()
_REFS = "__local_refs"  # MONAI's ReferenceResolver._vars: what "@id" becomes inside an expression
_CONSTANT_TYPES: tuple[type, ...] = (int, float, complex, bool, str, bytes, type(None), enum.Enum)
_ALLOWED_NODES = (
    ast.Expression,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Store,
    ast.Attribute,
    ast.Subscript,
    ast.Slice,
    ast.Call,
    ast.keyword,
    ast.Starred,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.Dict,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.comprehension,
    ast.Lambda,
    ast.arguments,
    ast.arg,
    ast.JoinedStr,
    ast.FormattedValue,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
)


class AuditError(RuntimeError):
    """Raised by :func:`enforce` when MONAI is about to evaluate or instantiate a flagged construct."""


@dataclass(frozen=True)
class Finding:
    """One construct of a config that needs a human's trust before it is run."""

    source: str  # config file (or "override")
    config_id: str  # where in the config, MONAI id syntax ("train::trainer::...")
    construct: str  # the text found
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.config_id or '<root>'}: {self.construct!r}: {self.reason}"


# ---------------------------------------------------------------------------------------------
# resolving dotted names without calling anything


def _in_allowed(module_name: str | None) -> bool:
    return bool(module_name) and module_name.split(".")[0] in ALLOWED_PACKAGES


def _denied_name(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in DENIED)


def _import_object(name: str) -> Any:
    """The object a dotted name of this module's own lists names, or ``_MISSING``. The name itself is
    never imported (a denied module is recognised by its name; importing ``mimtl.__main__`` would run it)."""
    parts = name.split(".")
    for n in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except Exception:
            continue
        try:
            for attr in parts[n:]:
                obj = getattr(obj, attr)
        except Exception:
            return _MISSING
        return obj
    return _MISSING


@functools.lru_cache(maxsize=1)
def _denied_ids() -> dict[int, str]:
    """``id()`` of each object on DENIED that can be imported here, so re-exports are caught too."""
    found: dict[int, str] = {}
    for name in DENIED:
        obj = _import_object(name)
        if obj is not _MISSING:
            found.setdefault(id(obj), name)
    return found


@functools.lru_cache(maxsize=1)
def _weights_only_ids() -> frozenset[int]:
    return frozenset(id(o) for o in map(_import_object, WEIGHTS_ONLY) if o is not _MISSING)


def _is_weights_only_loader(obj: Any) -> bool:
    return id(obj) in _weights_only_ids()


def _qualified_name(obj: Any) -> str | None:
    """``module.qualname`` of a class, a function or a method descriptor (never calls ``obj``)."""
    if isinstance(obj, types.ModuleType):
        return obj.__dict__.get("__name__")
    if not (inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, _ufunc_types())):
        return None
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str):  # a method descriptor (torch.Tensor.to) or a bound builtin method
        owner = getattr(obj, "__objclass__", None)
        if owner is None and getattr(obj, "__self__", None) is not None:
            owner = type(obj.__self__)
        module = getattr(owner, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
    return f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) else None


@functools.lru_cache(maxsize=1)
def _ufunc_types() -> tuple[type, ...]:
    import numpy

    return (numpy.ufunc,)


@functools.lru_cache(maxsize=1)
def _constant_types() -> tuple[type, ...]:
    import numpy
    import torch

    return (*_CONSTANT_TYPES, torch.dtype, torch.memory_format, torch.layout, numpy.dtype, numpy.generic)


def _denial(obj: Any) -> str | None:
    """Why ``obj`` (reached through an allowed module) is refused, or None."""
    if _is_weights_only_loader(obj):
        return None  # refused unless called with weights_only=True: the callers check
    if id(obj) in _denied_ids():
        return f"'{_denied_ids()[id(obj)]}' is on the audit's denylist"
    qualified = _qualified_name(obj)
    if qualified and _denied_name(qualified):
        return f"'{qualified}' is on the audit's denylist"
    if isinstance(obj, types.ModuleType) and not _in_allowed(qualified):
        return f"passes through module '{qualified}', outside {sorted(ALLOWED_PACKAGES)}"
    return None


def _value_problem(obj: Any) -> str | None:
    """Why the object a name reaches may not be used as a value, or None."""
    if isinstance(obj, types.ModuleType):
        return "a module object used as a value"
    if isinstance(obj, _constant_types()) and not isinstance(obj, type):
        if isinstance(obj, enum.Enum) and not _in_allowed(type(obj).__module__):
            return f"a constant of '{type(obj).__module__}', outside the allowed packages"
        return None
    qualified = _qualified_name(obj)
    if qualified is None:
        return f"reaches a {type(obj).__name__} object, not a class, function or constant"
    if not _in_allowed(qualified):
        return f"'{qualified}' is defined outside {sorted(ALLOWED_PACKAGES)}"
    return None


@functools.lru_cache(maxsize=4096)
def _resolve(path: str) -> tuple[Any, str | None]:
    """Follow ``a.b.c`` from an allowed package: ``(object, None)`` or ``(None, reason)``. Calls nothing."""
    parts = path.split(".")
    if not all(p.isidentifier() for p in parts):
        return None, "not a dotted Python name"
    if parts[0] not in ALLOWED_PACKAGES:
        return None, f"'{parts[0]}' is outside {sorted(ALLOWED_PACKAGES)}"
    walked = parts[0]
    try:
        obj: Any = importlib.import_module(parts[0])
    except Exception as e:
        return None, f"cannot import '{parts[0]}' ({type(e).__name__})"
    for part in parts[1:]:
        if part.startswith("_"):
            return None, f"private or dunder name '{part}'"
        walked += "." + part
        if part in DENIED_ATTRIBUTES and walked not in WEIGHTS_ONLY:
            return None, f"attribute '{part}' is on the audit's denylist"
        if _denied_name(walked):
            return None, f"'{walked}' is on the audit's denylist"
        if isinstance(obj, types.ModuleType):
            nxt = getattr(obj, part, _MISSING)  # a module's own __getattr__ may import a submodule: allowed code
            if nxt is _MISSING:
                submodule = f"{obj.__name__}.{part}"
                if _denied_name(submodule):
                    return None, f"'{submodule}' is on the audit's denylist"
                try:
                    nxt = importlib.import_module(submodule)
                except Exception:
                    return None, f"cannot resolve '{walked}'"
        else:
            nxt = inspect.getattr_static(obj, part, _MISSING)  # no property, descriptor or __getattr__ runs
            if isinstance(nxt, (staticmethod, classmethod)):
                nxt = nxt.__func__
            if nxt is _MISSING:
                return None, f"cannot resolve '{walked}' without running code"
        reason = _denial(nxt)
        if reason:
            return None, reason if walked in reason else f"{walked}: {reason}"
        obj = nxt
    return obj, None


# ---------------------------------------------------------------------------------------------
# $ expressions


def _substitute_refs(text: str) -> str:
    """Replace ``@id`` the way MONAI's ReferenceResolver.update_refs_pattern does before ``eval``."""
    from monai.bundle.reference_resolver import ReferenceResolver

    text = ReferenceResolver.normalize_id(text)
    for item in sorted(ReferenceResolver.id_matcher.findall(text), key=len, reverse=True):
        text = text.replace(item, f"{_REFS}['{item[len(ReferenceResolver.ref) :]}']")
    return text


def _dotted(node: ast.AST) -> tuple[str, ast.Name] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)]), node
    return None


def _is_ref(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == _REFS
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
    )


class _ExpressionAudit(ast.NodeVisitor):
    def __init__(self, tree: ast.AST) -> None:
        self.reasons: list[str] = []
        # names a lambda or a comprehension binds: runtime values of unknown type
        self.local: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.arg):
                self.local.add(node.arg)
            elif isinstance(node, ast.comprehension):
                self.local |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
        for name in sorted(self.local & (set(EVAL_GLOBALS) | SAFE_BUILTINS | {_REFS})):
            self.reasons.append(f"rebinds '{name}'")

    def generic_visit(self, node: ast.AST) -> None:
        if not isinstance(node, _ALLOWED_NODES):
            self.reasons.append(f"'{type(node).__name__}' is not allowed in a config expression")
            return
        super().generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.reasons.append("assignment expression ':='")

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name in self.local:
            return
        if name.startswith("_"):
            self.reasons.append(f"private or dunder name '{name}'")
        elif name in EVAL_GLOBALS:
            self._check_dotted(EVAL_GLOBALS[name], name)
        elif name in _BUILTIN_REASONS:
            self.reasons.append(f"'{name}' {_BUILTIN_REASONS[name]}")
        elif name not in SAFE_BUILTINS:
            self.reasons.append(f"unknown name '{name}' (not an allowed module, safe builtin or @reference)")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if not _is_ref(node):  # "@id" (MONAI's __local_refs['id']) is a value the config defines
            self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("_"):
            self.reasons.append(f"private or dunder attribute '{node.attr}'")
            return
        dotted = _dotted(node)
        if dotted and dotted[1].id in EVAL_GLOBALS and dotted[1].id not in self.local:
            path = EVAL_GLOBALS[dotted[1].id] + dotted[0][len(dotted[1].id) :]
            self._check_dotted(path, dotted[0])  # resolved against the real objects
            return
        if node.attr in DENIED_ATTRIBUTES:
            self.reasons.append(f"attribute '{node.attr}' is on the audit's denylist")
            return
        self.visit(node.value)  # an attribute of a runtime value: checked by name only (above)

    def _check_dotted(self, path: str, shown: str) -> Any:
        obj, reason = _resolve(path)
        if reason is None:
            reason = _value_problem(obj)
        if reason is None and _is_weights_only_loader(obj):
            reason = None if getattr(self, "_weights_only_ok", False) else f"'{shown}' without weights_only=True"
        if reason:
            self.reasons.append(reason if shown in reason else f"'{shown}': {reason}")
        return obj

    def visit_Call(self, node: ast.Call) -> None:
        for kw in node.keywords:
            if kw.arg is None:
                if not isinstance(kw.value, ast.Dict) or not all(isinstance(k, ast.Constant) for k in kw.value.keys):
                    self.reasons.append("'**' unpacking of something other than a dict literal")
                else:
                    self._check_keywords({k.value: v for k, v in zip(kw.value.keys, kw.value.values)})
        self._check_keywords({kw.arg: kw.value for kw in node.keywords if kw.arg})
        weights_only = any(
            kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
            for kw in node.keywords
        )
        self._weights_only_ok = weights_only
        self.visit(node.func)
        self._weights_only_ok = False
        for child in [*node.args, *node.keywords]:
            self.visit(child)

    def _check_keywords(self, keywords: Mapping[Any, ast.AST]) -> None:
        for key, value in keywords.items():
            if key == "pickle_module":
                self.reasons.append("'pickle_module=' chooses how files are unpickled")
            elif key in _PICKLE_KEYWORDS:
                want = _PICKLE_KEYWORDS[key]
                if not (isinstance(value, ast.Constant) and value.value is want):
                    self.reasons.append(f"'{key}=' is not literally {want} (loads pickles)")


def _parse_expression(expr: str) -> tuple[ast.Expression | None, str | None]:
    body = _substitute_refs(expr[1:])
    try:
        module = ast.parse(body.strip(), mode="exec")  # MONAI first parses it as statements, looking for imports
    except SyntaxError as e:
        return None, f"not a Python expression ({e.msg})"
    if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(module)):
        return None, "import statement (MONAI imports the module)"
    if len(module.body) != 1 or not isinstance(module.body[0], ast.Expr):
        return None, "not a single Python expression"
    try:
        return ast.parse(body, mode="eval"), None  # what eval() compiles
    except SyntaxError as e:
        return None, f"not a Python expression ({e.msg})"


def audit_expression(expr: str) -> list[str]:
    """Why a ``$`` expression is refused (empty when every name in it is on the allowlist)."""
    tree, reason = _parse_expression(expr)
    if tree is None:
        return [reason or "cannot parse"]
    visitor = _ExpressionAudit(tree)
    visitor.visit(tree)
    return sorted(set(visitor.reasons))


# ---------------------------------------------------------------------------------------------
# _target_, _mode_, macros, configs


def _locator_name(target: str) -> str | None:
    module = _locator().get_component_module_name(target)
    if isinstance(module, list):
        module = module[0] if module else None  # MONAI takes the first one too
    return f"{module}.{target}" if module else None


@functools.lru_cache(maxsize=1)
def _locator():
    from monai.bundle.config_item import ComponentLocator

    return ComponentLocator()


def audit_target(target: Any, args: Mapping[str, Any] | None = None) -> list[str]:
    """Why a ``_target_`` value is refused (empty when it names an allowed class or function)."""
    if not isinstance(target, str):
        return [] if isinstance(target, (Mapping, list, type(None))) else ["a target that is not text"]
    if target.startswith("$"):
        tree, reason = _parse_expression(target)
        if tree is None:
            return [reason or "cannot parse"]
        dotted = _dotted(tree.body)
        if dotted is None or dotted[1].id not in EVAL_GLOBALS:
            return ["computed target (the expression's value is called); write the dotted name instead"]
        return audit_expression(target)
    if target.startswith("@"):
        return ["target taken from another id: what it calls cannot be checked"]
    if target.startswith("%"):
        return _macro_reasons(target)
    full = target
    if "." not in target:
        full = _locator_name(target)
        if full is None:
            # MONAI falls back to pydoc.locate, which also finds builtins such as ``eval``
            return [f"bare name '{target}' is not a MONAI component (could resolve to a builtin)"]
    obj, reason = _resolve(full)
    if reason is None:
        if not (inspect.isclass(obj) or callable(obj)):
            reason = "not a class or function"
        else:
            reason = _value_problem(obj)
    if reason is None and _is_weights_only_loader(obj):
        if not (args and args.get("weights_only") is True):
            reason = "loads pickles unless 'weights_only: true' is given"
    return [reason] if reason else []


def _macro_reasons(value: str) -> list[str]:
    from monai.bundle import ConfigParser

    path, _ = ConfigParser.split_path_id(value[1:])
    return [f"'%' macro reads config from '{path}', which this audit did not read"] if path else []


def _key_name(key: Any) -> str:
    """``a::b::_target_`` (an override key) names ``_target_`` too."""
    return re.split(r"::|#", str(key))[-1]


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any, Any, Any]]:
    """Yield ``(id, key, value, parent)`` for every item of a parsed config, in document order."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            child = f"{path}::{k}" if path else str(k)
            yield child, k, v, node
            yield from _walk(v, child)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            child = f"{path}::{i}" if path else str(i)
            yield child, None, v, node
            yield from _walk(v, child)


def _component_reasons(component: Mapping[str, Any]) -> list[str]:
    reasons = []
    for key, value in component.items():
        name = _key_name(key)
        if name == "pickle_module":
            reasons.append("'pickle_module' chooses how files are unpickled")
        elif name in _PICKLE_KEYWORDS and value is not _PICKLE_KEYWORDS[name]:
            reasons.append(f"'{name}' is not literally {_PICKLE_KEYWORDS[name]} (loads pickles)")
    return reasons


def audit_config(config: Any, source: str = "config") -> list[Finding]:
    """Audit one parsed config (dict/list) and return the findings, in document order.

    Args:
        config: the loaded YAML/JSON content.
        source: a label used in the findings (usually the file name).
    """
    findings = []
    if isinstance(config, str):
        config = {"": config}
    for config_id, key, value, parent in _walk(config, ""):
        name = _key_name(key) if key is not None else None
        reasons: list[str] = []
        if name == "_target_":
            reasons = audit_target(value, parent if isinstance(parent, Mapping) else None)
            reasons += _component_reasons(parent) if isinstance(parent, Mapping) else []
        elif name == "_mode_":
            if value not in _SAFE_MODES:
                reasons = [
                    "'_mode_: debug' starts the pdb debugger"
                    if value == "debug"
                    else f"_mode_ must be one of {_SAFE_MODES}"
                ]
        elif isinstance(value, str) and value.startswith("$"):
            reasons = audit_expression(value)
        elif isinstance(value, str) and value.startswith("%"):
            reasons = _macro_reasons(value)
        findings += [Finding(source, config_id, str(value), r) for r in reasons]
    return findings


def audit_config_files(files: Sequence[str | Path], overrides: Mapping[str, Any] | None = None) -> list[Finding]:
    """Audit config files (YAML or JSON) and command-line overrides (``--set`` values) together."""
    from monai.bundle import ConfigParser

    findings = []
    for f in files:
        try:
            content = ConfigParser.load_config_file(str(f))  # yaml.safe_load / json.load: nothing runs
        except Exception as e:
            findings.append(Finding(str(f), "", str(f), f"cannot be read as a config ({type(e).__name__}: {e})"))
            continue
        findings += audit_config(content, source=str(f))
    for k, v in (overrides or {}).items():
        findings += audit_config({k: v}, "override")
    return findings


# ---------------------------------------------------------------------------------------------
# bundles from elsewhere


def is_shipped(path: str | Path) -> bool:
    """Whether a bundle folder is one that ships with mimtl (inside the installed bundles folder)."""
    from mimtl.bundle.bundle import shipped_bundles_dir

    shipped = shipped_bundles_dir()
    return shipped is not None and Path(path).resolve().is_relative_to(shipped.resolve())


WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def audit_weights(bundle_path: str | Path) -> list[Finding]:
    """A finding for each checkpoint under ``models/`` that ``torch.load(weights_only=True)`` refuses."""
    import torch

    findings = []
    models = Path(bundle_path) / "models"
    for f in sorted(models.rglob("*")) if models.is_dir() else []:
        if f.suffix not in WEIGHT_SUFFIXES or not f.is_file():
            continue
        try:
            torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            findings.append(Finding(str(f), "", f.name, f"needs more than torch.load(weights_only=True): {msg}"))
    return findings


#: What a bundle's logging.conf may hold: Python's fileConfig ``eval``s handler classes and args.
_LOG_HANDLER_CLASSES = frozenset({"StreamHandler", "logging.StreamHandler", "NullHandler", "logging.NullHandler"})
_LOG_HANDLER_ARGS = frozenset({"(sys.stdout,)", "(sys.stderr,)", "()", ""})


def audit_logging_conf(path: str | Path) -> list[Finding]:
    """Findings for a ``logging.conf`` that does more than print: ``logging.config.fileConfig``
    (which MONAI's ConfigWorkflow calls on it) ``eval``s each handler's ``class``, ``args`` and
    ``kwargs`` and imports each formatter's ``class``."""
    import configparser

    parser = configparser.RawConfigParser()
    try:
        parser.read(str(path), encoding="utf-8")
    except configparser.Error as e:
        return [Finding(str(path), "", Path(path).name, f"cannot be read ({type(e).__name__})")]
    findings = []
    for section in parser.sections():
        items = dict(parser.items(section))
        if section.startswith("handler_"):
            if items.get("class", "").strip() not in _LOG_HANDLER_CLASSES:
                findings.append(
                    Finding(
                        str(path),
                        section,
                        items.get("class", ""),
                        "a handler class other than StreamHandler is eval'ed",
                    )
                )
            if re.sub(r"\s", "", items.get("args", "")) not in _LOG_HANDLER_ARGS:
                findings.append(
                    Finding(
                        str(path),
                        section,
                        items.get("args", ""),
                        "handler args are eval'ed: only (sys.stdout,) or (sys.stderr,)",
                    )
                )
            if items.get("kwargs", "").strip() not in ("", "{}"):
                findings.append(Finding(str(path), section, items["kwargs"], "handler kwargs are eval'ed"))
        elif (
            section.startswith("formatter_") and items.get("class", "logging.Formatter").strip() != "logging.Formatter"
        ):
            findings.append(
                Finding(
                    str(path), section, items["class"], "a formatter class other than logging.Formatter is imported"
                )
            )
    return findings


def audit_bundle(bundle_path: str | Path, config_files: Sequence[str | Path] = ()) -> list[Finding]:
    """Audit a bundle folder from elsewhere: its configs (``config_files``, or every config in
    ``configs/``; ``metadata.json`` always, MONAI merges it as ``_meta_``), its ``logging.conf``
    and its weights."""
    path = Path(bundle_path)
    configs = path / "configs"
    files = list(config_files) or sorted(
        p for p in configs.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
    )
    meta = configs / "metadata.json"
    if meta.is_file() and meta not in map(Path, files):
        files.append(meta)
    logging_conf = [p for p in configs.glob("logging.conf") if p.is_file()]
    return audit_config_files(files) + [f for p in logging_conf for f in audit_logging_conf(p)] + audit_weights(path)


# ---------------------------------------------------------------------------------------------
# the same checks where MONAI evaluates


@contextlib.contextmanager
def enforce() -> Iterator[None]:
    """Within the block, MONAI refuses (:class:`AuditError`) to evaluate a ``$`` expression or to
    instantiate a ``_target_`` that the audit flags, whatever produced the text: a config file, a
    ``%`` macro, a string computed at run time, or a nested ``ConfigParser`` (an experiment's runs).
    The static audit still runs first: this catches what only exists at run time."""
    from monai.bundle.config_item import ConfigComponent, ConfigExpression

    evaluate, instantiate = ConfigExpression.evaluate, ConfigComponent.instantiate

    def checked_evaluate(self, *args, **kwargs):
        value = self.get_config()
        if ConfigExpression.is_expression(value):
            reasons = audit_expression(value)
            if reasons:
                raise AuditError(f"refused to evaluate {self.get_id() or '<root>'}: {value!r}: {'; '.join(reasons)}")
        return evaluate(self, *args, **kwargs)

    def checked_instantiate(self, *args, **kwargs):
        config = self.get_config()
        if ConfigComponent.is_instantiable(config) and not self.is_disabled():
            target = config.get("_target_")
            if isinstance(target, str):
                reasons = audit_target(target, config) + _component_reasons(config)
            else:
                reasons = _runtime_target_reasons(target)
            mode = config.get("_mode_", "default")
            if mode not in _SAFE_MODES:
                reasons.append(f"_mode_ {mode!r}")
            if reasons:
                raise AuditError(
                    f"refused to instantiate {self.get_id() or '<root>'}: {target!r}: {'; '.join(reasons)}"
                )
        return instantiate(self, *args, **kwargs)

    ConfigExpression.evaluate, ConfigComponent.instantiate = checked_evaluate, checked_instantiate
    try:
        yield
    finally:
        ConfigExpression.evaluate, ConfigComponent.instantiate = evaluate, instantiate


def _runtime_target_reasons(target: Any) -> list[str]:
    """A ``_target_`` that MONAI already resolved to an object (from ``$`` or ``@``)."""
    if isinstance(target, (Mapping, list, type(None))):
        return []
    if isinstance(target, types.ModuleType):
        return ["a module as a target"]
    if inspect.isclass(target) or inspect.isfunction(target) or inspect.isbuiltin(target):
        reason = _denial(target) or _value_problem(target)
        if reason is None and _is_weights_only_loader(target):
            reason = "loads pickles unless 'weights_only: true' is given"
        return [reason] if reason else []
    return []  # a bound method or a partial of a config's own object: its text was audited
