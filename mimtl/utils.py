"""Small helpers shared by the command line and the demo."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def format_table(rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned plain-text table; the first row is the header, underlined."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    if lines:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
