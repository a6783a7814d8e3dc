"""Datalists: MONAI's list-of-dicts input, read from JSON or a folder, validated up front."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mimtl.data.validate import DataValidationError, validate_datalist

__all__ = [
    "IMAGE_SUFFIXES",
    "ON_ERROR",
    "check_labels",
    "datalist_labels",
    "list_images",
    "load_datalist",
    "split_ids",
    "subsample",
]

logger = logging.getLogger(__name__)

#: File endings :func:`list_images` picks up (lower case; ``.nii.gz`` counts as one).
IMAGE_SUFFIXES = (
    ".dcm",
    ".dicom",
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".nii",
    ".nii.gz",
    ".mha",
    ".mhd",
    ".nrrd",
)  # .bmp: the ISBI 2015 cephalometric films
#: What :func:`list_images` does with a bad file: stop before any work, or pass it on.
ON_ERROR = ("raise", "keep")

_MAX_LISTED = 20


def _read_list_file(path: Path) -> list[Path]:
    """The paths of a text file, one per line; blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataValidationError(f"'{path}' is neither an image nor a text file listing images.") from None
    names = [line.strip() for line in lines]
    # relative entries are relative to the list file's folder, so list and images can move together
    return [Path(n) if os.path.isabs(n) else path.parent / n for n in names if n and not n.startswith("#")]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataValidationError(f"Datalist file '{path}' does not exist.")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataValidationError(f"Datalist '{path}' is not valid JSON: {e}") from None
    if not isinstance(content, dict):
        raise DataValidationError(f"Datalist '{path}' is not a JSON object of named lists.")
    return content


def _datalist_items(
    path: Path,
    content: Mapping[str, Any],
    data_list_key: str,
    base_dir: str | os.PathLike | None = None,
    keys: Sequence[str] = ("image",),
) -> list[dict]:
    """The ``data_list_key`` items of datalist ``path`` (read into ``content``), paths under ``keys`` made absolute."""
    if not isinstance(content.get(data_list_key), list):
        raise DataValidationError(f"Datalist '{path}' has no '{data_list_key}' list (has: {', '.join(content)}).")
    # Relative paths are relative to base_dir, by default the datalist's folder (as in MONAI).
    base = Path(base_dir) if base_dir is not None else path.parent
    items = [dict(item) for item in content[data_list_key]]
    for item in items:
        for key in keys:
            if isinstance(item.get(key), str):
                item[key] = str(base / item[key])
            elif isinstance(item.get(key), list):
                # a list of paths (e.g. BraTS sequences); numbers (a class-index or multi-hot label named
                # in keys) are left as they are
                item[key] = [str(base / v) if isinstance(v, str) else v for v in item[key]]
    return items


def _file_ids(item: Any, key: str, base: Path) -> tuple[str, ...] | None:
    """The normalised absolute paths of ``item[key]`` (a path or a list of paths), None when it holds none."""
    value = item.get(key) if isinstance(item, Mapping) else None
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(n, str) for n in names):
        return None
    return tuple(os.path.normpath(n if os.path.isabs(n) else os.path.join(base, n)) for n in names)


def _check_files(
    path: Path,
    content: Mapping[str, Any],
    data_list_key: str,
    base: Path,
    keys: Sequence[str],
    data_root: str | os.PathLike | None,
) -> None:
    """Refuse a film listed in two splits (test data leaking into training) and, with ``data_root``,
    any path that resolves outside it; warn about a film listed twice in one split.

    Paths are compared as written, joined to ``base`` and normalised (links not followed, so a data
    root made of symbolic links keeps working).

    Raises:
        DataValidationError: listing every such entry.
    """
    key = keys[0] if keys else "image"
    problems, repeated, seen = [], [], {}
    for i, item in enumerate(content[data_list_key]):
        ident = _file_ids(item, key, base)
        if ident is None:
            continue
        if ident in seen:
            repeated.append(f"entry {i} repeats entry {seen[ident]} ({item[key]})")
        seen.setdefault(ident, i)
    for other, items in content.items():
        if other == data_list_key or not isinstance(items, list):
            continue
        for j, item in enumerate(items):
            ident = _file_ids(item, key, base)
            if ident in seen:
                problems.append(
                    f"entry {seen[ident]} '{key}': {item[key]} is also in '{other}' (entry {j}): "
                    f"one film in two splits leaks it between them"
                )
    if data_root is not None:
        root = os.path.normpath(os.path.abspath(data_root))
        for i, item in enumerate(content[data_list_key]):
            for k in keys:
                for full in _file_ids(item, k, base) or ():
                    if os.path.commonpath([root, os.path.abspath(full)]) != root:
                        problems.append(f"entry {i} '{k}': {full} is outside the data root {root}")
    if repeated:
        logger.warning(
            "%s (%s): %d film(s) listed more than once: %s",
            path,
            data_list_key,
            len(repeated),
            "; ".join(repeated[:_MAX_LISTED]),
        )
    if problems:
        listed = "\n  - ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise DataValidationError(
            f"{len(problems)} problem(s) in '{path}' ({data_list_key}); nothing was trained:\n  - {listed}{more}"
        )


