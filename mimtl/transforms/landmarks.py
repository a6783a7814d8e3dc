"""Transforms that keep landmarks with their image, and bring predicted landmarks back to the film.

Landmarks travel as MONAI points: ``(C, N, D)`` tensors in the array-index order of the image's
spatial dimensions (for a 2D film read by MONAI's ``PILReader`` or mimtl's DICOM reader the
array is ``[x, y]``, so a point is ``(x, y)`` in pixels, as annotation files write it). NaN marks
a landmark the annotation lacks; it stays NaN through every transform and is left out of losses
and metrics, never silently dropped.

The pipeline is::

    LoadImaged -> StandardizeImageMetad -> SetPixelSpacingd -> LandmarksToWorldd
        -> any MONAI spatial transforms of the image (Resized, RandAffined, RandFlipd, ...)
        -> ApplyTransformToPointsd(invert_affine=True, refer_keys=image)

:class:`LandmarksToWorldd` writes the points in the world coordinates of the image's affine.
MONAI's spatial transforms update the image affine so that world positions of the anatomy stay
put, so after them one ``ApplyTransformToPointsd(invert_affine=True)`` gives the points in the
pixel grid of the transformed image, whatever the transforms were.

:class:`DecodeLandmarksd` goes the other way for predictions: heatmap peaks in the network's grid
-> world -> pixels of the original file (``original_affine``) -> mm with the pixel spacing, or
pixels when the spacing is unknown (and says which).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.transforms.utils import apply_affine_to_points
from monai.utils import ImageMetaKey

from mimtl.errors import DataValidationError
from mimtl.transforms.heatmaps import LandmarkDecoder

__all__ = [
    "OUTSIDE_MODES",
    "DecodeLandmarksd",
    "LandmarksToWorldd",
    "SetPixelSpacingd",
    "as_points",
]

logger = logging.getLogger(__name__)

#: What :class:`LandmarksToWorldd` does with an annotated point outside its image.
OUTSIDE_MODES: tuple[str, ...] = ("raise", "missing")


def _filename(image: Any) -> str:
    meta = getattr(image, "meta", {}) or {}
    return str(meta.get(ImageMetaKey.FILENAME_OR_OBJ, "<image without file name>"))


def as_points(points: Any, dims: int | None = None) -> torch.Tensor:
    """Landmarks as a float64 ``(N, D)`` tensor: accepts ``[[x, y], ...]``, ``(N, D)`` or ``(1, N, D)``.

    ``None`` entries (JSON ``null``) become NaN.

    Raises:
        ValueError: any other shape, or ``D`` other than ``dims`` when given.
    """
    if isinstance(points, (list, tuple)):
        points = [[math.nan if v is None else v for v in p] if isinstance(p, (list, tuple)) else p for p in points]
    t = torch.as_tensor(np.asarray(points, dtype=np.float64) if not isinstance(points, torch.Tensor) else points)
    t = t.to(torch.float64)
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2 or (dims is not None and t.shape[-1] != dims):
        want = f"(N, {dims})" if dims else "(N, D)"
        raise ValueError(f"landmarks must have shape {want} (one [x, y] row per landmark), got {tuple(t.shape)}.")
    return t


class LandmarksToWorldd(MapTransform):
    """Check annotated landmarks against their image and express them in its world coordinates.

    After this, the points follow every MONAI spatial transform of the image: finish the pipeline
    with ``ApplyTransformToPointsd(keys, refer_keys=image_key, invert_affine=True)``.

    Args:
        keys: keys of the landmark lists (``[[x, y], ...]`` in pixels of the image file, array
            index order, NaN/None for a missing landmark).
        image_key: the loaded image (a MetaTensor, channel first) the landmarks belong to.
        num_landmarks: expected number of landmarks; a file with another number is an error.
        outside: a landmark outside the image (beyond half a pixel from the border pixels):
            ``"raise"`` stops with an error naming the file, ``"missing"`` marks it NaN with a warning.
        allow_missing_keys: don't raise when a key is absent.

    Raises:
        DataValidationError: wrong number of landmarks, a malformed list, or (``outside="raise"``)
            a landmark outside the image; the message names the image file and the landmark.
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str = "image",
        num_landmarks: int | None = None,
        outside: str = "raise",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if outside not in OUTSIDE_MODES:
            raise ValueError(f"outside must be one of {OUTSIDE_MODES}, not {outside!r}.")
        self.image_key = image_key
        self.num_landmarks = num_landmarks
        self.outside = outside

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        spatial = tuple(int(s) for s in image.shape[1:])
        affine = image.affine if isinstance(image, MetaTensor) else torch.eye(len(spatial) + 1, dtype=torch.float64)
        for key in self.key_iterator(d):
            name = _filename(image)
            try:
                points = as_points(d[key], dims=len(spatial)).clone()
            except (ValueError, TypeError) as e:
                raise DataValidationError(f"{name}: landmarks '{key}': {e}") from e
            if self.num_landmarks is not None and points.shape[0] != self.num_landmarks:
                raise DataValidationError(
                    f"{name}: {points.shape[0]} landmarks in '{key}', the model expects {self.num_landmarks}."
                )
            size = torch.as_tensor(spatial, dtype=torch.float64)
            finite = torch.isfinite(points).all(-1)
            outside = finite & ((points < -0.5) | (points > size - 0.5)).any(-1)
            if outside.any():
                where = ", ".join(f"#{i} at {points[i].tolist()}" for i in torch.nonzero(outside).flatten().tolist())
                message = f"{name}: landmark(s) {where} outside the {'x'.join(map(str, spatial))} image"
                if self.outside == "raise":
                    raise DataValidationError(f"{message}; fix the annotation or pass outside='missing'.")
                logger.warning("%s; marked missing.", message)
                points[outside] = math.nan
            world = apply_affine_to_points(points[None], torch.as_tensor(affine, dtype=torch.float64), torch.float64)
            d[key] = torch.as_tensor(world)  # a plain tensor: its affine must not be applied twice
        return d


