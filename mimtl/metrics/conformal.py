"""Split conformal prediction of landmark error radii.

On a calibration set that the model never trained on, take the radial error of every landmark as
its nonconformity score. For a new image, the circle (sphere in 3D) of radius ``r_k`` around the
predicted landmark ``k`` then holds the true landmark with probability at least ``coverage``,
provided calibration and new images are exchangeable (same population, same scanner mix):
``r_k`` is the ``ceil((n + 1) coverage)``-th smallest of the ``n`` calibration scores of landmark
``k`` (the finite-sample corrected quantile; Vovk et al. 2005, Angelopoulos & Bates 2021).
The guarantee is marginal (over images), not per image.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["conformal_radius", "empirical_coverage", "min_calibration_size"]

# (n + 1) * coverage is meant to be exact when it is an integer (e.g. 10 * 0.9); float rounding
# must not push the rank one up
_RANK_TOL = 1e-9


def _check_coverage(coverage: float) -> float:
    coverage = float(coverage)
    if not (0.0 < coverage < 1.0):
        raise ValueError(f"coverage must be strictly between 0 and 1 (e.g. 0.9 for 90 %), got {coverage}.")
    return coverage


def _as_2d(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:  # one landmark
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (n, N), got shape {arr.shape}.")
    return arr


def min_calibration_size(coverage: float) -> int:
    """The smallest number of calibration scores that gives a finite radius at ``coverage``.

    Args:
        coverage: target coverage in ``(0, 1)``.

    Returns:
        The smallest ``n`` with ``ceil((n + 1) coverage) <= n`` (9 for 0.9, 19 for 0.95).

    Raises:
        ValueError: ``coverage`` outside ``(0, 1)``.
    """
    coverage = _check_coverage(coverage)
    return max(1, math.ceil(coverage / (1.0 - coverage) - _RANK_TOL))


def conformal_radius(scores: torch.Tensor | np.ndarray, coverage: float = 0.9) -> np.ndarray:
    """Per-landmark split conformal radius from calibration scores.

    Args:
        scores: ``(n, N)`` nonconformity scores (radial errors) of ``n`` calibration images and
            ``N`` landmarks; a ``(n,)`` array is one landmark. NaN (landmark not annotated) is
            left out of that landmark's scores; ``inf`` (no prediction) is kept as the worst score,
            so failures widen the radius instead of being hidden.
        coverage: target probability that the true point lies within the radius, in ``(0, 1)``.

    Returns:
        ``(N,)`` float64 radii: for landmark ``k`` with ``n_k`` scores, the
        ``ceil((n_k + 1) coverage)``-th smallest. When that rank exceeds ``n_k`` (fewer than
        :func:`min_calibration_size` scores) no finite radius is valid and the radius is ``inf``,
        with a warning.

    Raises:
        ValueError: ``coverage`` outside ``(0, 1)`` or ``scores`` not 1D/2D.
    """
    coverage = _check_coverage(coverage)
    s = _as_2d(scores, "scores")
    radius = np.full(s.shape[1], np.inf)
    short = []
    for k in range(s.shape[1]):
        col = np.sort(s[~np.isnan(s[:, k]), k])
        rank = math.ceil((col.size + 1) * coverage - _RANK_TOL)
        if rank > col.size:
            short.append(k)
        else:
            radius[k] = col[rank - 1]
    if short:
        warnings.warn(
            f"conformal_radius: landmarks {short} have fewer than {min_calibration_size(coverage)} calibration "
            f"scores, too few for {coverage:g} coverage; their radius is inf.",
            stacklevel=2,
        )
    return radius


def empirical_coverage(errors: torch.Tensor | np.ndarray, radius: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """The fraction of points that lie within their landmark's radius.

    Args:
        errors: ``(n, N)`` radial errors on held-out images (a ``(n,)`` array is one landmark). NaN
            (not annotated) is left out; ``inf`` (no prediction) is never covered, whatever the radius.
        radius: ``(N,)`` radii, e.g. from :func:`conformal_radius`, in the errors' unit.

    Returns:
        ``{"overall": float, "per_landmark": [float] * N, "n_points": int}``: coverage over all
        scored points, per landmark, and the number of scored points; NaN where nothing is scored.

    Raises:
        ValueError: ``radius`` does not have one entry per landmark.
    """
    e = _as_2d(errors, "errors")
    r = np.asarray(radius.detach().cpu() if isinstance(radius, torch.Tensor) else radius, dtype=np.float64).ravel()
    if r.size != e.shape[1]:
        raise ValueError(f"{r.size} radii for {e.shape[1]} landmarks.")
    scored = ~np.isnan(e)
    covered = np.isfinite(e) & (e <= r[None, :])
    per = [float(covered[scored[:, k], k].mean()) if scored[:, k].any() else float("nan") for k in range(e.shape[1])]
    n_points = int(scored.sum())
    overall = float(covered[scored].mean()) if n_points else float("nan")
    return {"overall": overall, "per_landmark": per, "n_points": n_points}