def list_images(
    source: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    key: str = "image",
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    recursive: bool = False,
    deep: bool = False,
    on_error: str = "raise",
    *,
    data_list_key: str = "test",
    folder: str | os.PathLike | None = None,
) -> list[dict]:
    """A datalist ``[{key: path}, ...]`` of the images in ``source``: for inference on a user's files.

    ``source`` may be

    - a folder: its files ending in one of ``suffixes`` (``recursive``: also in sub-folders), sorted;
    - one image file;
    - a text file (``.txt``, ``.lst`` or ``.list``) with one path per line (blank lines and ``#``
      comments skipped, relative paths relative to the text file);
    - a datalist JSON (``.json``): the items of its ``data_list_key`` list, with every other key
      kept, so that per-image values such as a landmark set's ``"spacing"`` reach the transforms;
    - a list of paths (kept in the given order).

    Files given explicitly (one file, a list, a text file, a datalist) are taken whatever their suffix.

    Args:
        source: the images, see above.
        key: the key of each entry.
        suffixes: file endings picked up in a folder (lower case).
        recursive: search a folder's sub-folders too.
        deep: with ``on_error="raise"``, decode every file while checking it, not only read its
            header (see :func:`~mimtl.data.validate.check_image_file`).
        on_error: ``"raise"`` (default, for training and evaluation) checks every file now and
            raises one error listing every bad one; ``"keep"`` (for inference) checks nothing and
            passes every file on, so that a bad one fails inside
            :class:`~mimtl.data.TolerantDataset` and is listed in the output with its reason.
        data_list_key: the list of a datalist JSON ``source`` to take.
        folder: former name of ``source`` (deprecated).

    Raises:
        DataValidationError: ``source`` does not exist, holds no image files, or (``on_error="raise"``)
            some file is missing or unusable; a datalist without ``data_list_key`` or an item
            without ``key``.
        ValueError: an unknown ``on_error``.
    """
    if folder is not None:
        if source is not None:
            raise ValueError("give source or folder (its former name), not both.")
        warnings.warn("list_images(folder=...) is deprecated, use source=...", DeprecationWarning, stacklevel=2)
        source = folder
    if source is None:
        raise ValueError("list_images needs a source: a folder, an image file, a text file of paths or a list.")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}.")
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        name = str(root)
        if root.is_file() and root.suffix.lower() == ".json":
            items = _datalist_items(root, _read_json(root), data_list_key, keys=(key,))
            missing = [i for i, item in enumerate(items) if not item.get(key)]
            if missing:
                raise DataValidationError(
                    f"Datalist '{root}' ({data_list_key}): items {missing[:_MAX_LISTED]} have no '{key}'."
                )
            if not items:
                raise DataValidationError(f"Datalist '{root}' has an empty '{data_list_key}' list.")
            return items if on_error == "keep" else list(validate_datalist(items, keys=(key,), source=name, deep=deep))
        if root.is_dir():
            pattern = "**/*" if recursive else "*"
            found = root.glob(pattern)
            files = sorted(p for p in found if p.is_file() and p.name.lower().endswith(tuple(suffixes)))
            if not files:
                raise DataValidationError(f"No image files ({', '.join(suffixes)}) in '{root}'.")
        elif root.is_file():
            is_image = root.name.lower().endswith(tuple(suffixes))
            is_list = not is_image and root.suffix.lower() in (".txt", ".lst", ".list")
            files = _read_list_file(root) if is_list else [root]
            if not files:
                raise DataValidationError(f"The list file '{root}' names no image files.")
        else:
            raise DataValidationError(
                f"Image source '{root}' does not exist (expected a folder, an image or a text file listing images)."
            )
    else:
        files = [Path(p) for p in source]
        name = "the list of images"
        if not files:
            raise DataValidationError("The list of images is empty.")
    items = [{key: str(f)} for f in files]
    if on_error == "keep":
        return items
    return list(validate_datalist(items, keys=(key,), source=name, deep=deep))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)  # bool included (a JSON true/false label)


