"""Shared pieces of the data set adapters: finding folders, reading CSVs, splitting, writing.

Every adapter returns a plain dict of lists (Decathlon style) with absolute paths; splits are
made here, deterministically from a seed, so that the same folder and options always give the
same datalist whatever order the file system lists files in.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import tempfile
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mimtl.data.validate import DataValidationError

__all__ = [
    "MAX_LISTED",
    "SPLITS",
    "check_fraction",
    "empty_datalist",
    "find_dir",
    "find_file",
    "image_index",
    "listing",
    "name_list",
    "parse_float",
    "read_csv_rows",
    "report_missing",
    "require_columns",
    "require_dir",
    "seeded_split",
    "write_datalist",
]

#: The lists every adapter returns, in Decathlon's words.
SPLITS: tuple[str, ...] = ("training", "validation", "test")
#: How many offending entries an error message lists before "... and N more".
MAX_LISTED = 20


def listing(problems: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``problems`` as an indented bullet list, cut after ``limit`` entries."""
    shown = "\n  - ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"\n  - {shown}{more}"


def empty_datalist(name: str, description: str) -> dict[str, Any]:
    """A datalist dict with the three split lists, ``skipped`` and the data set's name."""
    return {"name": name, "description": description, "training": [], "validation": [], "test": [], "skipped": []}


def require_dir(root: str | os.PathLike, dataset: str, expected: str) -> Path:
    """``root`` as an absolute Path; raise when it is not an existing folder.

    Raises:
        DataValidationError: naming the folder and the layout that was expected there.
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise DataValidationError(f"{dataset}: '{path}' {what}; expected the {dataset} layout: {expected}")
    return path.resolve()


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", ".")))
    except OSError:
        return []


def find_dir(root: Path, accept: Callable[[Path], bool], depth: int = 2) -> Path | None:
    """The first folder (``root`` itself, then breadth-first up to ``depth`` levels down) that ``accept``s.

    Used to tolerate the usual ways an archive gets unpacked (into the current folder, into a
    folder of its own name, into ``archive/`` or a doubled ``name/name/``).
    """
    level = [root]
    for _ in range(depth + 1):
        for folder in level:
            if accept(folder):
                return folder
        level = [child for folder in level for child in _children(folder)]
    return None


def find_file(root: Path, names: Sequence[str], depth: int = 2) -> Path | None:
    """The first of ``names`` (in order of preference) found in ``root`` or up to ``depth`` levels down."""
    for name in names:
        folder = find_dir(root, lambda f, n=name: (f / n).is_file(), depth)
        if folder is not None:
            return folder / name
    return None


def read_csv_rows(path: Path, dataset: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file (``utf-8-sig``, so a byte-order mark does not break the header).

    Raises:
        DataValidationError: when the file cannot be decoded or is empty.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataValidationError(f"{dataset}: cannot read '{path}' as CSV ({type(e).__name__}: {e}).") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataValidationError(f"{dataset}: '{path}' is empty; expected a header row and one row per image.")
    return [cell.strip() for cell in rows[0]], rows[1:]


def require_columns(header: Sequence[str], required: Sequence[str], path: Path, dataset: str) -> dict[str, int]:
    """Column name -> index for ``required``; raise naming every missing column.

    Raises:
        DataValidationError: listing the missing columns, the columns found and the expected header.
    """
    index = {name: i for i, name in enumerate(header)}
    missing = [name for name in required if name not in index]
    if missing:
        raise DataValidationError(
            f"{dataset}: '{path}' lacks the column(s) {', '.join(repr(m) for m in missing)}.\n"
            f"  found:    {', '.join(header)}\n  expected: {', '.join(required)}"
        )
    return {name: index[name] for name in required}


def report_missing(
    missing: Sequence[tuple[Any, str]],
    on_missing: str,
    dataset: str,
    where: Path,
    skipped: list[dict],
) -> set:
    """Handle entries whose files are missing: raise one error listing all, or move them to ``skipped``.

    Args:
        missing: ``(key, reason)`` pairs; ``key`` identifies the entry (usually its image path).
        on_missing: ``"error"`` (raise) or ``"skip"`` (record in ``skipped`` and go on).
        dataset: the data set's name, for the message.
        where: the folder the adapter read.
        skipped: the datalist's ``skipped`` list, extended in place.

    Returns:
        The set of keys to leave out.

    Raises:
        DataValidationError: when ``on_missing="error"`` and anything is missing.
    """
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', not {on_missing!r}.")
    if not missing:
        return set()
    if on_missing == "error":
        raise DataValidationError(
            f"{dataset}: {len(missing)} file(s) referenced under '{where}' are missing or unusable "
            f"(pass on_missing='skip' to list them under 'skipped' instead):"
            + listing([f"{key}: {reason}" for key, reason in missing])
        )
    skipped.extend({"image": f"{key}", "reason": reason} for key, reason in missing)
    return {key for key, _ in missing}


def name_list(value: str | Sequence[str]) -> list[str]:
    """A list of names; a string is split at commas (``"Edema,Cardiomegaly"``, as a command line gives it)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value)


