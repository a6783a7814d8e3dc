"""Embedded demo data sets built from real anatomy (see docs/demo_data.md).

Each builder writes one data set in the on-disk layout of its public counterpart, a MONAI
datalist JSON (training / validation / test) and a ``contact_sheet.png``; the same seed gives
the same bytes.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = ["DEMO_TASKS", "build_demo", "demo_datalist", "demo_dir"]

#: task -> "module:function" of its builder, ``builder(out_dir, n=..., seed=0, progress=True) -> datalist path``.
DEMO_TASKS = {
    "classification": "mimtl.io.demo.chest:build_classification",
    "landmarks": "mimtl.io.demo.chest:build_landmarks",
    "segmentation": "mimtl.io.demo.chest:build_segmentation",
    "brain": "mimtl.io.demo.brain:build_brain_tumours",
}


def build_demo(task: str, out_dir: str | Path, n: int | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Build demo data set ``task`` into ``out_dir``; returns its datalist JSON path."""
    if task not in DEMO_TASKS:
        raise ValueError(f"Unknown demo task '{task}'; choose one of {', '.join(DEMO_TASKS)}.")
    module, func = DEMO_TASKS[task].split(":")
    builder = getattr(importlib.import_module(module), func)
    kwargs = {"seed": seed, "progress": progress} | ({"n": n} if n is not None else {})
    return builder(Path(out_dir), **kwargs)


def demo_datalist(
    task: str, n: int | None = None, seed: int = 0, progress: bool = True, root: str | Path | None = None
) -> Path:
    """The datalist of demo data set ``task`` in the user cache, built on first use.

    Bundles point their default data here, so a new user's first ``train`` or ``evaluate`` runs
    without any download step; the folder name records seed and size, so a different request
    never reuses a data set built for another. ``root`` defaults to ``<cache>/demo``.
    """
    from mimtl.io.sources import cache_dir

    root = Path(root) if root is not None else cache_dir() / "demo"
    folder = root / f"{task}-seed{seed}-n{'default' if n is None else n}"
    datalist = folder / "datalist.json"
    if datalist.is_file():
        return datalist
    return build_demo(task, folder, n=n, seed=seed, progress=progress)


def demo_dir(task: str, n: int | None = None, seed: int = 0, progress: bool = True) -> str:
    """The folder of demo data set ``task`` (holding ``datalist.json``), built on first use.

    A bundle's ``dataset_dir`` defaults to it; users point ``dataset_dir`` at their own data
    (e.g. the output folder of ``mimtl data adapt``) instead.
    """
    return str(demo_datalist(task, n=n, seed=seed, progress=progress).parent)