def _label_problem(label: Any, num_labels: int) -> str | None:
    """Why ``label`` is not a label for ``num_labels`` outputs, or None when it is."""
    if isinstance(label, Mapping) or isinstance(label, str):
        return f"label {label!r} is not a class index or a list of {num_labels} values"
    if _is_number(label):
        if not math.isfinite(label):
            return f"label is {label} (use -1 with label_mask 0 for an unknown value)"
        if num_labels == 1:
            return None  # one output: a binary (or regression) target, any finite value
        if float(label) != int(label) or not 0 <= int(label) < num_labels:
            return f"class index {label!r} is not in [0, {num_labels})"
        return None
    if label is None:
        return "label is null"
    if hasattr(label, "tolist"):  # numpy/torch arrays
        label = label.tolist()
    if not isinstance(label, (list, tuple)):
        return f"label {label!r} is not a class index or a list of {num_labels} values"
    if len(label) != num_labels:
        return f"label has {len(label)} values, expected {num_labels}"
    not_numbers = [j for j, v in enumerate(label) if not _is_number(v) and v is not None]
    if not_numbers:
        shown = ", ".join(f"[{j}]={label[j]!r}" for j in not_numbers[:5])
        return f"label values {shown} are not numbers"
    missing = [j for j, v in enumerate(label) if v is None or not math.isfinite(v)]
    if missing:
        shown = ", ".join(f"[{j}]={'null' if label[j] is None else label[j]}" for j in missing[:5])
        return (
            f"label values {shown} are not finite (null/NaN/Inf); mark an unknown value with -1 and "
            "label_mask 0, as the CheXpert adapter's 'ignore' policy does"
        )
    return None


def check_labels(
    items: Sequence[Mapping[str, Any]],
    num_labels: int,
    source: str = "datalist",
    label_names: Sequence[str] | None = None,
    key: str = "label",
    strict: bool = True,
) -> None:
    """Check that every item's ``key`` is a label for ``num_labels`` outputs.

    A label is a list of ``num_labels`` finite numbers (multi-label or one-hot; ``-1`` is allowed,
    it is how the CheXpert adapter's ``"ignore"`` policy marks an uncertain finding, with
    ``label_mask`` 0 there), or an integer class index in ``[0, num_labels)`` (with
    ``num_labels == 1``: any finite number, a binary target). ``null``/NaN values are errors.

    Args:
        items: the datalist entries.
        num_labels: the number of outputs of the model.
        source: how to name the datalist in the error.
        label_names: the label names, shown in the error.
        key: the label key.
        strict: also refuse items without ``key`` and file-path labels (segmentation masks); when
            False those are not checked.

    Raises:
        DataValidationError: listing every bad item with its index, image and problem.
    """
    problems = []
    for i, item in enumerate(items):
        label = item.get(key, ...)
        if label is ... or isinstance(label, str):
            if strict:
                what = "has no label" if label is ... else f"label is a file path ({label}), not a class label"
                problems.append(f"item {i} ({item.get('image', '?')}): {what}")
            continue
        problem = _label_problem(label, num_labels)
        if problem:
            problems.append(f"item {i} ({item.get('image', '?')}): {problem}")
    if problems:
        names = f" ({', '.join(map(str, label_names))})" if label_names else ""
        listed = "\n  - ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise DataValidationError(
            f"{len(problems)} label problem(s) in {source}: expected {num_labels} label(s){names}:\n  - {listed}{more}"
        )


def _positives(label: Any, num_labels: int) -> list[int]:
    """The labels an item is positive for: its class index, or the entries in [0.5, 1] of a vector
    (of a scalar with one output)."""
    if isinstance(label, str) or label is None or isinstance(label, Mapping):
        return []
    if _is_number(label):
        if not math.isfinite(label):
            return []
        if num_labels == 1:
            return [0] if 0.5 <= label <= 1.0 else []
        return [int(label)] if float(label) == int(label) else []
    if hasattr(label, "tolist"):
        label = label.tolist()
    if not isinstance(label, (list, tuple)):
        return []
    return [j for j, v in enumerate(label) if _is_number(v) and 0.5 <= v <= 1.0]


