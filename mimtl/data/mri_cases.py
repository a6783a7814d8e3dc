"""The brain-MRI cases of an inference input: one item per case, its four sequences, whatever the layout.

:func:`list_mri_cases` accepts

* a datalist JSON (the items of one split; paths relative to the JSON),
* one BraTS case folder (``<case>_flair.nii.gz``, ``_t1``, ``_t1ce``, ``_t2``; BraTS 2023's ``-t2f``,
  ``-t1n``, ``-t1c``, ``-t2w``; ``.nii`` too) or a folder of them,
* one 4D NIfTI file holding the four sequences as volumes, or a folder of them,
* DICOM: a case folder with one sub-folder per sequence (named ``flair``, ``T1``, ``t1ce``, ...),
  or a folder of such case folders.

A case that lacks a sequence (or a 4D file without four volumes) is still listed, with an
``"error"`` saying what is missing: :class:`RaiseCaseError` first in the preprocessing turns it
into a failure that :class:`~mimtl.data.TolerantDataset` reports as a ``failed: <reason>`` row.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mimtl.errors import DataValidationError

__all__ = ["SEQUENCE_ALIASES", "CaseListingError", "RaiseCaseError", "list_mri_cases"]

#: Names each sequence goes by in file and folder names (BraTS up to 2021, BraTS 2023, common DICOM).
SEQUENCE_ALIASES: dict[str, tuple[str, ...]] = {
    "flair": ("flair", "t2f", "t2flair", "t2_flair"),
    "t1": ("t1", "t1n", "t1w", "t1native"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1_ce", "t1post", "t1c_gd"),
    "t2": ("t2", "t2w"),
}

_NIFTI = (".nii.gz", ".nii")


class CaseListingError(DataValidationError):
    """A case of the input whose sequences cannot be told apart (raised by :class:`RaiseCaseError`)."""


def _aliases(sequence: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((sequence.lower(), *SEQUENCE_ALIASES.get(sequence.lower(), ()))))


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_NIFTI)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _NIFTI:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _sequence_files(folder: Path, sequences: Sequence[str]) -> dict[str, list[Path]]:
    """sequence -> the NIfTI files of ``folder`` named ``..._<alias>.nii[.gz]`` (or ``-<alias>``)."""
    files = [p for p in _visible(folder) if _is_nifti(p)]
    found: dict[str, list[Path]] = {}
    for seq in sequences:
        pattern = re.compile(r"(^|[_\-.])(" + "|".join(map(re.escape, _aliases(seq))) + r")$", re.IGNORECASE)
        found[seq] = [p for p in files if pattern.search(_stem(p))]
    return found


def _sequence_dirs(folder: Path, sequences: Sequence[str]) -> dict[str, list[Path]]:
    """sequence -> the sub-folders of ``folder`` named after it (case-insensitive): DICOM series."""
    dirs = [p for p in _visible(folder) if p.is_dir()]
    found: dict[str, list[Path]] = {}
    for seq in sequences:
        names = {a.lower() for a in _aliases(seq)}
        found[seq] = [p for p in dirs if p.name.lower().replace(" ", "_").replace("-", "_") in names]
    return found


def _case_from_found(folder: Path, found: dict[str, list[Path]], kind: str) -> dict[str, Any]:
    item: dict[str, Any] = {"name": folder.name, "file": str(folder)}
    missing = [s for s, paths in found.items() if not paths]
    ambiguous = {s: [p.name for p in paths] for s, paths in found.items() if len(paths) > 1}
    present = [paths[0] for paths in found.values() if paths]
    item["image"] = [str(p) for p in present] if missing else [str(paths[0]) for paths in found.values()]
    if not item["image"]:
        item["image"] = str(folder)
    if missing:
        item["error"] = f"case {folder.name}: no {', '.join(missing)} {kind} in {folder}"
    elif ambiguous:
        item["error"] = f"case {folder.name}: several {kind}s for one sequence in {folder}: {ambiguous}"
    return item


def _case_folder(folder: Path, sequences: Sequence[str]) -> dict[str, Any] | None:
    """The case of a folder (NIfTI sequence files or DICOM sequence folders), None if neither."""
    files = _sequence_files(folder, sequences)
    if any(files.values()):
        return _case_from_found(folder, files, "sequence file")
    dirs = _sequence_dirs(folder, sequences)
    if any(dirs.values()):
        return _case_from_found(folder, dirs, "sequence folder")
    return None


def _nifti_4d(path: Path, n: int) -> dict[str, Any]:
    item: dict[str, Any] = {"image": str(path), "name": _stem(path), "file": str(path)}
    try:
        import nibabel as nib

        shape = tuple(nib.load(str(path)).shape)
    except Exception as e:  # unreadable: the loader will say why
        item["error"] = f"{path.name}: cannot read its NIfTI header ({type(e).__name__}: {e})"
        return item
    if len(shape) != 4 or shape[3] != n:
        item["error"] = (
            f"{path.name}: a single-file case must be 4D with {n} volumes (one per sequence), its shape is {shape}"
        )
    return item


def _from_datalist(path: Path, split: str) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, Mapping):
        if split not in data:
            raise DataValidationError(f"{path}: no split {split!r} in the datalist (it has {sorted(data)})")
        data = data[split]
    if not isinstance(data, list):
        raise DataValidationError(f"{path}: a datalist's split {split!r} must be a list of items")
    base = path.parent
    items = []
    for i, entry in enumerate(data):
        entry = {"image": entry} if isinstance(entry, (str, list)) else dict(entry)
        if "image" not in entry:
            raise DataValidationError(f"{path}: item {i} of split {split!r} has no 'image'")
        image = entry["image"]
        resolve = lambda p: str(p if Path(p).is_absolute() else base / p)
        entry["image"] = [resolve(p) for p in image] if isinstance(image, list) else resolve(image)
        first = entry["image"][0] if isinstance(entry["image"], list) and entry["image"] else entry["image"]
        entry.setdefault("file", str(first))
        if "name" not in entry:
            p = Path(f"{first}")
            entry["name"] = p.parent.name if isinstance(entry["image"], list) else _stem(p)
        items.append(entry)
    return items


def list_mri_cases(
    input: str | os.PathLike,
    sequences: Sequence[str] = ("flair", "t1", "t1ce", "t2"),
    split: str = "test",
) -> list[dict[str, Any]]:
    """One item per case: ``{"image": path or [path per sequence], "name": case id, "file": its input path}``.

    The sequences come in the order of ``sequences`` (the network's channel order). Items are sorted
    by path. A case missing a sequence carries ``"error"`` (see the module doc).

    Raises:
        FileNotFoundError: ``input`` does not exist.
        DataValidationError: (a ``ValueError``) a folder holding no case, a datalist without the split.
    """
    path = Path(input)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (the MRI input)")
    sequences = [f"{s}" for s in sequences]
    if path.is_file():
        if path.name.lower().endswith(".json"):
            return _from_datalist(path, split)
        if _is_nifti(path):
            return [_nifti_4d(path, len(sequences))]
        raise DataValidationError(f"{path}: give a datalist .json, a 4D NIfTI, or a folder of cases")
    case = _case_folder(path, sequences)
    if case is not None:
        return [case]
    items: list[dict[str, Any]] = []
    for entry in _visible(path):
        if entry.is_dir():
            sub = _case_folder(entry, sequences)
            if sub is None:
                sub = {
                    "image": str(entry),
                    "name": entry.name,
                    "file": str(entry),
                    "error": f"case {entry.name}: no sequence file or folder ({', '.join(sequences)}) in {entry}",
                }
            items.append(sub)
        elif _is_nifti(entry):
            items.append(_nifti_4d(entry, len(sequences)))
    if not items:
        raise DataValidationError(
            f"{path}: no MRI case in this folder (NIfTI sequence files, 4D NIfTI files or case folders)"
        )
    return items


class RaiseCaseError:
    """A dictionary transform raising an item's listing ``"error"`` (first in the preprocessing).

    :func:`list_mri_cases` lists a case without all its sequences with the reason; raising it makes
    :class:`~mimtl.data.TolerantDataset` report the row as ``failed: CaseListingError: <reason>``
    instead of loading three sequences into a four-channel network. The key is removed from good items.
    """

    def __init__(self, key: str = "error") -> None:
        self.key = key

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        reason = data.get(self.key)
        if reason:
            raise CaseListingError(f"{reason}")
        return {k: v for k, v in data.items() if k != self.key}
