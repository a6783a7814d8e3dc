"""Input checks for models that classify 2D grayscale radiographs.

A pipeline hands a classification bundle whatever it has: 8/16-bit PNGs, grayscale images saved
as RGB(A) by a screenshot or export tool, real colour photographs, NIfTI files whose "2D" image is
a ``(H, W, 1)`` volume, whole CT volumes, files with NaN pixels. A network trained on 1-channel
X-rays must receive exactly one channel and two spatial dimensions, and anything that cannot be
brought there without guessing must stop with a message naming the file, not with a shape error
deep inside a convolution.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ImageMetaKey, MetaKeys, TransformBackends, convert_to_tensor

from mimtl.io.meta import ImageReadError

__all__ = [
    "COLOR_MODES",
    "LUMINANCE_WEIGHTS",
    "EnsureGrayscale",
    "EnsureGrayscaleD",
    "EnsureGrayscaleDict",
    "EnsureGrayscaled",
    "ImageFormatError",
]

logger = logging.getLogger(__name__)

#: What :class:`EnsureGrayscale` does with a real colour image.
COLOR_MODES: tuple[str, ...] = ("error", "luminance")
#: ITU-R BT.601 luma weights for R, G, B (the weights of PIL's ``convert("L")``).
LUMINANCE_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


class ImageFormatError(ImageReadError):
    """An image was read but is not what the model takes (colour, a 3D volume, NaN pixels, ...).

    An :class:`~mimtl.io.ImageReadError` (so a ``ValueError``) with the same ``(filename, reason)``
    arguments, so it survives DataLoader worker processes and is recognised by code that reports
    unreadable files.
    """


def _filename(img: Any, filename: Any = None) -> str:
    """The file an image came from, for messages: ``filename``, else the MetaTensor's meta, else ''."""
    if filename is None and isinstance(img, MetaTensor):
        filename = img.meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    if isinstance(filename, (list, tuple)):  # a channel-stacked image: name the first file
        filename = filename[0] if filename else None
    return "" if filename is None else f"{filename}"


