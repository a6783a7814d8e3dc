"""Landmark localization metrics: radial error, MRE, SDR, as functions, MONAI metrics and ignite handlers.

Points are ``(B, N, D)`` (or ``(N, D)`` per item) in array-index order; NaN marks a missing one.
Two kinds of "missing" are kept apart, because they mean different things:

* the **target** is missing (the annotation lacks the landmark): the error is NaN and the entry is
  left out of every metric;
* the target is present but the **prediction** is missing (the decoder found no peak): the error is
  ``inf``. It counts as a failure in the success detection rate (SDR) and is counted in
  ``n_failed``; the mean radial error (MRE) is taken over the finite errors only, so one failure
  does not turn the MRE into ``inf``. Read MRE together with SDR / ``n_failed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.utils import convert_to_tensor

__all__ = [
    "DEFAULT_SDR_THRESHOLDS",
    "MeanRadialError",
    "MeanRadialErrorHandler",
    "SuccessDetectionRate",
    "SuccessDetectionRateHandler",
    "landmark_summary",
    "radial_errors",
    "success_detection_rate",
]

#: SDR thresholds of the ISBI 2015 cephalometric challenge, in mm.
DEFAULT_SDR_THRESHOLDS: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0)

_REDUCTIONS = ("mean", "mean_batch", "mean_channel", "none")


def _as_float_tensor(x: Any) -> torch.Tensor:
    # sequences of numbers go through numpy: convert_to_tensor would keep a list a list
    t = convert_to_tensor(x, track_meta=False) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t if t.is_floating_point() else t.to(torch.float32)


def radial_errors(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    spacing: torch.Tensor | np.ndarray | Sequence[float] | None = None,
) -> torch.Tensor:
    """Euclidean distance between predicted and true points, per landmark.

    Args:
        pred: ``(..., N, D)`` predicted points (NaN: no prediction).
        target: ``(..., N, D)`` true points (NaN: landmark not annotated).
        spacing: physical size of a pixel per axis (e.g. mm/px): ``(B, D)`` per item, ``(D,)`` for
            all, or None for errors in pixels. Each axis difference is multiplied by it.

    Returns:
        ``(..., N)`` errors: NaN where the target is missing, ``inf`` where the target is present
        but the prediction is missing (a failure, see the module docstring).

    Raises:
        ValueError: ``pred`` and ``target`` shapes differ, or ``spacing`` does not broadcast.
    """
    pred, target = _as_float_tensor(pred), _as_float_tensor(target)
    if pred.shape != target.shape or pred.ndim < 2:
        raise ValueError(
            f"pred and target must both be (..., N, D), got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    dtype = torch.promote_types(pred.dtype, target.dtype)
    diff = pred.to(dtype) - target.to(dtype).to(pred.device)
    if spacing is not None:
        scale = _as_float_tensor(spacing).to(device=diff.device, dtype=dtype)
        if scale.ndim == pred.ndim - 1:  # (B, D): one spacing per item, shared by its N landmarks
            scale = scale.unsqueeze(-2)
        try:
            diff = diff * scale
        except RuntimeError as e:
            raise ValueError(f"spacing of shape {tuple(scale.shape)} does not fit points {tuple(pred.shape)}.") from e
    errors = torch.linalg.vector_norm(diff, dim=-1)
    target_missing = torch.isnan(target).any(-1).to(errors.device)
    pred_missing = torch.isnan(pred).any(-1)
    errors = torch.where(pred_missing, torch.full_like(errors, float("inf")), errors)
    return torch.where(target_missing, torch.full_like(errors, float("nan")), errors)


def _errors_array(errors: Any) -> np.ndarray:
    if isinstance(errors, torch.Tensor):
        return errors.detach().cpu().to(torch.float64).numpy()
    return np.asarray(errors, dtype=np.float64)


def success_detection_rate(
    errors: torch.Tensor | np.ndarray | Sequence[float], thresholds: Sequence[float] = DEFAULT_SDR_THRESHOLDS
) -> dict[float, float]:
    """Fraction of landmarks found within each threshold (``error <= t``), over all entries.

    Args:
        errors: radial errors of any shape (as from :func:`radial_errors`). NaN entries (target
            missing) are left out; ``inf`` entries (no prediction) count as failures.
        thresholds: distances in the errors' unit.

    Returns:
        ``{threshold: rate}`` with float keys and values; NaN rates when no entry is scored.
    """
    e = _errors_array(errors).ravel()
    e = e[~np.isnan(e)]
    return {float(t): float(np.mean(e <= t)) if e.size else float("nan") for t in thresholds}


def _stats(e: np.ndarray, thresholds: Sequence[float]) -> dict[str, Any]:
    """MRE / SD / median over the finite errors, SDR over the present ones, counts."""
    present = e[~np.isnan(e)]
    finite = present[np.isfinite(present)]
    nan = float("nan")
    out: dict[str, Any] = {
        "mre": float(finite.mean()) if finite.size else nan,
        "sd": float(finite.std()) if finite.size else nan,
        "median": float(np.median(finite)) if finite.size else nan,
    }
    for t, rate in success_detection_rate(present, thresholds).items():
        out[f"sdr_{t:g}"] = rate
    out.update(n=int(present.size), n_missing=int(e.size - present.size), n_failed=int(present.size - finite.size))
    return out


def landmark_summary(
    errors: torch.Tensor | np.ndarray,
    thresholds: Sequence[float] = DEFAULT_SDR_THRESHOLDS,
    landmark_names: Sequence[str] | None = None,
    unit: str = "mm",
) -> dict[str, Any]:
    """MRE and SDR overall and per landmark, as a JSON-ready dict of plain Python numbers.

    Args:
        errors: ``(n_images, N)`` radial errors from :func:`radial_errors` (NaN: not annotated,
            ``inf``: annotated but not predicted).
        thresholds: SDR thresholds in ``unit``.
        landmark_names: the ``N`` names (default ``"landmark_0"``, ...).
        unit: the errors' unit, copied to the output (``"mm"`` or ``"px"``).

    Returns:
        ``{"unit", "thresholds", "overall", "per_landmark"}`` where ``overall`` holds ``mre``,
        ``mre_sd`` (population SD over all points), ``mre_median``, ``sdr_{t:g}`` per threshold
        (e.g. ``sdr_2``, ``sdr_2.5``), ``n_points`` (annotated points, failures included),
        ``n_missing`` (not annotated) and ``n_failed`` (annotated, no prediction); and
        ``per_landmark`` is a list of ``{name, mre, sd, median, sdr_{t:g}..., n, n_missing, n_failed}``.
        MRE/SD/median use the finite errors only; SDR counts failures as misses. A statistic with
        no data is ``float("nan")`` (``json.dumps`` writes ``NaN``).

    Raises:
        ValueError: ``errors`` is not 2D or the names do not match ``N``.
    """
    e = _errors_array(errors)
    if e.ndim != 2:
        raise ValueError(f"errors must be (n_images, N), got shape {e.shape}.")
    names = [f"landmark_{k}" for k in range(e.shape[1])] if landmark_names is None else [f"{n}" for n in landmark_names]
    if len(names) != e.shape[1]:
        raise ValueError(f"{len(names)} landmark names for {e.shape[1]} landmarks.")
    thresholds = [float(t) for t in thresholds]
    overall = _stats(e, thresholds)
    overall = {
        "mre": overall.pop("mre"),
        "mre_sd": overall.pop("sd"),
        "mre_median": overall.pop("median"),
        **{k: v for k, v in overall.items() if k.startswith("sdr_")},
        "n_points": overall["n"],
        "n_missing": overall["n_missing"],
        "n_failed": overall["n_failed"],
    }
    per_landmark = [{"name": name, **_stats(e[:, k], thresholds)} for k, name in enumerate(names)]
    return {"unit": unit, "thresholds": thresholds, "overall": overall, "per_landmark": per_landmark}


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """NaN-ignoring, pooled reduction of a ``(B, N)`` buffer (NaN where no value)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    if reduction == "none":
        return values
    dim = {"mean": None, "mean_batch": 0, "mean_channel": 1}[reduction]
    return torch.nanmean(values, dim=dim) if dim is not None else torch.nanmean(values)


