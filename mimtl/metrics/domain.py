"""Is this input in the model's domain? A small, calibrated out-of-distribution model per bundle.

:class:`DomainModel` scores an input by how far it lies from the films the network was trained
on, in up to three *components*, each a number where larger means stranger:

* ``features``: the Mahalanobis distance of the network's pooled features at one layer (the
  backbone's last feature map of a classifier, the encoder bottleneck of a U-Net) from the
  training films' features. The covariance is estimated with Ledoit-Wolf shrinkage (a few hundred
  films against a few hundred to a thousand feature channels), after standardising each channel.
* ``image``: the Mahalanobis distance (same estimator) of a vector of simple image statistics of
  the network input (:func:`image_statistics`: intensity percentiles, saturation, edge and noise
  energy, left-right / top-bottom symmetry and a 4 x 4 layout of block means). It catches blank,
  noise, inverted and rotated films even where the features are ambiguous.
* ``confidence`` (optional, e.g. landmark detection): one minus the median confidence of the
  network's outputs on the film (whole-film low confidence).

Calibration (:meth:`DomainModel.calibrate`) uses the validation split, which the network and
the component fits never saw: each component is divided by its validation median, the score of
a film is the largest of these ratios, and the threshold is the split-conformal quantile of the
validation scores at the target coverage (the ``ceil((n + 1) * coverage)``-th smallest), so at
least that share of in-distribution films passes, in expectation. The stored per-component
thresholds are that quantile times each median: a film fails when **any** component exceeds its
threshold, and the reason names which. :meth:`DomainModel.score` reports ``score`` as the largest
ratio of a component to its threshold (``<= 1``: in domain).

Stored as ``domain.pt`` (tensors, floats and strings only: ``torch.load(weights_only=True)``)
and ``domain.json`` (what a person reads). Everything is float64 torch; nothing else needed.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "COMPONENTS",
    "DomainModel",
    "DomainResult",
    "GaussianFit",
    "conformal_threshold",
    "image_statistics",
    "ledoit_wolf",
    "pool_features",
]

#: The components a :class:`DomainModel` may have, in report order.
COMPONENTS = ("features", "image", "confidence")

_REASONS = {
    "features": "film unlike the training data: feature distance {value:.1f}, threshold {threshold:.1f}",
    "image": "image statistics unlike the training films: distance {value:.1f}, threshold {threshold:.1f}",
    "confidence": "low confidence over the whole film: median point confidence {conf:.2f}, threshold {conf_t:.2f}",
}
_FORMAT = "mimtl.domain/1"


def pool_features(output: Any) -> torch.Tensor:
    """``(B, C)`` global average of a layer's output ``(B, C, *spatial)``; a list/tuple (an encoder's
    feature pyramid) gives its last (deepest) entry; a ``(B, C)`` output is returned as it is (float64)."""
    if isinstance(output, (list, tuple)):
        output = output[-1]
    if isinstance(output, Mapping):
        output = list(output.values())[-1]
    x = torch.as_tensor(output).detach()
    x = x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x
    x = x.to(torch.float64)
    return x.flatten(2).mean(dim=2) if x.dim() > 2 else x.reshape(x.shape[0], -1)


def image_statistics(images: torch.Tensor) -> torch.Tensor:
    """A ``(B, 32)`` vector of simple statistics per image of a ``(B, C, H, W)`` batch (channels averaged).

    Each image is min-max scaled to [0, 1] first (constant images give zeros), so any affine
    intensity normalisation of the network input gives the same vector. Statistics: mean, std,
    percentiles 1/5/25/50/75/95/99, the share of pixels below 0.05 and above 0.95, the mean absolute
    gradient along each axis, the mean absolute difference to a 3 x 3 box blur (noise), the
    correlations with the image mirrored along each axis (a frontal chest film is left-right
    symmetric), and the means of a 4 x 4 grid of blocks (the layout: where the bright mediastinum
    and the dark lungs are).
    """
    # float32 with one sort for all percentiles: the float64 of the fit gave the same vectors to
    # ~1e-7 at a third of the cost, which a full-size film's budget notices
    x = torch.as_tensor(images).detach()
    x = x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x
    x = x.to(torch.float32)
    if x.dim() == 3:
        x = x[:, None]
    x = x.mean(dim=1)  # (B, H, W)
    b = x.shape[0]
    flat = x.reshape(b, -1)
    lo, hi = flat.aminmax(dim=1)
    span = hi - lo
    x = torch.where(span.view(-1, 1, 1) > 1e-12, (x - lo.view(-1, 1, 1)) / span.clamp_min(1e-12).view(-1, 1, 1), 0.0)
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    flat = x.reshape(b, -1)
    q = _percentiles(flat, (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99))
    gx = (x[:, 1:, :] - x[:, :-1, :]).abs().mean(dim=(1, 2))
    gy = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2))
    blur = torch.nn.functional.avg_pool2d(x[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    noise = (x - blur).abs().mean(dim=(1, 2))

    def corr(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        a = a.reshape(b, -1) - a.reshape(b, -1).mean(dim=1, keepdim=True)
        c = c.reshape(b, -1) - c.reshape(b, -1).mean(dim=1, keepdim=True)
        den = (a.norm(dim=1) * c.norm(dim=1)).clamp_min(1e-12)
        return (a * c).sum(dim=1) / den

    sym0, sym1 = corr(x, x.flip(1)), corr(x, x.flip(2))
    blocks = torch.nn.functional.adaptive_avg_pool2d(x[:, None], 4).reshape(b, 16)
    dark, bright = (flat < 0.05).float().mean(dim=1), (flat > 0.95).float().mean(dim=1)
    stats = [flat.mean(dim=1), flat.std(dim=1), q, dark, bright, gx, gy, noise, sym0, sym1, blocks]
    return torch.cat([s.reshape(b, -1) for s in stats], dim=1).to(torch.float64)


def _percentiles(flat: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """``(B, len(qs))`` percentiles of each row, linearly interpolated as :func:`torch.quantile`."""
    # NumPy's sort is SIMD-vectorised where torch's CPU sort is not (20x here on 256 px films)
    values = torch.from_numpy(np.sort(flat.numpy(), axis=1)) if flat.device.type == "cpu" else flat.sort(dim=1).values
    pos = torch.tensor(qs, dtype=torch.float64) * (flat.shape[1] - 1)
    below = pos.floor().long()
    above = pos.ceil().long()
    frac = (pos - below).to(flat.dtype)
    return values[:, below] + (values[:, above] - values[:, below]) * frac


def ledoit_wolf(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Ledoit-Wolf shrunk covariance of centred samples ``x`` ``(n, p)`` (float64) and its shrinkage.

    ``(1 - a) S + a mu I`` with ``S`` the empirical covariance, ``mu = trace(S) / p`` and ``a`` the
    Ledoit-Wolf (2004) estimate of the optimal intensity (as scikit-learn's ``ledoit_wolf``).
    """
    x = x.to(torch.float64)
    n, p = x.shape
    s = x.T @ x / n
    mu = float(torch.trace(s)) / p
    x2 = x**2
    beta_ = float((x2.T @ x2).sum())
    delta_ = float((s**2).sum())
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * float(torch.trace(s)) + p * mu**2) / p
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 or delta == 0 else beta / delta
    cov = (1.0 - shrinkage) * s + shrinkage * mu * torch.eye(p, dtype=torch.float64)
    return cov, float(shrinkage)


