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

Reading ``.IMG``: :class:`JSRTReader` is a MONAI ``ImageReader``, registered with ``LoadImage``
when this module is imported (``LoadImage(reader="JSRTReader")``, or
``reader="mimtl.io.adapters.JSRTReader"`` in a bundle config, which imports it). It claims
only ``.img`` files whose size is that of a square 16-bit image and that have no Analyze
``.hdr`` beside them. For pipelines that should not depend on it, :func:`convert_jsrt` writes
NIfTI (values and spacing kept) or 16-bit PNG files instead.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, ensure_tuple

from mimtl.io import ImageNotFoundError, ImageReadError, _insert_reader
from mimtl.io.adapters._common import (
    check_fraction,
    empty_datalist,
    find_dir,
    name_list,
    report_missing,
    require_dir,
    seeded_split,
)
from mimtl.io.validate import DataValidationError

__all__ = [
    "JSRT_BITS",
    "JSRT_SIZE",
    "JSRT_SPACING_MM",
    "JSRTReader",
    "SCR_LABELS",
    "SCR_STRUCTURES",
    "convert_jsrt",
    "jsrt_datalist",
    "read_jsrt",
    "write_scr_label_map",
]

#: Pixels per side of a JSRT image.
JSRT_SIZE = 2048
#: Pixel size in mm.
JSRT_SPACING_MM = 0.175
#: Bits stored per pixel.
JSRT_BITS = 12
#: The SCR mask folders (structure names as the SCR archive spells them).
SCR_STRUCTURES: tuple[str, ...] = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
#: Label values of the multi-class map :func:`write_scr_label_map` writes (0 is background).
SCR_LABELS: dict[str, int] = {"left lung": 1, "right lung": 2, "heart": 3, "left clavicle": 4, "right clavicle": 5}

_LAYOUT = (
    "All247images/JPC[LN]Nnnn.IMG and the SCR masks fold1/masks/<structure>/JPC[LN]Nnnn.gif and "
    "fold2/masks/... (structures: left lung, right lung, heart, left clavicle, right clavicle)"
)
_NAME = re.compile(r"^JPC(LN|NN)(\d{3})$", re.IGNORECASE)


def _raw_side(path: Path) -> int | None:
    """The side of a square 16-bit raw image of this file's size, None when there is none."""
    size = path.stat().st_size
    if size < 2 or size % 2:
        return None
    side = math.isqrt(size // 2)
    return side if side * side * 2 == size else None


def read_jsrt(path: str | os.PathLike, invert: bool = True) -> np.ndarray:
    """The pixels of a JSRT ``.IMG`` file as a ``(rows, columns)`` uint16 array, top row first.

    Args:
        path: the file (2048 x 2048 in the data set; any square 16-bit big-endian raw file is read).
        invert: return ``4095 - stored`` so that dense structures are bright (the stored values
            are high for dark film).

    Raises:
        ImageNotFoundError: the file does not exist.
        ImageReadError: its size is not that of a square 16-bit image, or values exceed 12 bits.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageNotFoundError(path, "file not found")
    side = _raw_side(path)
    if side is None:
        raise ImageReadError(
            path, f"{path.stat().st_size} bytes is not a square 16-bit raw image (a JSRT .IMG has {2 * JSRT_SIZE**2})"
        )
    stored = np.fromfile(path, dtype=">u2").reshape(side, side)
    top = int(stored.max(initial=0))
    if top >= 1 << JSRT_BITS:
        raise ImageReadError(path, f"value {top} exceeds 12 bits: not JSRT raw data (or not big-endian)")
    pixels = stored.astype(np.uint16)
    return ((1 << JSRT_BITS) - 1 - pixels).astype(np.uint16) if invert else pixels


class JSRTReader(ImageReader):
    """MONAI ``ImageReader`` for the raw ``.IMG`` files of the JSRT database.

    Output: a float32 ``[x, y]`` array (shape ``(columns, rows)``, like ``PILReader`` and
    :class:`~mimtl.io.DicomXrayReader`, so the SCR GIF masks read by ``PILReader`` line up),
    spacing 0.175 mm, affine ``diag(0.175, 0.175, 1, 1)``. Values: ``4095 - stored`` (bright =
    dense, ``invert=True``), divided by 4095 when ``normalize=True`` (default, [0, 1] like
    ``DicomXrayReader``).

    Args:
        invert: invert the stored film-density values so that dense structures are bright.
        normalize: scale the 12-bit range to [0, 1].
        spacing: pixel size in mm (0.175 for JSRT).
        channel_dim: recorded as ``original_channel_dim``; None means no channel.
    """

    suffixes: tuple[str, ...] = ("img",)

    def __init__(
        self,
        invert: bool = True,
        normalize: bool = True,
        spacing: float = JSRT_SPACING_MM,
        channel_dim: str | int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.invert = invert
        self.normalize = normalize
        self.spacing = float(spacing)
        self.channel_dim = float("nan") if channel_dim in (None, "no_channel") else channel_dim

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every file is a ``.img`` of square 16-bit raw size without an Analyze ``.hdr``."""
        for name in ensure_tuple(filename):
            path = Path(f"{name}")
            if path.suffix.lower() != ".img" or path.with_suffix(".hdr").exists() or path.with_suffix(".HDR").exists():
                return False
            try:
                if _raw_side(path) is None:
                    return False
            except OSError:  # missing file: let read() report it
                pass
        return True

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """Read one file (or several, stacked as channels by ``get_data``)."""
        images = [(Path(f"{name}"), read_jsrt(name, invert=self.invert)) for name in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The ``[x, y]`` float32 array and its metadata (several images: stacked on axis 0)."""
        items = img if isinstance(img, list) else [img]
        arrays = []
        for _, pixels in items:
            array = pixels.T.astype(np.float32)  # (rows, columns) -> [x, y]
            if self.normalize:
                array /= float((1 << JSRT_BITS) - 1)
            arrays.append(np.ascontiguousarray(array))
        path = items[0][0]
        affine = np.diag([self.spacing, self.spacing, 1.0, 1.0])
        meta: dict[str, Any] = {
            ImageMetaKey.FILENAME_OR_OBJ: f"{path}",
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(arrays[0].shape, dtype=np.int64),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: self.channel_dim,
            "spacing": np.asarray([self.spacing, self.spacing], dtype=np.float64),
            "spacing_known": True,
            "spacing_source": "JSRT specification (0.175 mm pixels)",
            "bits_stored": JSRT_BITS,
            "photometric_interpretation": "MONOCHROME2" if self.invert else "MONOCHROME1",
            "modality": "",
            "window": np.array([np.nan, np.nan]),
            "intensity_convention": (
                ("4095 - stored" if self.invert else "stored values (high = dark)")
                + (", divided by 4095 ([0, 1])" if self.normalize else "")
            ),
        }
        if len(arrays) == 1:
            return arrays[0], meta
        if any(a.shape != arrays[0].shape for a in arrays):
            raise ImageReadError(path, "images to stack as channels differ in shape")
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta


_insert_reader("jsrtreader", JSRTReader, before="dicomxrayreader")  # DICOM stays first tried


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
