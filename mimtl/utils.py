"""Small helpers shared by the command line, the demo and experiments (no mimtl imports)."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["existing_path", "format_table", "read_metrics"]


def existing_path(path: str | os.PathLike | None) -> str | None:
    """``path`` when it names an existing file or folder, else None: for config defaults that are
    optional files (a shipped baseline a user's copy of the bundle may not have)."""
    return str(path) if path is not None and Path(path).exists() else None


def format_table(rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned plain-text table; the first row is the header, underlined."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    if lines:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def read_metrics(folder: Path) -> dict[str, float]:
    """The ``metrics.csv`` MONAI's MetricsSaver writes: ``name<delimiter>value`` lines (``,`` by default).

    Raises:
        FileNotFoundError: no ``metrics.csv`` in ``folder``.
    """
    f = Path(folder) / "metrics.csv"
    if not f.is_file():
        raise FileNotFoundError(f"no metrics.csv written in {folder}")
    text = f.read_text()
    if not text.strip():
        return {}
    rows = csv.reader(text.splitlines(), csv.Sniffer().sniff(text, delimiters=",\t"))
    return {r[0]: float(r[1]) for r in rows if len(r) == 2}


def replace_atomic(path: Path, save: Callable[[Path], Any]) -> Path:
    """``save(tmp)`` into a temporary file next to ``path``, then rename it to ``path``; return ``path``.

    A reader never sees half a file, and a failed write (a full disk) leaves the file that was there
    before unchanged and no temporary file behind; the ``OSError`` propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        save(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