@dataclass
class GaussianFit:
    """A Gaussian of standardised vectors with a Ledoit-Wolf covariance; :meth:`distance` is Mahalanobis.

    The shrunk covariance ``(1 - a) S + a mu I`` is kept in its eigenbasis: the ``r <= n - 1``
    directions where the training films vary (``basis`` ``(p, r)``, their shrunk ``variances``) and
    one ``residual`` variance ``a mu`` for every other direction. The distance is the same as with
    the full ``p x p`` precision matrix, but a 1280-channel backbone fitted on 280 films stores
    1280 x 279 numbers instead of 1280 x 1280.
    """

    mean: torch.Tensor
    scale: torch.Tensor
    basis: torch.Tensor
    variances: torch.Tensor
    residual: float
    shrinkage: float

    @classmethod
    def fit(cls, x: torch.Tensor, min_scale: float = 1e-6) -> GaussianFit:
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.dim() != 2 or x.shape[0] < 2:
            raise ValueError(f"need (n >= 2, p) samples to fit, got shape {list(x.shape)}.")
        if not torch.isfinite(x).all():
            raise ValueError("the samples to fit hold NaN or infinite values.")
        n, p = x.shape
        mean = x.mean(dim=0)
        scale = x.std(dim=0)
        top = scale.max().clamp_min(1e-12)
        # a channel that never varies is divided by the largest scale: a change in it still counts
        scale = torch.where(scale > min_scale * top, scale, top)
        z = (x - mean) / scale
        _, shrinkage = ledoit_wolf(z)
        s = z.T @ z / n
        mu = float(torch.trace(s)) / p
        eigval, eigvec = torch.linalg.eigh(s)
        keep = eigval > 1e-10 * eigval.max().clamp_min(1e-300)
        basis, eigval = eigvec[:, keep], eigval[keep]
        residual = max(shrinkage * mu, 1e-6 * mu, 1e-12)
        variances = ((1.0 - shrinkage) * eigval + shrinkage * mu).clamp_min(residual)

        def stored(t: torch.Tensor) -> torch.Tensor:  # as domain.pt holds it: calibrated on what ships
            return t.float().double()

        return cls(stored(mean), stored(scale), stored(basis), stored(variances), residual, shrinkage)

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        z = (torch.as_tensor(x, dtype=torch.float64) - self.mean) / self.scale
        proj = z @ self.basis
        inside = (proj**2 / self.variances).sum(dim=1)
        outside = ((z**2).sum(dim=1) - (proj**2).sum(dim=1)).clamp_min(0.0) / self.residual
        d = torch.sqrt((inside + outside).clamp_min(0.0))
        return torch.nan_to_num(d, nan=math.inf)

    def state(self, prefix: str) -> dict[str, Any]:
        # float32 on disk (half the size); distances are computed in float64 again after loading
        return {
            f"{prefix}.mean": self.mean.float(),
            f"{prefix}.scale": self.scale.float(),
            f"{prefix}.basis": self.basis.float(),
            f"{prefix}.variances": self.variances.float(),
            f"{prefix}.residual": float(self.residual),
            f"{prefix}.shrinkage": float(self.shrinkage),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], prefix: str) -> GaussianFit:
        def t(key: str) -> torch.Tensor:
            return state[f"{prefix}.{key}"].to(torch.float64)

        return cls(
            t("mean"),
            t("scale"),
            t("basis"),
            t("variances"),
            float(state[f"{prefix}.residual"]),
            float(state[f"{prefix}.shrinkage"]),
        )


