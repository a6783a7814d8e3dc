"""DataLoader settings chosen for the machine at hand: worker count by core count, pinned memory with a GPU.

The bundles' inference configs call these instead of fixed numbers, so the same config is fast on
a 2-core laptop and on a GPU server::

    num_workers: "$mimtl.data.loader.auto_num_workers(@device)"
    pin_memory: "$mimtl.data.loader.use_pinned_memory(@device)"

An explicit number (``--set num_workers=4``) still wins.
"""

from __future__ import annotations

import os

import torch

__all__ = ["auto_num_workers", "usable_cores", "use_pinned_memory"]

#: Most DataLoader workers ``auto`` gives: past this, more processes add memory, not speed.
MAX_WORKERS = 8


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or a job's share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on macOS/Windows
        return max(1, os.cpu_count() or 1)


def auto_num_workers(device: str | torch.device | None = None, cores: int | None = None) -> int:
    """How many DataLoader worker processes to use on ``device`` with ``cores`` cores (default: this process's).

    * **GPU**: the forward pass runs on the GPU, so every core but the main process's decodes
      films: ``cores - 1``, at most :data:`MAX_WORKERS`.
    * **CPU**: the forward pass already runs on every core (PyTorch's intra-op threads), and a
      worker takes its core from it. On 2 cores, end-to-end landmark inference ran at 0.72 of the
      bare forward with no workers and 0.59-0.69 with 2 (``docs/performance.md``), and films
      decoded at reduced size cost little, so: none below 8 cores, then one per 8 cores, at most
      4 (a rule for larger machines, not measured here).

    Args:
        device: where the network runs (``"cuda"``, ``"cpu"``, a ``torch.device``); None: CUDA if available.
        cores: the core count to plan for (default :func:`usable_cores`).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cores = usable_cores() if cores is None else max(1, int(cores))
    if torch.device(device).type == "cuda":
        return max(0, min(cores - 1, MAX_WORKERS))
    return 0 if cores < 8 else min(4, cores // 8)


def use_pinned_memory(device: str | torch.device | None = None) -> bool:
    """Page-locked batches, for fast asynchronous (``non_blocking``) copies: only when ``device`` is a usable GPU.

    On a CPU-only machine pinning costs time and memory for nothing (and PyTorch warns).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type == "cuda" and torch.cuda.is_available()
