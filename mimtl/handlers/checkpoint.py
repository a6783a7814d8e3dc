"""MONAI's ``CheckpointSaver``, writing each file atomically.

MONAI's saver writes ``model.pt`` in place (its ``DiskSaver`` uses ``atomic=False`` so that the file
gets the user's usual permissions): a full disk or a kill during the write leaves a truncated
``models/model.pt`` where a good one was. :class:`AtomicCheckpointSaver` takes the same arguments
and writes to a temporary file beside the target, then renames it, with the permissions an
ordinary write would give (umask applied).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.handlers import CheckpointSaver
from monai.utils import min_version, optional_import

from mimtl.handlers._common import save_atomic

DiskSaver, _ = optional_import("ignite.handlers", "0.4.11", min_version, "DiskSaver")
idist, _ = optional_import("ignite", "0.4.11", min_version, "distributed")

__all__ = ["AtomicCheckpointSaver"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _AtomicDiskSaver(DiskSaver):
    """Writes a checkpoint through :func:`~mimtl.handlers._common.save_atomic` (rank 0 only, as DiskSaver)."""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != 0:
            return
        path = Path(self.dirname) / (self.filename or filename)
        save_atomic(path, lambda tmp: torch.save(checkpoint, tmp))
        path.chmod(0o666 & ~_umask())  # mkstemp made it 0600

    def remove(self, filename: str) -> None:
        super().remove(filename=self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """:class:`monai.handlers.CheckpointSaver` whose files are written atomically (same arguments).

    A failed write (``OSError``, e.g. a full disk) raises
    :class:`~mimtl.handlers.OutputWriteError` and leaves the previous file as it was.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                inner = checkpoint.save_handler
                checkpoint.save_handler = _AtomicDiskSaver(inner.dirname, getattr(inner, "filename", None))
