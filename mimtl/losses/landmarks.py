"""Heatmap losses for landmark localization, with targets rendered from the points in the loss.

The loss takes the landmark points themselves (``(B, N, D)`` in the network's pixel grid, NaN for
a missing landmark) and renders the Gaussian targets on the fly, at sub-pixel centres. MONAI's
``GenerateHeatmap`` rounds each centre to the nearest pixel, which costs up to 0.71 px of target
bias; rendering here is exact, costs one ``exp`` per pixel, and lets the sigma be learned.

Kinds (``kind=``):

* ``"mse"``: mean squared error to the Gaussian ``exp(-d^2 / (2 sigma^2))``;
* ``"adaptive_wing"``: the Adaptive Wing loss of Wang et al. (ICCV 2019), with its foreground weight map;
* ``"disc_ce"``: binary cross-entropy on logits against discs where the Gaussian exceeds
  ``disc_threshold`` (the thresholded-heatmap targets of Di Via et al.), positives weighted by the
  negative/positive ratio of the batch so the small discs are not drowned by background.

With ``learn_sigma=True`` (``"mse"`` only) every landmark has its own sigma, a parameter of this
module, in the spirit of Payer et al. (MedIA 2019): the target is scaled by ``(sigma0/sigma)^D``
so that a wider target is not a free lunch, and ``sigma_weight * mean(sigma^2)`` keeps sigmas small.
Give the optimizer ``list(network.parameters()) + list(loss.parameters())``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HEATMAP_LOSSES", "HeatmapLoss", "render_heatmaps"]

#: The ``kind`` values of :class:`HeatmapLoss`.
HEATMAP_LOSSES: tuple[str, ...] = ("mse", "adaptive_wing", "disc_ce")


def render_heatmaps(points: torch.Tensor, spatial_shape: Sequence[int], sigma: torch.Tensor | float) -> torch.Tensor:
    """Gaussian heatmaps ``exp(-|p - c|^2 / (2 sigma^2))`` centred exactly at ``points``.

    Args:
        points: ``(B, N, D)`` centres in pixel (array index) coordinates; NaN rows give zero maps.
        spatial_shape: the ``D`` sizes of the maps.
        sigma: a scalar or a ``(N,)`` tensor (differentiable) of standard deviations in pixels.

    Returns:
        ``(B, N, *spatial_shape)`` maps with peak 1 at the centre (when it lies on a pixel).
    """
    batch, num, dims = points.shape
    if dims != len(spatial_shape):
        raise ValueError(f"points have {dims} coordinates but the heatmaps {len(spatial_shape)} dimensions.")
    sigma = torch.as_tensor(sigma, dtype=points.dtype, device=points.device)
    sigma = sigma.reshape(1, -1, *([1] * dims)) if sigma.ndim else sigma
    valid = torch.isfinite(points).all(-1)
    centres = torch.where(valid[..., None], points, torch.zeros_like(points))
    sq = torch.zeros((batch, num, *spatial_shape), dtype=points.dtype, device=points.device)
    for axis, size in enumerate(spatial_shape):
        grid = torch.arange(size, dtype=points.dtype, device=points.device)
        view = [1, 1] + [1] * dims
        view[2 + axis] = size
        diff = grid.view(view) - centres[..., axis].reshape(batch, num, *([1] * dims))
        sq = sq + diff * diff
    maps = torch.exp(-sq / (2 * sigma * sigma))
    return maps * valid.reshape(batch, num, *([1] * dims)).to(maps.dtype)


def _adaptive_wing(
    pred: torch.Tensor, target: torch.Tensor, alpha: float, omega: float, epsilon: float, theta: float
) -> torch.Tensor:
    diff = (target - pred).abs()
    power = alpha - target
    ratio = theta / epsilon
    a = omega / (1 + ratio**power) * power * ratio ** (power - 1) / epsilon
    c = theta * a - omega * torch.log1p(ratio**power)
    return torch.where(diff < theta, omega * torch.log1p((diff / epsilon) ** power), a * diff - c)


class HeatmapLoss(nn.Module):
    """Heatmap regression loss computed from landmark points (see the module docstring).

    Args:
        kind: one of :data:`HEATMAP_LOSSES`.
        sigma: Gaussian sigma in pixels: one value, or one per landmark.
        num_landmarks: needed with ``learn_sigma`` and a single ``sigma``.
        learn_sigma: learn one sigma per landmark (``kind="mse"`` only).
        sigma_weight: weight of the ``mean(sigma^2)`` regulariser of learned sigmas.
        disc_threshold: ``"disc_ce"``: the disc is where the Gaussian is at least this.
        awing_params: ``"adaptive_wing"``: ``(alpha, omega, epsilon, theta)``, the paper's defaults.
        awing_foreground_weight: ``"adaptive_wing"``: weight of pixels in the dilated foreground
            (target >= 0.2, 3x3 dilation), as in the paper; 0 turns the weight map off.

    Shapes:
        ``forward(pred, points)``: ``pred`` is ``(B, N, *spatial)`` (logits for ``"disc_ce"``),
        ``points`` ``(B, N, D)`` or ``(B, 1, N, D)`` in pixels of ``pred``'s grid, NaN for missing
        landmarks, whose channels are left out. Returns a scalar.
    """

    def __init__(
        self,
        kind: str = "mse",
        sigma: float | Sequence[float] = 5.0,
        num_landmarks: int | None = None,
        learn_sigma: bool = False,
        sigma_weight: float = 1e-4,
        disc_threshold: float = 0.5,
        awing_params: Sequence[float] = (2.1, 14.0, 1.0, 0.5),
        awing_foreground_weight: float = 10.0,
    ) -> None:
        super().__init__()
        if kind not in HEATMAP_LOSSES:
            raise ValueError(f"kind must be one of {HEATMAP_LOSSES}, not {kind!r}.")
        if learn_sigma and kind != "mse":
            raise ValueError(f"learn_sigma needs kind='mse' (the target scale follows sigma), not {kind!r}.")
        if not 0.0 < disc_threshold < 1.0:
            raise ValueError(f"disc_threshold must be in (0, 1), got {disc_threshold}.")
        sigma_t = torch.as_tensor(sigma, dtype=torch.float32).flatten()
        if (sigma_t <= 0).any():
            raise ValueError(f"sigma must be positive, got {sigma}.")
        if learn_sigma:
            if sigma_t.numel() == 1:
                if num_landmarks is None:
                    raise ValueError("learn_sigma with a single sigma needs num_landmarks.")
                sigma_t = sigma_t.expand(num_landmarks).clone()
            self.log_sigma = nn.Parameter(sigma_t.log())
        self.register_buffer("sigma0", sigma_t.clone())
        self.kind = kind
        self.learn_sigma = learn_sigma
        self.sigma_weight = float(sigma_weight)
        self.disc_threshold = float(disc_threshold)
        self.awing_params = tuple(float(v) for v in awing_params)
        self.awing_foreground_weight = float(awing_foreground_weight)

    @property
    def sigma(self) -> torch.Tensor:
        """The current sigma(s) in pixels."""
        return self.log_sigma.exp() if self.learn_sigma else self.sigma0

    def forward(self, pred: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        points = torch.as_tensor(points, device=pred.device)
        if points.ndim == 4 and points.shape[1] == 1:
            points = points[:, 0]
        dims = pred.ndim - 2
        if points.ndim != 3 or points.shape[:2] != pred.shape[:2] or points.shape[-1] != dims:
            raise ValueError(
                f"points {tuple(points.shape)} do not fit heatmaps {tuple(pred.shape)}: expected (B, N, {dims})."
            )
        points = points.to(torch.float32)
        valid = torch.isfinite(points).all(-1)  # (B, N)
        if not valid.any():
            return pred.sum() * 0.0  # keeps the graph (DDP) while contributing nothing
        sigma = self.sigma.to(pred.device)
        target = render_heatmaps(points, pred.shape[2:], sigma)
        if self.learn_sigma:
            target = target * (self.sigma0.to(pred.device) / sigma).reshape(1, -1, *([1] * dims)) ** dims
        pred = pred.float()
        if self.kind == "mse":
            per_pixel = (pred - target) ** 2
        elif self.kind == "adaptive_wing":
            per_pixel = _adaptive_wing(pred, target, *self.awing_params)
            if self.awing_foreground_weight:
                fg = (target >= 0.2).to(pred.dtype).flatten(0, 1)[:, None]
                pool = getattr(F, f"max_pool{dims}d")
                fg = pool(fg, kernel_size=3, stride=1, padding=1).reshape(target.shape)
                per_pixel = per_pixel * (1 + self.awing_foreground_weight * fg)
        else:
            disc = (target >= self.disc_threshold).to(pred.dtype)
            mask = valid.reshape(*valid.shape, *([1] * dims)).expand_as(disc)
            pos = disc[mask].sum().clamp(min=1.0)
            pos_weight = (mask.sum() - pos) / pos
            per_pixel = F.binary_cross_entropy_with_logits(pred, disc, reduction="none")
            per_pixel = per_pixel * (1 + (pos_weight - 1) * disc)
        loss = per_pixel.flatten(2).mean(-1)[valid].mean()
        if self.learn_sigma:
            loss = loss + self.sigma_weight * (sigma**2).mean()
        return loss
