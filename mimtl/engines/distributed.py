"""Helpers that let one multi-GPU bundle config also run on CPU processes (gloo), as tests do here."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["cleanup_distributed", "init_distributed", "is_main_process", "local_device", "main_process_only"]


def local_device(prefer_cuda: bool = True) -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available (and preferred), else the CPU."""
    if prefer_cuda and torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(backend: str = "auto") -> bool:
    """Join the process group torchrun set up; ``auto`` picks nccl with CUDA, gloo without.

    Returns False (and does nothing) when not launched by torchrun, so the same config also
    runs as a single process.
    """
    if dist.is_initialized():
        return True
    if "WORLD_SIZE" not in os.environ:
        return False
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend)
    return True


def is_main_process() -> bool:
    """True on rank 0 and when not distributed."""
    return not dist.is_initialized() or dist.get_rank() == 0


def main_process_only(
    handlers: Sequence,
    rank0_types: Sequence[str] = (
        "CheckpointSaver",
        "StatsHandler",
        "TensorBoardStatsHandler",
        "MLFlowHandler",
        "ClassificationSaver",
        "MetricsSaver",
    ),
) -> list:
    """Drop checkpoint/log handlers off rank 0, so only one process writes files and logs."""
    if is_main_process():
        return list(handlers)
    return [h for h in handlers if type(h).__name__ not in rank0_types]


def cleanup_distributed() -> None:
    """Leave the process group if one was joined, after the ranks meet.

    Without the meeting, a rank that leaves while another still reads from it over gloo can
    abort that one's exit ("terminate called without an active exception", seen under load). A
    rank that already failed does not come: the others then leave after the timeout.
    """
    if not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        else:
            dist.barrier()
    except RuntimeError:
        pass  # a rank is gone: nothing to wait for
    finally:
        dist.destroy_process_group()
