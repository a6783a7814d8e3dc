"""Heatmaps -> landmark coordinates.

A landmark network predicts one heatmap channel per landmark, trained towards a Gaussian
``exp(-d^2 / (2 sigma^2))`` centred on the landmark (peak about 1). Decoding turns each channel
back into a point, ``(D,)`` in the array-index order of the heatmap's spatial dims with pixel
centres at integer coordinates, plus a confidence (the peak value clamped to ``[0, 1]``).

Three decoders, all 2D and 3D:

* ``"argmax"``: the integer position of the peak (error up to half a pixel per axis).
* ``"blob"``: the centroid of the largest connected component of ``heatmap > threshold * peak``,
  weighted by the heatmap above that level (scipy, on CPU). Robust to a second, smaller response.
* ``"soft_argmax"``: the mean position under the non-negative heatmap inside a window around the
  peak (sub-pixel; vectorised in torch, runs on the heatmap's device).

A channel that has no positive value, or any non-finite value, gives a NaN point and confidence 0:
the landmark is reported missing rather than guessed.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from monai.transforms import Transform
from monai.utils import TransformBackends, convert_to_tensor, optional_import

ndimage, _ = optional_import("scipy.ndimage")

__all__ = ["DECODE_METHODS", "LandmarkDecoder", "decode_heatmaps"]

#: The decoding methods :func:`decode_heatmaps` understands.
DECODE_METHODS: tuple[str, ...] = ("soft_argmax", "argmax", "blob")


def _check_args(method: str, sigma: float, window: int | None, threshold: float) -> None:
    if method not in DECODE_METHODS:
        raise ValueError(f"method must be one of {DECODE_METHODS}, got {method!r}.")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma}.")
    if window is not None and (int(window) != window or window < 0):
        raise ValueError(f"window must be a non-negative integer or None, got {window}.")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}.")


def _soft_argmax(flat: torch.Tensor, peak_idx: torch.Tensor, spatial: tuple[int, ...], half: int) -> torch.Tensor:
    """Mean position under ``clamp(heatmap, 0)`` in a ``(2 half + 1)^D`` window centred on the peak.

    Near the border the window shrinks, per axis, to what fits on both sides of the peak.

    ``flat`` is ``(M, prod(spatial))``, ``peak_idx`` ``(M,)``; returns ``(M, D)`` float32. One gather
    of all windows at once: no loop over pixels or channels.
    """
    device = flat.device
    dims = len(spatial)
    peak = torch.stack(torch.unravel_index(peak_idx, spatial), dim=-1)  # (M, D)
    axis = torch.arange(-half, half + 1, device=device)
    offsets = torch.stack(torch.meshgrid(*([axis] * dims), indexing="ij"), dim=-1).reshape(-1, dims)  # (K, D)
    pos = peak[:, None, :] + offsets[None]  # (M, K, D)
    size = torch.as_tensor(spatial, device=device)
    # near the border, shrink the window per axis so it stays symmetric about the peak: a window cut
    # on one side only would pull the estimate away from the border by up to a few tenths of a pixel
    reach = torch.minimum(peak, size - 1 - peak).clamp(max=half)  # (M, D)
    inside = (offsets.abs()[None] <= reach[:, None, :]).all(dim=-1)  # (M, K)
    strides = torch.as_tensor([math.prod(spatial[d + 1 :]) for d in range(dims)], device=device)
    index = (pos.clamp(min=0) * strides).sum(-1).clamp(max=flat.shape[1] - 1)
    weight = torch.gather(flat, 1, index).clamp(min=0) * inside
    # offsets relative to the integer peak keep float32 sums exact enough at any image size
    shift = (weight[..., None] * offsets[None].to(weight.dtype)).sum(1) / weight.sum(1, keepdim=True).clamp(min=1e-12)
    return peak.to(torch.float32) + shift.to(torch.float32)


def _blob(heatmaps: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    """Centroid of the largest component of ``h > threshold * peak``, per channel of ``(M, *S)``."""
    out = np.full((heatmaps.shape[0], heatmaps.ndim - 1), np.nan, dtype=np.float64)
    structure = ndimage.generate_binary_structure(heatmaps.ndim - 1, heatmaps.ndim - 1)  # diagonal neighbours join
    for m in np.flatnonzero(valid):
        h = heatmaps[m]
        level = threshold * float(h.max())
        labels, count = ndimage.label(h > level, structure=structure)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        sizes[0] = 0
        # weighting by the height above the cut (not the raw height) makes the pixels at the rim of
        # the blob weigh ~0, so the centroid does not jump as pixels cross the threshold
        weight = np.where(labels == int(np.argmax(sizes)), h - level, 0.0)
        grids = np.indices(h.shape, dtype=np.float64)
        out[m] = (grids * weight).reshape(h.ndim, -1).sum(1) / weight.sum()
    return out


def decode_heatmaps(
    heatmaps: torch.Tensor | np.ndarray,
    method: str = "soft_argmax",
    sigma: float = 5.0,
    window: int | None = None,
    threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a batch of landmark heatmaps into points and confidences.

    Args:
        heatmaps: ``(B, N, *spatial)`` with one channel per landmark (2D or 3D spatial), already
            activated (a peak about 1 at the landmark; apply a sigmoid first to logits).
        method: ``"soft_argmax"`` (sub-pixel, default), ``"argmax"`` (integer peak) or ``"blob"``
            (centroid of the largest connected component above ``threshold * peak``).
        sigma: the heatmaps' Gaussian sigma in pixels; sets the soft-argmax window.
        window: soft-argmax half-width in pixels (the window is ``2 window + 1`` wide per axis);
            None means ``ceil(3 sigma)``. A window that is too small for the heatmap pulls the
            estimate towards the integer peak; a very large one lets background responses in.
            Near the border the window shrinks per axis to stay symmetric about the peak.
        threshold: ``"blob"`` cut as a fraction of the channel's peak, in ``[0, 1)``.

    Returns:
        ``points``: ``(B, N, D)`` float32 in array-index order of the spatial dims, pixel centres at
        integer coordinates, NaN for a missing landmark; ``confidence``: ``(B, N)`` float32, the
        channel's peak clamped to ``[0, 1]``, 0 for a missing landmark. Both on the input's device.
        A channel is missing when its maximum is ``<= 0`` or not finite (it holds a NaN or +inf);
        ``-inf`` pixels count as 0.

    Raises:
        ValueError: an unknown method, bad ``sigma``/``window``/``threshold``, or ``heatmaps`` with
            fewer than 3 dimensions.
    """
    _check_args(method, sigma, window, threshold)
    heatmaps = convert_to_tensor(heatmaps, track_meta=False)
    if heatmaps.ndim < 3:
        raise ValueError(f"heatmaps must be (B, N, *spatial), got shape {tuple(heatmaps.shape)}.")
    if not heatmaps.is_floating_point() or heatmaps.dtype in (torch.float16, torch.bfloat16):
        heatmaps = heatmaps.float()  # half-precision sums over a window lose the sub-pixel part
    batch, channels, *spatial = heatmaps.shape
    flat = heatmaps.detach().reshape(batch * channels, -1)
    # max propagates NaN, so one pass finds the peak and the unusable channels (NaN or +inf
    # anywhere, or nothing above 0); a full isfinite mask would cost 8x the max on every image
    peak_val, peak_idx = flat.max(dim=1)
    valid = torch.isfinite(peak_val) & (peak_val > 0)

    if method == "argmax":
        points = torch.stack(torch.unravel_index(peak_idx, tuple(spatial)), dim=-1).to(torch.float32)
    elif method == "soft_argmax":
        half = math.ceil(3.0 * sigma) if window is None else int(window)
        points = _soft_argmax(flat, peak_idx, tuple(spatial), half)
    else:
        maps = flat.reshape(batch * channels, *spatial).cpu().to(torch.float64).numpy()
        points = torch.as_tensor(_blob(maps, valid.cpu().numpy(), threshold), dtype=torch.float32)
        points = points.to(heatmaps.device)

    nan = torch.full_like(points, float("nan"))
    points = torch.where(valid[:, None], points, nan).reshape(batch, channels, len(spatial))
    confidence = torch.where(valid, peak_val.clamp(0.0, 1.0), torch.zeros_like(peak_val))
    return points, confidence.reshape(batch, channels).to(torch.float32)


