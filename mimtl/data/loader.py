"""DataLoader settings chosen for the machine at hand: worker count by core count, pinned memory and
copies on a side CUDA stream with a GPU.

The bundles' inference configs call these instead of fixed numbers, so the same config is fast on
a 2-core laptop and on a GPU server::

    num_workers: "$mimtl.data.loader.auto_num_workers(@device)"
    pin_memory: "$mimtl.data.loader.use_pinned_memory(@device)"

An explicit number (``--set num_workers=4``) still wins. :class:`PrefetchDataLoader` overlaps the
host-to-GPU copy of the next batch with the work on the current one, and can prepare the next
batch in a thread of the main process while the current one runs.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from monai.data import DataLoader

__all__ = [
    "PrefetchDataLoader",
    "auto_num_workers",
    "in_background",
    "prefetch",
    "usable_cores",
    "use_pinned_memory",
]

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


def prefetch(
    batches: Iterable[Any], start: Callable[[Any], Any], finish: Callable[[Any], Any] = lambda pending: pending
) -> Iterator[Any]:
    """Yield ``finish(start(batch))`` for each batch, starting batch k + 1 before batch k is handed out.

    ``start`` begins moving a batch (an asynchronous copy on a side CUDA stream) and ``finish``
    makes it ready to use as it is handed out (the compute stream waits for that copy), so the copy
    of the next batch runs while the caller computes on the current one.
    """
    iterator = iter(batches)
    try:
        pending = start(next(iterator))
    except StopIteration:
        return
    for batch in iterator:
        upcoming = start(batch)
        yield finish(pending)
        pending = upcoming
    yield finish(pending)


_END = object()


def in_background(batches: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Yield the items of ``batches``, produced up to ``depth`` ahead by a thread of this process.

    With no DataLoader worker process, decoding the next films in a thread overlaps the forward
    pass of the current batch: the decoders (PIL, OpenJPEG, NumPy) and PyTorch's kernels release
    the GIL, and a thread costs no process start nor a copy of the batch between processes. An
    error raised while producing an item is raised here, at that item; stopping early (a
    ``break``, an engine terminated) stops the thread after the item it is producing.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}.")
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not put((item, None)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put((_END, error))
            return
        put((_END, None))

    thread = threading.Thread(target=produce, name="mimtl-prepare-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class PrefetchDataLoader(DataLoader):
    """MONAI's ``DataLoader`` that, on a CUDA ``device``, copies each batch's ``keys`` to the GPU one
    batch ahead, on a side stream.

    The copy (``non_blocking``, from pinned memory when ``pin_memory=True``) of batch k + 1 then
    overlaps the forward pass of batch k; the compute stream waits for the copy before using the
    tensors. Only ``keys`` move (default ``image``): the other entries (metadata, a film's overlay
    copy) stay on the CPU for the handlers that write them. On any other device, or without CUDA,
    it is the plain ``DataLoader``; the engine's own ``prepare_batch`` copy then does the move (for
    tensors already on the GPU it is a no-op).

    With ``prepare_ahead=True`` the batches are also prepared one ahead in a thread of this
    process (:func:`in_background`): for a forward pass that leaves the CPU idle (a GPU) where
    worker processes are unwanted. Off by default: on a 2-core CPU whose cores both run the
    forward pass, full-size classification inference lost 4-6 % with it (the decode thread
    preempts the forward's OpenMP threads).

    Args:
        device: where the network runs (``"cuda"``, ``"cuda:1"``, ``"cpu"``, a ``torch.device``).
        keys: the batch entries to copy ahead.
        prepare_ahead: prepare batches in a thread (default False).
        args, kwargs: as for ``monai.data.DataLoader``.
    """

    def __init__(
        self,
        *args: Any,
        device: str | torch.device = "cpu",
        keys: Sequence[str] = ("image",),
        prepare_ahead: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.device = torch.device(device)
        self.keys = tuple(keys)
        self.prepare_ahead = bool(prepare_ahead)

    @property
    def copies_ahead(self) -> bool:
        """Whether batches are copied ahead on a side stream (a CUDA device with CUDA available)."""
        return self.device.type == "cuda" and torch.cuda.is_available()

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        if self.prepare_ahead:
            batches = in_background(batches)
        if not self.copies_ahead:
            return batches
        copy = _StreamCopy(self.device, self.keys)
        return prefetch(batches, copy.start, copy.finish)


class _StreamCopy:
    """Copy a batch's ``keys`` to ``device`` on a side stream; the compute stream waits for it when it is used."""

    def __init__(self, device: torch.device, keys: tuple[str, ...]) -> None:
        self.device, self.keys = device, keys
        self.stream = torch.cuda.Stream(device=device)

    def start(self, batch: Any) -> tuple[Any, Any]:
        if not isinstance(batch, dict):
            return batch, None
        moved = dict(batch)
        with torch.cuda.stream(self.stream):
            for key in self.keys:
                if isinstance(batch.get(key), torch.Tensor):
                    moved[key] = batch[key].to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        return moved, done

    def finish(self, pending: tuple[Any, Any]) -> Any:
        batch, done = pending
        if done is None:
            return batch
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(done)
        for key in self.keys:
            value = batch.get(key)
            if isinstance(value, torch.Tensor) and value.is_cuda:
                # allocated on the side stream: its memory must outlive the compute stream's use of it
                value.record_stream(compute)
        return batch