def subsample(
    items: Sequence[dict],
    fraction: float,
    seed: int = 0,
    key: str = "label",
    num_labels: int | None = None,
) -> list[dict]:
    """A seeded random subset of ``round(fraction * len(items))`` items (at least 1) that keeps every label.

    The training-fraction experiment (how does each method do with 1%, 10%, ... of the training
    data) needs subsets that are reproducible and do not lose a finding altogether. Items are
    ranked by a hash of ``(seed, image path)``, so the subset depends on the seed and the item
    paths only (not on the order of the list) and, for one seed, a smaller fraction gives a subset
    of a larger one. Stratification: for every label with a positive in ``items`` (an entry in
    [0.5, 1] of a label vector, or a class index), rarest label first, the best-ranked positive
    item is kept, as long as the subset size allows; the rest of the subset is filled in rank order.

    Args:
        items: the datalist entries.
        fraction: the share of the items to keep, in (0, 1].
        seed: the seed of the subset.
        key: the label key.
        num_labels: the number of labels (default: from the items' label vectors).

    Returns:
        The kept items, in their original order.

    Raises:
        ValueError: ``fraction`` is not in (0, 1].
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1] (the share of the training items to keep), got {fraction}.")
    n = len(items)
    if fraction == 1.0 or n == 0:
        return list(items)
    size = max(1, int(math.floor(n * fraction + 0.5)))  # round half up

    def rank(i: int) -> tuple[str, int]:
        ident = f"{items[i].get('image', '')}" or f"#{i}"
        return hashlib.sha256(f"{seed}:{ident}".encode()).hexdigest(), i

    order = sorted(range(n), key=rank)
    if num_labels is None:  # vectors: their length; class indices: the largest + 1 (0/1 as two classes)
        labels = [item.get(key) for item in items]
        lengths = [len(v) for v in labels if isinstance(v, (list, tuple))]
        indices = [int(v) for v in labels if _is_number(v) and math.isfinite(v)]
        num_labels = max(lengths, default=0) or max(max(indices, default=0) + 1, 2)
    first_positive: dict[int, int] = {}  # label -> best-ranked positive item
    count: dict[int, int] = {}
    for i in order:
        for j in _positives(items[i].get(key), num_labels):
            first_positive.setdefault(j, i)
            count[j] = count.get(j, 0) + 1
    chosen: list[int] = []
    covered: set[int] = set()
    for j in sorted(count, key=lambda j: (count[j], j)):  # rarest first: the ones a random draw loses
        if j in covered or len(chosen) >= size:
            continue
        chosen.append(first_positive[j])
        covered.update(_positives(items[first_positive[j]].get(key), num_labels))
    taken = set(chosen)
    for i in order:
        if len(taken) >= size:
            break
        taken.add(i)
    return [items[i] for i in sorted(taken)]


def load_datalist(
    path: str | os.PathLike,
    data_list_key: str | Sequence[str] = "training",
    base_dir: str | os.PathLike | None = None,
    keys: Sequence[str] = ("image",),
    deep: bool = False,
    num_labels: int | None = None,
    fraction: float = 1.0,
    fraction_seed: int = 0,
    data_root: str | os.PathLike | None = None,
) -> list[dict]:
    """Read a MONAI (Decathlon-style) datalist JSON, resolve its paths, check its labels and validate it.

    Use it in a bundle config as the ``data`` of a dataset, so a broken datalist stops the run
    before the first epoch with one message that lists every bad file or label. Files are checked
    by their headers unless ``deep``, and under ``torch.distributed`` by rank 0 only (see
    :func:`~mimtl.data.validate.validate_datalist`).

    Labels (``"label"`` of each item) are checked when ``num_labels`` is given, or when the JSON
    has a top-level ``"labels"`` list of names (as the mimtl adapters write): each must be a list
    of that many finite numbers (``-1`` allowed: the CheXpert adapter's ``"ignore"`` mark, with
    ``label_mask`` 0) or an integer class index in ``[0, num_labels)``; ``null``/NaN is an error.
    With only the ``"labels"`` list, items without a label and file-path labels (segmentation
    masks) are not checked; with ``num_labels`` they are errors.

    ``fraction`` < 1 keeps a seeded random subset of the items (the paper's training-fraction
    experiment: train on 1%, 10%, ... of the training data), stratified so that every label with a
    positive keeps at least one (see :func:`subsample`). Apply it to the training list only.

    Args:
        path: the datalist JSON.
        data_list_key: the list to read (``"training"``, ``"validation"``, ...), or several, concatenated in order.
        base_dir: the folder relative paths are relative to (default: the JSON's folder).
        keys: the keys whose values are file paths (resolved and validated).
        deep: decode every file while validating, not only read its header (see
            :func:`~mimtl.data.validate.check_image_file`); a config switch, ``deep: true``.
        num_labels: the number of model outputs the labels must fit; None takes the length of
            the JSON's ``"labels"`` list, if any, else labels are not checked.
        fraction: the share of the items to keep, in (0, 1].
        fraction_seed: the seed of that subset (same seed, same subset).
        data_root: when given, every file must lie under this folder (a datalist from elsewhere
            cannot reach the rest of the disk); None (default) takes the paths as given.

    Raises:
        DataValidationError: a missing or invalid JSON, no ``data_list_key`` list, a label of the
            wrong size or value, a ``num_labels`` that contradicts the ``"labels"`` list, a film
            that is also in another split, a path outside ``data_root``, or bad files. A film
            listed twice in the same split is logged as a warning.
        ValueError: ``fraction`` is not in (0, 1].
    """
    if isinstance(data_list_key, (list, tuple)):  # several splits, in order (e.g. features of every case)
        common = dict(base_dir=base_dir, keys=keys, deep=deep, num_labels=num_labels, data_root=data_root)
        return [
            item
            for key in data_list_key
            for item in load_datalist(path, key, fraction=fraction, fraction_seed=fraction_seed, **common)
        ]
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1] (the share of the training items to keep), got {fraction}.")
    path = Path(path)
    content = _read_json(path)
    items = _datalist_items(path, content, data_list_key, base_dir, keys)
    _check_files(path, content, data_list_key, Path(base_dir) if base_dir is not None else path.parent, keys, data_root)
    names = content.get("labels")
    names = list(names) if isinstance(names, list) else None  # segmentation lists map ids to names
    if num_labels is not None:
        if int(num_labels) < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}.")
        # one sigmoid output for a two-class list (negative, positive) is a binary model, not a mismatch
        binary = int(num_labels) == 1 and names is not None and len(names) == 2
        if names is not None and len(names) != int(num_labels) and not binary:
            raise DataValidationError(
                f"Datalist '{path}' names {len(names)} labels ({', '.join(map(str, names))}) but "
                f"num_labels={num_labels}: the model and the datalist disagree."
            )
        check_labels(items, int(num_labels), source=f"'{path}' ({data_list_key})", label_names=names)
    elif names:  # not strict: items without labels, and mask files, are not class labels to check
        check_labels(items, len(names), source=f"'{path}' ({data_list_key})", label_names=names, strict=False)
    if fraction < 1.0:
        n = len(items)
        count = num_labels if num_labels is not None else (len(names) if names else None)
        items = subsample(items, fraction, seed=fraction_seed, num_labels=count)
        logger.info(
            "%s: kept %d of %d '%s' items (fraction %g, seed %d)",
            path,
            len(items),
            n,
            data_list_key,
            fraction,
            fraction_seed,
        )
    return list(validate_datalist(items, keys=keys, source=str(path), deep=deep))


def datalist_labels(
    path: str | os.PathLike | None, key: str = "labels", default: Sequence[str] | None = None
) -> list[str]:
    """The label names of a datalist JSON: its top-level ``"labels"`` list (as mimtl's adapters write).

    A bundle reads its class names (and so its number of outputs) from here, so pointing it at
    another data set's datalist is one override. Landmark datalists name their points under
    ``key="landmark_names"``. With ``path`` None, ``default`` is returned: an inference config
    takes the names of its metadata unless it is pointed at the datalist a model was trained on.

    Raises:
        DataValidationError: the file is missing, not JSON, or has no list of label names.
        ValueError: neither ``path`` nor ``default`` is given.
    """
    if path is None:
        if default is None:
            raise ValueError("datalist_labels needs a datalist path or default names.")
        return [f"{n}" for n in default]
    path = Path(path)
    names = _read_json(path).get(key)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataValidationError(
            f"Datalist '{path}' has no top-level \"{key}\" list of names; add one "
            f"(in the order of the model outputs) or set the names in the config."
        )
    return names


def split_ids(path: str | os.PathLike, splits: str | Sequence[str], key: str = "name") -> list[str]:
    """The ``key`` value (a case id) of every item of ``splits`` of a datalist JSON, in order.

    A bundle config names the cases of a split this way, e.g. the training cases a grading model
    may see: ``{_target_: mimtl.data.datalist.split_ids, path: '@datalist', splits: [training, validation]}``.

    Raises:
        DataValidationError: the file is missing or not JSON, a split is missing, or an item has no ``key``.
    """
    path = Path(path)
    content = _read_json(path)
    ids = []
    for split in [splits] if isinstance(splits, str) else list(splits):
        items = content.get(split)
        if not isinstance(items, list):
            raise DataValidationError(f"Datalist '{path}' has no \"{split}\" list.")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or key not in item:
                raise DataValidationError(f"Datalist '{path}' {split} entry {i} has no \"{key}\" (the case id).")
            ids.append(str(item[key]))
    return ids