class LandmarkDecoder(Transform):
    """Array transform: one item's ``(N, *spatial)`` heatmaps -> ``(points, confidence)``.

    The per-item form of :func:`decode_heatmaps` for MONAI post-processing chains (after
    ``decollate_batch``). Points stay in the heatmap's grid; mapping them to the original image
    (and to mm) is the job of the dictionary transform :class:`~mimtl.transforms.DecodeLandmarksd`.

    Args:
        method: ``"soft_argmax"``, ``"argmax"`` or ``"blob"``; see :func:`decode_heatmaps`.
        sigma: heatmap sigma in pixels (soft-argmax window ``ceil(3 sigma)`` unless ``window`` is given).
        window: soft-argmax half-width in pixels, or None.
        threshold: ``"blob"`` cut as a fraction of the peak.

    Raises:
        ValueError: invalid arguments (at construction), or a heatmap with fewer than 2 dims.

    Example::

        points, confidence = LandmarkDecoder(method="soft_argmax", sigma=5)(heatmap)  # (N, D), (N,)
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __init__(
        self, method: str = "soft_argmax", sigma: float = 5.0, window: int | None = None, threshold: float = 0.5
    ) -> None:
        _check_args(method, float(sigma), window, float(threshold))
        self.method = method
        self.sigma = float(sigma)
        self.window = window
        self.threshold = float(threshold)

    def __call__(self, heatmap: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            heatmap: ``(N, *spatial)``, one channel per landmark.

        Returns:
            ``points`` ``(N, D)`` float32 (NaN where missing) and ``confidence`` ``(N,)`` float32, as torch tensors.
        """
        heatmap = convert_to_tensor(heatmap, track_meta=False)
        if heatmap.ndim < 2:
            raise ValueError(f"heatmap must be (N, *spatial), got shape {tuple(heatmap.shape)}.")
        points, confidence = decode_heatmaps(
            heatmap[None], method=self.method, sigma=self.sigma, window=self.window, threshold=self.threshold
        )
        return points[0], confidence[0]