def check_fraction(name: str, value: float) -> float:
    """``value`` as a float in [0, 1); raise ValueError otherwise."""
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}.")
    return value


def _count(n: int, fraction: float) -> int:
    return int(math.floor(n * fraction + 0.5))  # round half up, not Python's half-to-even


def seeded_split(
    items: Sequence[dict],
    fractions: Mapping[str, float],
    seed: int = 0,
    group: Callable[[dict], Hashable] | None = None,
    stratify: Callable[[dict], Hashable] | None = None,
    rest: str = "training",
) -> dict[str, list[dict]]:
    """Split ``items`` into named subsets, deterministically, by group and within strata.

    Groups (e.g. patients) are never divided between subsets. Within each stratum (e.g. a class
    label; a group's stratum is the largest stratum value of its items) the groups are sorted
    by id, shuffled with a generator seeded by ``(seed, stratum)``, and the first
    ``round(n * fraction)`` of them go to each named subset in the order of ``fractions``; the
    remaining groups go to ``rest``. The result depends on the seed and the item ids only, not on
    the input order, and adding a stratum does not reshuffle the others.

    Args:
        items: the entries to split.
        fractions: subset name -> fraction of the groups of each stratum, e.g.
            ``{"test": 0.2, "validation": 0.1}``.
        seed: the random seed.
        group: item -> group id (default: each item is its own group, keyed by its ``image``).
        stratify: item -> stratum (default: one stratum).
        rest: the subset that takes the remaining groups.

    Returns:
        subset name -> items (each list in input order), one key per name in ``fractions`` and ``rest``.
    """
    for name, value in fractions.items():
        check_fraction(f"the {name} fraction", value)
    if sum(fractions.values()) >= 1.0:
        raise ValueError(f"the split fractions {dict(fractions)} leave nothing for {rest}.")
    group = group or (lambda item: f"{item.get('image')}")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        members[group(item)].append(i)
    strata: dict[str, list[Hashable]] = defaultdict(list)
    for g, idx in members.items():
        values = [stratify(items[i]) for i in idx] if stratify else [None]
        strata[f"{max(values, key=lambda v: (str(type(v)), v))}"].append(g)
    assignment: dict[Hashable, str] = {}
    for stratum in sorted(strata):
        groups = sorted(strata[stratum], key=lambda g: f"{g}")
        random.Random(f"{seed}:{stratum}").shuffle(groups)
        start = 0
        for name, fraction in fractions.items():
            n = _count(len(groups), fraction)
            for g in groups[start : start + n]:
                assignment[g] = name
            start += n
        for g in groups[start:]:
            assignment[g] = rest
    out: dict[str, list[dict]] = {name: [] for name in (*fractions, rest)}
    for item in items:
        out[assignment[group(item)]].append(item)
    return out


def _relative(value: Any, base: Path) -> Any:
    if isinstance(value, str) and os.path.isabs(value):
        try:
            return Path(os.path.relpath(value, base)).as_posix()
        except ValueError:  # another drive (Windows): keep it absolute
            return value
    if isinstance(value, list):
        return [_relative(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _relative(v, base) for k, v in value.items()}
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN: a missing landmark coordinate is written as null
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    return value


def write_datalist(datalist: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``datalist`` as JSON at ``path``, atomically, with file paths relative to the JSON's folder.

    Every absolute path string inside the list entries (``image``, ``label``, lists of paths,
    nested dicts) is made relative to the folder of ``path``, so the data set and its datalist
    can move together; :func:`mimtl.data.datalist.load_datalist` and MONAI's
    ``load_decathlon_datalist`` resolve them against that folder again. Non-finite numbers (a
    missing landmark's NaN) are written as ``null``. The file is written to a temporary file
    in the same folder and renamed over ``path``, so a reader never sees half a file.

    Args:
        datalist: an adapter's result, ``{"training": [...], "validation": [...], "test": [...], ...}``.
        path: the JSON file to write (its folder is created when missing).

    Returns:
        The path written.
    """
    path = Path(path).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    content = {key: _json_safe(_relative(value, base)) for key, value in datalist.items()}
    text = json.dumps(content, indent=2, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def parse_float(text: str) -> float:
    """``text`` as a float; NaN for an empty or unparsable cell."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def image_index(folders: Iterable[Path], suffixes: Sequence[str]) -> dict[str, Path]:
    """File name -> path for the files with ``suffixes`` directly inside ``folders`` (first wins)."""
    index: dict[str, Path] = {}
    lower = tuple(s.lower() for s in suffixes)
    for folder in folders:
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.name.lower().endswith(lower) and entry.is_file():
                    index.setdefault(entry.name, Path(entry.path))
    return index