class EnsureGrayscale(Transform):
    """Bring a channel-first 2D radiograph to one channel, ``(1, H, W)``, or say why it cannot be.

    =============================================  ===============================================
    input (channel first)                           result
    =============================================  ===============================================
    ``(1, H, W)``                                   unchanged
    ``(1, H, W, 1)`` (a 2D image stored as 3D)      depth squeezed: ``(1, H, W)``
    ``(3, H, W)`` / ``(4, H, W)``, R = G = B        gray stored as RGB(A): one channel kept, alpha
                                                    dropped; a warning, once per file
    ``(2, H, W)`` read by PIL as mode ``"LA"``      gray + alpha: alpha dropped
    ``(3|4, H, W)`` with real colour                :class:`ImageFormatError`; with
                                                    ``color="luminance"`` ITU-R BT.601 luma
    ``(C, H, W, D)`` with ``D > 1``                 :class:`ImageFormatError`: a volume, not a
                                                    radiograph
    any NaN / Inf value                             :class:`ImageFormatError`
    other channel counts or ranks                   :class:`ImageFormatError`
    =============================================  ===============================================

    MetaTensor metadata and the data type are kept (luminance of an integer image is float32);
    when the depth is squeezed, ``spatial_shape`` loses its last entry too, so that such images
    collate with PNG/DICOM images in one batch (MONAI collates the meta of a batch).

    Args:
        color: ``"error"`` (default) refuses real colour images; ``"luminance"`` converts them to
            luma ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601).
        tolerance: largest difference between the colour channels, as a fraction of the image's
            intensity range, for which an RGB(A) image still counts as gray (JPEG compression
            leaves small differences in gray images saved as colour).
        check_finite: refuse images with NaN or Inf values.

    Raises:
        ValueError: when ``color`` or ``tolerance`` is invalid.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, color: str = "error", tolerance: float = 0.01, check_finite: bool = True) -> None:
        if color not in COLOR_MODES:
            raise ValueError(f"color must be one of {COLOR_MODES}, got {color!r}.")
        if not 0.0 <= float(tolerance) < 1.0:
            raise ValueError(f"tolerance must be in [0, 1), got {tolerance}.")
        self.color = color
        self.tolerance = float(tolerance)
        self.check_finite = check_finite
        # Files already warned about (per process: each DataLoader worker keeps its own set).
        self._warned: set[str] = set()

    def __call__(self, img: NdarrayOrTensor, filename: Any = None) -> NdarrayOrTensor:
        """Return ``img`` as ``(1, H, W)``.

        Args:
            img: a channel-first image, ``(C, H, W)`` or ``(C, H, W, D)``; a MetaTensor keeps its meta.
            filename: the file it came from, for messages (default: the MetaTensor's
                ``filename_or_obj``).

        Raises:
            ImageFormatError: colour (with ``color="error"``), a 3D volume, NaN/Inf values, or a
                shape that is not a channel-first 2D image; the message names the file.
        """
        name = _filename(img, filename)
        shape = tuple(img.shape)
        if len(shape) not in (3, 4):
            raise ImageFormatError(
                name or "<image>",
                f"has shape {shape}; expected a channel-first 2D image (C, H, W). Was the image "
                "loaded with ensure_channel_first=True?",
            )
        if len(shape) == 4:
            if shape[-1] != 1:
                raise ImageFormatError(
                    name or "<image>",
                    f"is a 3D volume of shape {shape[1:]} (channel-first {shape}); this model classifies 2D "
                    "radiographs: pass a single slice or projection (e.g. a DRR), not a volume.",
                )
            img = img[..., 0]  # a 2D image stored as (H, W, 1), as NIfTI often does
            if isinstance(img, MetaTensor) and MetaKeys.SPATIAL_SHAPE in img.meta:
                # 2D now: a 3-long spatial_shape would not collate with those of PNG/DICOM images
                img.meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(img.meta[MetaKeys.SPATIAL_SHAPE])[:2].copy()
        if self.check_finite:
            self._check_finite(img, name)
        channels = shape[0]
        if channels == 1:
            return img
        if channels == 2 and self._mode(img) == "LA":
            return img[:1]  # PIL gray + alpha: the alpha channel says nothing about the anatomy
        if channels not in (3, 4):
            raise ImageFormatError(
                name or "<image>",
                f"has {channels} channels (shape {shape}); expected a 1-channel grayscale radiograph "
                "(or RGB/RGBA holding a grayscale image).",
            )
        rgb = img[:3]
        spread = self._channel_spread(rgb)
        if spread <= self.tolerance:
            if name not in self._warned:
                self._warned.add(name)
                what = "RGBA" if channels == 4 else "RGB"
                logger.warning("%s: grayscale image stored as %s; using one channel.", name or "<image>", what)
            return img[:1]
        if self.color == "luminance":
            return self._luminance(rgb)
        raise ImageFormatError(
            name or "<image>",
            f"is a colour image ({channels} channels whose colours differ by up to {spread:.0%} of the "
            "intensity range); this model expects a grayscale radiograph. Pass the original grayscale "
            "file, or set color='luminance' to convert colour to gray.",
        )

    @staticmethod
    def _mode(img: Any) -> str:
        return f"{img.meta.get('mode', '')}" if isinstance(img, MetaTensor) else ""

    @staticmethod
    def _check_finite(img: NdarrayOrTensor, name: str) -> None:
        t = torch.as_tensor(img) if isinstance(img, np.ndarray) else img
        if not (t.is_floating_point() or t.is_complex()):
            return  # integer pixels are always finite
        # on the plain tensor: a MetaTensor's bookkeeping cost as much as the check on a full-size film
        t = t.as_tensor() if isinstance(t, MetaTensor) else t
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            n_nan = int(torch.isnan(t).sum())
            raise ImageFormatError(
                name or "<image>",
                f"contains {n_nan} NaN and {int(bad.sum()) - n_nan} Inf values out of {t.numel()} pixels; "
                "fix or exclude the file.",
            )

    @staticmethod
    def _channel_spread(rgb: NdarrayOrTensor) -> float:
        """Largest |R-G|, |R-B| as a fraction of the intensity range (0 for a flat image)."""
        t = convert_to_tensor(rgb, track_meta=False).to(torch.float64)
        value_range = float(t.max() - t.min()) if t.numel() else 0.0
        if value_range == 0.0:
            return 0.0
        diff = torch.maximum((t[0] - t[1]).abs().max(), (t[0] - t[2]).abs().max())
        return float(diff) / value_range

    @staticmethod
    def _luminance(rgb: NdarrayOrTensor) -> NdarrayOrTensor:
        if isinstance(rgb, np.ndarray):
            out = np.tensordot(np.asarray(LUMINANCE_WEIGHTS, np.float32), rgb.astype(np.float32), axes=1)
            return out[None]
        w = torch.as_tensor(LUMINANCE_WEIGHTS, dtype=torch.float32, device=rgb.device)
        dtype = rgb.dtype if rgb.is_floating_point() else torch.float32
        # (w[:, None, None] * rgb) keeps a MetaTensor (and its meta) through the arithmetic
        return (w.view(3, *[1] * (rgb.ndim - 1)).to(dtype) * rgb.to(dtype)).sum(dim=0, keepdim=True)


class EnsureGrayscaled(MapTransform):
    """Dictionary-based wrapper of :class:`EnsureGrayscale`.

    Args:
        keys: keys of the images to check and convert.
        color: see :class:`EnsureGrayscale`.
        tolerance: see :class:`EnsureGrayscale`.
        check_finite: see :class:`EnsureGrayscale`.
        allow_missing_keys: don't raise when a key is absent.
    """

    backend = EnsureGrayscale.backend

    def __init__(
        self,
        keys: KeysCollection,
        color: str = "error",
        tolerance: float = 0.01,
        check_finite: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = EnsureGrayscale(color=color, tolerance=tolerance, check_finite=check_finite)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            # a plain array has no meta: fall back to MONAI's legacy "<key>_meta_dict"
            meta = d.get(f"{key}_meta_dict")
            name = meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(meta, Mapping) else None
            if name is None and not isinstance(d[key], MetaTensor):
                name = f"item '{key}'"
            d[key] = self.converter(d[key], filename=name)
        return d


EnsureGrayscaleD = EnsureGrayscaleDict = EnsureGrayscaled
