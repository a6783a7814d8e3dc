"""JSRT chest radiographs (Shiraishi et al. 2000) with the SCR masks (van Ginneken et al. 2006).

Layout as published::

    All247images/JPCLN001.IMG ... JPCLN154.IMG   154 images with a lung nodule
    All247images/JPCNN001.IMG ... JPCNN093.IMG   93 without
    scratch/fold1/masks/{left lung,right lung,heart,left clavicle,right clavicle}/JPCLN001.gif ...
    scratch/fold2/masks/...                      (the SCR archive; the top folder's name varies)

A JSRT ``.IMG`` file is raw pixel data without a header: 2048 x 2048 pixels, 12 bits stored in
16-bit big-endian words, row by row from the top, 0.175 mm pixels. The stored values are
film-density-like: *high = dark* (air), so they are inverted for mimtl's bright = dense
convention. SCR masks are 1024 x 1024 GIFs (0.35 mm pixels; half the image's resolution), 255
inside the structure; "left" is the patient's left (the right side of the image). SCR divides
the 247 images into two folds of 124 and 123 images, used as training and test.

Reading ``.IMG``: :class:`~mimtl.io.JSRTReader` (a MONAI ``ImageReader``, re-exported here),
which :class:`~mimtl.io.MedicalImageReader` uses for such files. For pipelines that should not
depend on it, :func:`convert_jsrt` writes NIfTI (values and spacing kept) or 16-bit PNG files instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mimtl.data.adapters._common import (
    check_fraction,
    empty_datalist,
    find_dir,
    name_list,
    report_missing,
    require_dir,
    seeded_split,
)
from mimtl.data.validate import DataValidationError
from mimtl.io.jsrt import JSRT_BITS, JSRT_SIZE, JSRT_SPACING_MM, JSRTReader, read_jsrt
from mimtl.io.meta import ImageReadError

__all__ = [
    "JSRT_BITS",
    "JSRT_SIZE",
    "JSRT_SPACING_MM",
    "SCR_LABELS",
    "SCR_STRUCTURES",
    "JSRTReader",
    "convert_jsrt",
    "jsrt_datalist",
    "read_jsrt",
    "write_scr_label_map",
]

#: The SCR mask folders (structure names as the SCR archive spells them).
SCR_STRUCTURES: tuple[str, ...] = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
#: Label values of the multi-class map :func:`write_scr_label_map` writes (0 is background).
SCR_LABELS: dict[str, int] = {"left lung": 1, "right lung": 2, "heart": 3, "left clavicle": 4, "right clavicle": 5}

_LAYOUT = (
    "All247images/JPC[LN]Nnnn.IMG and the SCR masks fold1/masks/<structure>/JPC[LN]Nnnn.gif and "
    "fold2/masks/... (structures: left lung, right lung, heart, left clavicle, right clavicle)"
)
_NAME = re.compile(r"^JPC(LN|NN)(\d{3})$", re.IGNORECASE)


def convert_jsrt(path: str | os.PathLike, out: str | os.PathLike, invert: bool = True) -> Path:
    """Write a JSRT ``.IMG`` as NIfTI (``.nii``/``.nii.gz``, 0.175 mm spacing kept) or 16-bit PNG.

    The NIfTI array is stored ``[x, y]`` with affine ``diag(0.175, 0.175, 1)``, so MONAI's
    ``NibabelReader`` returns the same orientation as ``JSRTReader`` and ``PILReader`` (the SCR
    masks). A PNG keeps the 12-bit values (``4095 - stored`` when ``invert``) but no spacing.

    Returns:
        The path written.
    """
    pixels = read_jsrt(path, invert=invert)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = out.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        image = nib.Nifti1Image(
            np.ascontiguousarray(pixels.T.astype(np.int16)), np.diag([JSRT_SPACING_MM, JSRT_SPACING_MM, 1.0, 1.0])
        )
        image.header.set_xyzt_units("mm")
        nib.save(image, str(out))
    elif name.endswith(".png"):
        from PIL import Image

        Image.fromarray(pixels.astype(np.uint16)).save(out)
    else:
        raise ValueError(f"convert_jsrt writes .nii, .nii.gz or .png, not '{out.name}'.")
    return out


def write_scr_label_map(masks: dict[str, str | os.PathLike], out: str | os.PathLike) -> Path:
    """Combine SCR structure masks into one label PNG (0 background, :data:`SCR_LABELS` values).

    Structures are painted in the order given; where masks overlap (clavicles over the lungs),
    the later one wins.

    Args:
        masks: structure name (a key of :data:`SCR_LABELS`) -> GIF path.
        out: the PNG to write.

    Returns:
        The path written.
    """
    from PIL import Image

    label = None
    for structure, path in masks.items():
        with Image.open(path) as image:
            inside = np.asarray(image.convert("L")) > 127
        if label is None:
            label = np.zeros(inside.shape, dtype=np.uint8)
        elif inside.shape != label.shape:
            raise ImageReadError(path, f"mask shape {inside.shape} differs from the other masks' {label.shape}")
        label[inside] = SCR_LABELS[structure]
    if label is None:
        raise ValueError("write_scr_label_map needs at least one mask.")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label).save(out)
    return out


def _key(structure: str) -> str:
    return structure.replace(" ", "_")


def jsrt_datalist(
    root: str | os.PathLike,
    structures: Sequence[str] = ("left lung", "right lung", "heart"),
    test_fold: int = 2,
    val_fraction: float = 0.1,
    seed: int = 0,
    label_dir: str | os.PathLike | None = None,
    on_missing: str = "error",
) -> dict[str, Any]:
    """A MONAI datalist of JSRT with the SCR masks: SCR's two folds as training and test.

    Each item holds the image and one mask path per structure (``left_lung``, ``right_lung``,
    ``heart``, ...); with ``label_dir`` the masks are also combined into one label map per
    image (0 background, 1 left lung, 2 right lung, 3 heart, 4/5 clavicles) written there as
    PNG, under ``label``. Masks are 1024 x 1024 while the images are 2048 x 2048: resize one to
    the other in the pipeline (``spacing`` and ``label_spacing`` say by how much).

    Args:
        root: the folder holding ``All247images/`` and the SCR ``fold1``/``fold2`` folders.
        structures: the SCR structures to list (see :data:`SCR_STRUCTURES`).
        test_fold: the SCR fold (1 or 2) used as test; the other is training.
        val_fraction: fraction of the training fold's images for validation (seeded,
            stratified by nodule / no nodule).
        seed: seed of that split.
        label_dir: where to write the combined label maps (None: do not write them).
        on_missing: an image without every requested mask: ``"error"`` (one error listing all)
            or ``"skip"`` (listed under ``skipped``).

    Returns:
        ``{"training", "validation", "test": [{"image", "left_lung", ..., ("label"), "nodule",
        "fold", "id", "spacing", "label_spacing"}], "labels": {...}, "skipped": [...]}``.

    Raises:
        DataValidationError: no ``All247images/*.IMG`` or no SCR ``masks`` folders under ``root``.
    """
    structures = name_list(structures)
    unknown = [s for s in structures if s not in SCR_STRUCTURES]
    if unknown or not structures:
        raise ValueError(f"structures {unknown or list(structures)} are not SCR structures {SCR_STRUCTURES}.")
    if test_fold not in (1, 2):
        raise ValueError(f"test_fold must be 1 or 2, not {test_fold!r}.")
    val_fraction = check_fraction("val_fraction", val_fraction)
    root = require_dir(root, "JSRT", _LAYOUT)
    image_dir = find_dir(root, lambda f: any(f.glob("JPC*.IMG")) or any(f.glob("JPC*.img")), depth=3)
    if image_dir is None:
        raise DataValidationError(f"JSRT: no JPCLNnnn.IMG / JPCNNnnn.IMG files under '{root}': expected {_LAYOUT}.")
    folds: dict[int, Path] = {}
    for fold in (1, 2):
        found = find_dir(root, lambda f, n=fold: f.name == f"fold{n}" and (f / "masks").is_dir(), depth=3)
        if found is not None:
            folds[fold] = found / "masks"
    if not folds:
        raise DataValidationError(
            f"JSRT: no SCR masks under '{root}': expected fold1/masks/<structure>/JPCLNnnn.gif and fold2/masks/... "
            f"from the SCR database (structures: {', '.join(SCR_STRUCTURES)})."
        )
    out = empty_datalist("jsrt_scr", f"JSRT from {image_dir} with SCR masks; SCR fold {test_fold} as test")
    members = {fold: {p.stem.upper() for p in (masks / structures[0]).glob("*.gif")} for fold, masks in folds.items()}
    items, missing = [], []
    for image in sorted(p for p in image_dir.iterdir() if p.suffix.lower() == ".img" and _NAME.match(p.stem)):
        case = image.stem.upper()
        fold = next((f for f, names in members.items() if case in names), None)
        if fold is None:
            missing.append(
                (str(image), f"in no SCR fold (no {structures[0]}/{case}.gif in {', '.join(map(str, folds.values()))})")
            )
            continue
        item: dict[str, Any] = {"image": str(image)}
        lacking = []
        for structure in structures:
            mask = folds[fold] / structure / f"{case}.gif"
            if not mask.is_file():
                alt = folds[fold] / structure / f"{image.stem}.gif"
                mask = alt if alt.is_file() else mask
            if mask.is_file():
                item[_key(structure)] = str(mask)
            else:
                lacking.append(structure)
        if lacking:
            missing.append((str(image), f"no SCR mask for {', '.join(lacking)} in {folds[fold]}"))
            continue
        item.update(
            nodule=1 if _NAME.match(image.stem).group(1).upper() == "LN" else 0,
            fold=fold,
            id=case,
            spacing=[JSRT_SPACING_MM, JSRT_SPACING_MM],
            label_spacing=[2 * JSRT_SPACING_MM, 2 * JSRT_SPACING_MM],
        )
        items.append(item)
    dropped = report_missing(missing, on_missing, "JSRT", root, out["skipped"])
    items = [item for item in items if item["image"] not in dropped]
    if not items:
        raise DataValidationError(f"JSRT: no image of '{image_dir}' has SCR masks; expected {_LAYOUT}.")
    if label_dir is not None:
        label_dir = Path(label_dir).expanduser().absolute()
        for item in items:
            path = label_dir / f"{item['id']}.png"
            write_scr_label_map({s: item[_key(s)] for s in structures}, path)
            item["label"] = str(path)
    train = [item for item in items if item["fold"] != test_fold]
    parts = seeded_split(
        train,
        {"validation": val_fraction},
        seed=seed,
        group=lambda item: item["id"],
        stratify=lambda item: item["nodule"],
    )
    out.update(
        training=parts["training"],
        validation=parts["validation"],
        test=[item for item in items if item["fold"] == test_fold],
    )
    out["labels"] = {"0": "background", **{str(SCR_LABELS[s]): s for s in structures}}
    return out