class _LandmarkMetric(CumulativeIterationMetric):
    """Shared buffer and reduction for the point metrics."""

    def __init__(self, reduction: str = "mean", get_not_nans: bool = False) -> None:
        super().__init__()
        _reduce(torch.zeros(1, 1), reduction)  # validate early
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    @staticmethod
    def _check(y_pred: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise ValueError("ground-truth points y are required.")
        if y_pred.ndim != 3:
            raise ValueError(f"points must be (B, N, D) or a list of (N, D), got {tuple(y_pred.shape)}.")
        return radial_errors(y_pred, y)

    def _buffer(self) -> torch.Tensor:
        buffer = self.get_buffer()
        if isinstance(buffer, torch.Tensor):
            return buffer
        raise ValueError(f"{type(self).__name__} has no data; call it on predictions first.")

    def _values(self) -> torch.Tensor:
        """The ``(B, N)`` values to average, NaN where not scored."""
        return self._buffer()

    def aggregate(self, reduction: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the buffer.

        Args:
            reduction: ``"mean"`` (pooled over all scored points: the figure papers report),
                ``"mean_batch"`` (per landmark, ``(N,)``), ``"mean_channel"`` (per image, ``(B,)``)
                or ``"none"``; default: the one given at construction.

        Returns:
            The reduced tensor, and with ``get_not_nans`` also the number of points it is over.
        """
        values = self._values()
        reduction = self.reduction if reduction is None else reduction
        result = _reduce(values, reduction)
        if not self.get_not_nans:
            return result
        counted = (~torch.isnan(values)).to(torch.float32)
        not_nans = (
            counted
            if reduction == "none"
            else counted.sum()
            if reduction == "mean"
            else counted.sum(0 if reduction == "mean_batch" else 1)
        )
        return result, not_nans


class MeanRadialError(_LandmarkMetric):
    """Mean radial error (MRE) of landmark points, accumulated over iterations.

    Inputs are points already in the unit to report (mm: multiply by the pixel spacing first, as
    :class:`~mimtl.transforms.DecodeLandmarksd` does in ``pred_coords`` / ``label_coords``), either
    ``(B, N, D)`` tensors or lists of ``(N, D)`` tensors. The buffer holds ``(B, N)`` errors: NaN for
    a missing target, ``inf`` for a missing prediction. :meth:`aggregate` averages the finite errors
    (failures are left out of the mean and counted by :class:`SuccessDetectionRate`).

    Args:
        reduction: default reduction of :meth:`aggregate` (``"mean"``, ``"mean_batch"``,
            ``"mean_channel"``, ``"none"``).
        get_not_nans: also return the number of points averaged.
    """

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """``(B, N, D)`` predictions and targets -> ``(B, N)`` radial errors."""
        return self._check(y_pred, y)

    def _values(self) -> torch.Tensor:
        errors = self._buffer()
        return torch.where(torch.isinf(errors), torch.full_like(errors, float("nan")), errors)


class SuccessDetectionRate(_LandmarkMetric):
    """Success detection rate (SDR): the fraction of landmarks within ``threshold`` of the truth.

    Same inputs as :class:`MeanRadialError`. The buffer holds ``(B, N)`` hits (1.0 / 0.0, NaN for a
    missing target); a missing prediction is a miss.

    Args:
        threshold: distance in the points' unit (e.g. 2.0 mm); a point at exactly ``threshold`` counts.
        reduction: default reduction of :meth:`aggregate`.
        get_not_nans: also return the number of points averaged.

    Raises:
        ValueError: a negative or non-finite threshold.
    """

    def __init__(self, threshold: float, reduction: str = "mean", get_not_nans: bool = False) -> None:
        if not (np.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be a non-negative number, got {threshold}.")
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.threshold = float(threshold)

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """``(B, N, D)`` predictions and targets -> ``(B, N)`` hits (NaN where the target is missing)."""
        errors = self._check(y_pred, y)
        hits = (errors <= self.threshold).to(errors.dtype)
        return torch.where(torch.isnan(errors), errors, hits)


class MeanRadialErrorHandler(IgniteMetricHandler):
    """Ignite handler of :class:`MeanRadialError`, in the style of :class:`monai.handlers.MeanDice`.

    Args:
        reduction: see :meth:`MeanRadialError.aggregate`; ``"mean"`` gives one number.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``: ``(B, N, D)`` tensors or
            lists of ``(N, D)`` tensors (decollated items), e.g.
            ``monai.handlers.from_engine(["pred_coords", "label_coords"])``.
        save_details: keep the ``(B, N)`` errors in ``engine.state.metric_details[name]``.
    """

    def __init__(
        self, reduction: str = "mean", output_transform: Callable = lambda x: x, save_details: bool = True
    ) -> None:
        super().__init__(
            metric_fn=MeanRadialError(reduction=reduction), output_transform=output_transform, save_details=save_details
        )


class SuccessDetectionRateHandler(IgniteMetricHandler):
    """Ignite handler of :class:`SuccessDetectionRate`; attach one per threshold.

    Args:
        threshold: distance in the points' unit.
        reduction: see :meth:`SuccessDetectionRate.aggregate`.
        output_transform: as for :class:`MeanRadialErrorHandler`.
        save_details: keep the ``(B, N)`` hits in ``engine.state.metric_details[name]``.
    """

    def __init__(
        self,
        threshold: float,
        reduction: str = "mean",
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=SuccessDetectionRate(threshold, reduction=reduction),
            output_transform=output_transform,
            save_details=save_details,
        )


def sdr_handlers(
    thresholds: Sequence[float], output_transform: Callable = lambda x: x
) -> dict[str, SuccessDetectionRateHandler]:
    """One :class:`SuccessDetectionRateHandler` per threshold, named ``sdr_<t>`` (``sdr_2``, ``sdr_2.5``).

    For an evaluator's ``additional_metrics``, so that the SDR radii a config sets
    (``sdr_thresholds``) are the ones validation and ``metrics.csv`` report, with the names
    :func:`landmark_summary` uses.

    Example (YAML)::

        additional_metrics:
          _target_: mimtl.metrics.sdr_handlers
          thresholds: '@sdr_thresholds'
          output_transform: "$monai.handlers.from_engine(['pred_coords', 'label_coords'])"

    Raises:
        ValueError: no thresholds, a threshold that is not a positive number, or two that print alike.
    """
    values = [float(t) for t in thresholds]
    if not values or not all(math.isfinite(t) and t > 0 for t in values):
        raise ValueError(f"sdr_thresholds must be positive numbers, got {list(thresholds)}.")
    names = [f"sdr_{t:g}" for t in values]
    if len(set(names)) != len(names):
        raise ValueError(f"sdr_thresholds {list(thresholds)} give duplicate metric names {names}.")
    return {name: SuccessDetectionRateHandler(t, output_transform=output_transform) for name, t in zip(names, values)}