def conformal_threshold(scores: Sequence[float] | torch.Tensor, coverage: float) -> float:
    """The ``ceil((n + 1) * coverage)``-th smallest of ``scores`` (split conformal; the largest when that exceeds n)."""
    s = torch.sort(torch.as_tensor(scores, dtype=torch.float64).reshape(-1)).values
    if s.numel() == 0:
        raise ValueError("no calibration scores.")
    k = min(math.ceil((s.numel() + 1) * coverage), s.numel())
    return float(s[k - 1])


def _replace_atomic(path: Path, write: Callable[[str], Any]) -> None:
    """``write(tmp)`` a temporary file beside ``path``, then rename it over ``path`` (removed on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class DomainResult:
    """The verdict on one input: ``score`` (largest component / threshold ratio), ``in_domain``, ``reason``
    (empty when in domain) and the raw component values."""

    score: float
    in_domain: bool
    reason: str
    components: dict[str, float] = field(default_factory=dict)


@dataclass
class DomainModel:
    """Feature / image-statistics / confidence out-of-distribution model, fitted and calibrated per bundle.

    Example::

        model = DomainModel.fit(train_features, train_stats, layer="backbone.net.head")
        model.calibrate(val_features, val_stats, coverage=0.95)
        model.save("models/domain.pt")            # and models/domain.json
        result = DomainModel.load("models/domain.pt").score(features, stats)[0]
        result.in_domain, result.reason

    Attributes:
        fits: the component fits (``features``, ``image``), each a :class:`GaussianFit`.
        thresholds: per component, the calibrated threshold in its own unit (empty until calibrated).
        coverage: the target share of in-distribution films that pass.
        info: free-form strings and numbers for the JSON (layer, n_train, data description, ...).
    """

    fits: dict[str, GaussianFit]
    use_confidence: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    references: dict[str, float] = field(default_factory=dict)
    coverage: float = 0.95
    info: dict[str, Any] = field(default_factory=dict)

    # -- fitting -----------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        features: torch.Tensor,
        stats: torch.Tensor | None = None,
        use_confidence: bool = False,
        **info: Any,
    ) -> DomainModel:
        """Fit the feature (and image-statistics) Gaussians on the training films' vectors."""
        fits = {"features": GaussianFit.fit(features)}
        if stats is not None:
            fits["image"] = GaussianFit.fit(stats)
        n = int(torch.as_tensor(features).shape[0])
        return cls(fits=fits, use_confidence=use_confidence, info={"n_train": n, **info})

    @property
    def components(self) -> list[str]:
        return [c for c in COMPONENTS if c in self.fits or (c == "confidence" and self.use_confidence)]

    def raw(
        self, features: torch.Tensor, stats: torch.Tensor | None = None, confidence: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The component values ``(B,)`` each (larger = stranger)."""
        out = {"features": self.fits["features"].distance(features)}
        if "image" in self.fits:
            if stats is None:
                raise ValueError("this domain model has an image-statistics component: pass stats.")
            out["image"] = self.fits["image"].distance(stats)
        if self.use_confidence:
            if confidence is None:
                raise ValueError("this domain model has a confidence component: pass the median confidences.")
            out["confidence"] = 1.0 - torch.as_tensor(confidence, dtype=torch.float64).reshape(-1)
        return out

    def calibrate(
        self,
        features: torch.Tensor,
        stats: torch.Tensor | None = None,
        confidence: torch.Tensor | None = None,
        coverage: float = 0.95,
    ) -> float:
        """Set the thresholds so that ``coverage`` of these (validation) films pass; return the ratio threshold."""
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}.")
        raw = self.raw(features, stats, confidence)
        self.references = {c: max(float(v.median()), 1e-6) for c, v in raw.items()}
        ratio = torch.stack([raw[c] / self.references[c] for c in raw]).max(dim=0).values
        t = conformal_threshold(ratio, coverage)
        self.thresholds = {c: t * self.references[c] for c in raw}
        self.coverage = float(coverage)
        self.info["n_val"] = int(ratio.numel())
        self.info["val_pass_rate"] = float((ratio <= t).double().mean())
        return t

    # -- scoring -----------------------------------------------------------------------------------
    def score(
        self, features: torch.Tensor, stats: torch.Tensor | None = None, confidence: torch.Tensor | None = None
    ) -> list[DomainResult]:
        """One :class:`DomainResult` per row."""
        if not self.thresholds:
            raise ValueError("the domain model is not calibrated: call calibrate() on the validation films.")
        raw = self.raw(features, stats, confidence)
        results = []
        for i in range(next(iter(raw.values())).shape[0]):
            values = {c: float(v[i]) for c, v in raw.items()}
            ratios = {c: values[c] / self.thresholds[c] if self.thresholds[c] > 0 else math.inf for c in values}
            score = max(ratios.values())
            if not math.isfinite(score):
                score = math.inf
            failed = [c for c in self.components if not ratios[c] <= 1.0]
            reasons = [self._reason(c, values[c]) for c in failed]
            results.append(DomainResult(score, not failed, "; ".join(reasons), values))
        return results

    def _reason(self, component: str, value: float) -> str:
        t = self.thresholds[component]
        return _REASONS[component].format(value=value, threshold=t, conf=1.0 - value, conf_t=1.0 - t)

    @property
    def confidence_threshold(self) -> float | None:
        """The median point confidence below which a film is out of domain (None without that component)."""
        return 1.0 - self.thresholds["confidence"] if "confidence" in self.thresholds else None

    # -- files -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors, floats and strings only (``torch.load(weights_only=True)`` reads it)."""
        state: dict[str, Any] = {"format": _FORMAT, "coverage": self.coverage, "components": ",".join(self.components)}
        for name, fit in self.fits.items():
            state.update(fit.state(name))
        for c, t in self.thresholds.items():
            state[f"threshold.{c}"] = float(t)
            state[f"reference.{c}"] = float(self.references[c])
        for k, v in self.info.items():
            if isinstance(v, (bool, int, float, str)):
                state[f"info.{k}"] = v if not isinstance(v, bool) else str(v).lower()
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> DomainModel:
        if state.get("format") != _FORMAT:
            raise ValueError(f"not a mimtl domain model (format {state.get('format')!r}, expected {_FORMAT!r}).")
        components = [c for c in f"{state['components']}".split(",") if c]
        fits = {c: GaussianFit.from_state(state, c) for c in components if c in ("features", "image")}
        thresholds = {c: float(state[f"threshold.{c}"]) for c in components if f"threshold.{c}" in state}
        references = {c: float(state[f"reference.{c}"]) for c in components if f"reference.{c}" in state}
        info = {k[len("info.") :]: v for k, v in state.items() if k.startswith("info.")}
        return cls(fits, "confidence" in components, thresholds, references, float(state["coverage"]), info)

    def summary(self) -> dict[str, Any]:
        """What ``domain.json`` holds."""
        out: dict[str, Any] = {
            "method": "Mahalanobis distance (Ledoit-Wolf shrinkage covariance of standardised vectors) of the "
            "network's pooled features"
            + (" and of image statistics" if "image" in self.fits else "")
            + (", and 1 - median point confidence" if self.use_confidence else "")
            + "; each component divided by its validation median, the largest ratio thresholded at the "
            "split-conformal quantile of the validation films",
            "coverage_target": self.coverage,
            "components": self.components,
            "thresholds": {c: round(t, 4) for c, t in self.thresholds.items()},
            "shrinkage": {c: round(f.shrinkage, 4) for c, f in self.fits.items()},
            "dimensions": {c: int(f.mean.numel()) for c, f in self.fits.items()},
        }
        if self.confidence_threshold is not None:
            out["median_confidence_threshold"] = round(self.confidence_threshold, 4)
        out.update({k: v for k, v in self.info.items()})
        return out

    def save(self, path: str | os.PathLike, json_path: str | os.PathLike | None = None) -> Path:
        """Write ``path`` (``torch.save``) and its JSON summary (``path`` with ``.json``) atomically."""
        path = Path(path)
        # saved through a buffer: torch.save names the archive inside after the file, and the temporary
        # file's name is random, so the same model would not give the same bytes
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        _replace_atomic(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
        json_path = Path(json_path) if json_path is not None else path.with_suffix(".json")
        text = json.dumps(self.summary(), indent=2) + "\n"
        _replace_atomic(json_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DomainModel:
        """Read a ``domain.pt`` with ``torch.load(weights_only=True)``."""
        return cls.from_state_dict(torch.load(Path(path), map_location="cpu", weights_only=True))