class SetPixelSpacingd(MapTransform):
    """Put the pixel spacing (mm) of each image into its metadata, from the datalist if it has one.

    Datalists of landmark sets carry the spacing per image (ISBI 2015: 0.1 mm; Hand Atlas: from
    the wrist width; demo films: per film); image files often do not (PNG, BMP). The spacing in
    the datalist wins; without a finite one the reader's spacing stays (DICOM Pixel Spacing, NIfTI
    pixdim); when that is unknown too, ``default`` is used if given (a data set whose films share
    a known spacing their files do not carry, such as the ISBI 2015 BMPs at 0.1 mm), else
    ``spacing_known`` is False and results are in pixels. A datalist spacing of zero or below is an
    error (:class:`~mimtl.errors.DataValidationError`); ``null`` means unknown.
    Run :class:`~mimtl.transforms.StandardizeImageMetad` first.

    Args:
        keys: image keys.
        spacing_key: the datalist key of ``[sx, sy]`` in array-index order (optional per item).
        default: mm per pixel for images with no spacing of their own: one value for every axis,
            or one per axis in array-index order; None leaves them in pixels.
        allow_missing_keys: don't raise when an image key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spacing_key: str = "spacing",
        default: float | Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spacing_key = spacing_key
        self.default = None if default is None else np.atleast_1d(np.asarray(default, dtype=np.float64))
        if self.default is not None and not (np.isfinite(self.default).all() and (self.default > 0).all()):
            raise ValueError(f"default spacing must be positive and finite (mm per pixel), got {default!r}.")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        given = d.get(self.spacing_key)
        for key in self.key_iterator(d):
            image = d[key]
            if not isinstance(image, MetaTensor):
                raise TypeError(f"SetPixelSpacingd needs a MetaTensor under '{key}', got {type(image).__name__}.")
            dims = image.ndim - 1
            if given is not None:
                spacing = np.asarray([math.nan if v is None else v for v in np.ravel(given)], dtype=np.float64)
                if spacing.size != dims:
                    raise DataValidationError(
                        f"{_filename(image)}: '{self.spacing_key}' has {spacing.size} values, the image {dims} axes."
                    )
                if (spacing[np.isfinite(spacing)] <= 0).any():  # null/NaN means unknown; 0 or < 0 is a mistake
                    raise DataValidationError(
                        f"{_filename(image)}: '{self.spacing_key}' {spacing.tolist()} must be positive (mm per "
                        "pixel); use null for an unknown spacing."
                    )
                if np.isfinite(spacing).all() and (spacing > 0).all():
                    image.meta["spacing"] = spacing
                    image.meta["spacing_known"] = True
                    image.meta["spacing_source"] = f"datalist '{self.spacing_key}'"
                    continue
            if self.default is not None and not image.meta.get("spacing_known", False):
                if self.default.size not in (1, dims):
                    raise ValueError(f"default spacing has {self.default.size} values, {_filename(image)} {dims} axes.")
                image.meta["spacing"] = np.broadcast_to(self.default, (dims,)).copy()
                image.meta["spacing_known"] = True
                image.meta["spacing_source"] = "default spacing (config)"
        return d


class DecodeLandmarksd(MapTransform):
    """Heatmaps -> landmarks in pixels of the original file and in mm, with a confidence each.

    Works on one decollated item (MONAI postprocessing). For the prediction under ``keys`` (a
    ``(N, *spatial)`` heatmap in the grid of ``image_key``) it writes

    * ``{prefix}points``: ``(N, D)`` pixels of the original file (array index order), NaN if none;
    * ``{prefix}confidence``: ``(N,)`` heatmap peak clamped to ``[0, 1]``;
    * ``{prefix}coords``: the points in mm (``points * spacing``), or in pixels when the spacing is
      unknown; ``unit`` says which (``"mm"`` / ``"px"``) and ``spacing`` holds the mm/px used (NaN if unknown);

    and, when ``label_key`` holds points in the network grid (a labelled item), the same
    ``label_points`` / ``label_coords`` for the ground truth, so errors are measured on the film.

    Args:
        keys: prediction key(s), usually ``"pred"``; the first key's results use ``prefix``.
        image_key: the network input (MetaTensor whose affine maps its grid to world and whose
            ``original_affine`` maps the file's grid to world).
        label_key: key of the ground-truth points in the network grid, or None.
        method: ``"soft_argmax"``, ``"argmax"`` or ``"blob"`` (see :class:`~mimtl.transforms.LandmarkDecoder`).
        sigma: heatmap sigma in network pixels (soft-argmax window).
        activation: ``"sigmoid"`` for heatmaps trained as logits (disc cross-entropy), else None.
        prefix: prefix of the prediction outputs.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str = "image",
        label_key: str | None = "label",
        method: str = "soft_argmax",
        sigma: float | Sequence[float] = 5.0,
        window: int | None = None,
        threshold: float = 0.5,
        activation: str | None = None,
        prefix: str = "pred_",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if activation not in (None, "sigmoid"):
            raise ValueError(f"activation must be None or 'sigmoid', not {activation!r}.")
        sigma_value = float(np.max(np.asarray(sigma, dtype=np.float64)))
        self.decoder = LandmarkDecoder(method=method, sigma=sigma_value, window=window, threshold=threshold)
        self.image_key = image_key
        self.label_key = label_key
        self.activation = activation
        self.prefix = prefix

    @staticmethod
    def _grid_to_file(image: Any, dims: int) -> torch.Tensor:
        """The affine from the network grid to the pixels of the original file."""
        eye = torch.eye(dims + 1, dtype=torch.float64)
        if not isinstance(image, MetaTensor):
            return eye
        current = torch.as_tensor(image.affine, dtype=torch.float64)
        original = image.meta.get("original_affine")
        original = current if original is None else torch.as_tensor(np.asarray(original), dtype=torch.float64)
        return torch.linalg.inv(original) @ current

    @staticmethod
    def _spacing(image: Any, dims: int) -> tuple[torch.Tensor, str]:
        meta = getattr(image, "meta", {}) or {}
        known = bool(np.asarray(meta.get("spacing_known", False)).item())
        spacing = np.asarray(meta.get("spacing", [math.nan] * dims), dtype=np.float64).ravel()[:dims]
        if known and np.isfinite(spacing).all() and (spacing > 0).all():
            return torch.as_tensor(spacing), "mm"
        return torch.full((dims,), math.nan, dtype=torch.float64), "px"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        for i, key in enumerate(self.key_iterator(d)):
            heatmap = torch.as_tensor(d[key]).detach().float().cpu()
            if self.activation == "sigmoid":
                heatmap = torch.sigmoid(heatmap)
            dims = heatmap.ndim - 1
            to_file = self._grid_to_file(image, dims)
            spacing, unit = self._spacing(image, dims)
            scale = spacing if unit == "mm" else torch.ones(dims, dtype=torch.float64)
            points, confidence = self.decoder(heatmap)
            points = apply_affine_to_points(points.to(torch.float64)[None], to_file, torch.float64)[0]
            prefix = self.prefix if i == 0 else f"{key}_"
            d[f"{prefix}points"] = points
            d[f"{prefix}confidence"] = confidence.to(torch.float32)
            d[f"{prefix}coords"] = points * scale
            d["spacing"] = spacing
            d["unit"] = unit
            if self.label_key is not None and self.label_key in d and i == 0:
                label = as_points(d[self.label_key], dims=dims)
                label = apply_affine_to_points(label[None], to_file, torch.float64)[0]
                d["label_points"] = label
                d["label_coords"] = label * scale
        return d
