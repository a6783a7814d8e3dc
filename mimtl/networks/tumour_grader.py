"""Inference of the ACGAN method in one network: tumour mask, pooled bottleneck and grade from one MRI.

* :class:`GradeHead`: the stage-3 classifier as a plain module. The fitted imblearn pipeline
  (median imputation -> standardisation -> [sampler] -> :class:`~mimtl.engines.feature_classifier.FeatureMLPClassifier`)
  becomes buffers (``fill``, ``mean``, ``scale``) and MONAI's ``FullyConnectedNet``
  (:meth:`GradeHead.from_pipeline`); a sampler only acts while fitting, so it leaves nothing here.
  TorchScript-scriptable.
* :func:`save_grade_head` / :func:`load_grade_head`: a file of plain tensors and JSON-able values
  (``torch.load(weights_only=True)`` reads it).
* :class:`TumourGrader`: a SegResNet and a head; ``forward(image) -> (seg_logits, grade_probs)`` with
  one encoder pass: the bottleneck is decoded to the segmentation and pooled inside the predicted
  tumour (as :class:`~mimtl.networks.tumour_features.TumourFeatureExtractor` with
  ``mask_source="prediction", empty_mask="global"`` does) for the grade.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import FullyConnectedNet, SegResNet
from torch import nn

from mimtl.errors import DataValidationError
from mimtl.networks.tumour_features import POOLINGS

__all__ = [
    "GRADE_HEAD_FORMAT",
    "GradeHead",
    "GradeHeadError",
    "TumourGrader",
    "load_grade_head",
    "pool_bottleneck",
    "save_grade_head",
]

#: The ``format`` entry of a grade-head file.
GRADE_HEAD_FORMAT = "mimtl.grade_head/1"


class GradeHeadError(DataValidationError):
    """A file that is not a grade head (or a broken one); the message names the file."""


class GradeHead(nn.Module):
    """The grading classifier on pooled features: NaN -> ``fill``, ``(x - mean) / scale``, then an MLP.

    Args:
        in_features: length of a feature vector.
        num_classes: number of grades.
        hidden: widths of the MLP's hidden layers (as :class:`FeatureMLPClassifier`'s ``hidden``).
        dropout: its dropout (inactive in eval mode).

    ``forward(features (B, F)) -> logits (B, K)``.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (64,), dropout: float = 0.2) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.num_classes = int(num_classes)
        self.hidden = [int(h) for h in hidden]
        self.dropout = float(dropout)
        self.register_buffer("fill", torch.zeros(self.in_features))
        self.register_buffer("mean", torch.zeros(self.in_features))
        self.register_buffer("scale", torch.ones(self.in_features))
        # laid out as FeatureMLPClassifier builds it, so its state_dict loads into ``mlp``
        self.mlp = FullyConnectedNet(self.in_features, self.num_classes, list(self.hidden), dropout=self.dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.to(self.mean.dtype)
        x = torch.where(torch.isnan(x), self.fill.expand_as(x), x)
        x = (x - self.mean) / self.scale
        return self.mlp(x)

    @classmethod
    def from_pipeline(
        cls, pipeline: Any, hidden: Sequence[int] | None = None, dropout: float | None = None
    ) -> GradeHead:
        """The head of a fitted pipeline (steps ``impute``, ``scale``, [``sampler``], ``classifier``).

        ``hidden``/``dropout`` default to the classifier's own.
        """
        steps = dict(pipeline.named_steps) if hasattr(pipeline, "named_steps") else dict(pipeline)
        missing = [s for s in ("impute", "scale", "classifier") if s not in steps]
        if missing:
            raise ValueError(f"GradeHead.from_pipeline: the pipeline has no step {missing} (steps: {list(steps)})")
        imputer, scaler, clf = steps["impute"], steps["scale"], steps["classifier"]
        if not hasattr(clf, "network_"):
            raise ValueError("GradeHead.from_pipeline: the pipeline's classifier is not fitted (no network_)")
        fill = np.nan_to_num(np.asarray(imputer.statistics_, dtype=np.float64), nan=0.0)
        mean = np.asarray(scaler.mean_ if scaler.mean_ is not None else np.zeros_like(fill), dtype=np.float64)
        scale = np.asarray(scaler.scale_ if scaler.scale_ is not None else np.ones_like(fill), dtype=np.float64)
        head = cls(
            len(fill),
            len(clf.classes_),
            hidden=clf.hidden if hidden is None else hidden,
            dropout=clf.dropout if dropout is None else dropout,
        )
        head.fill.copy_(torch.as_tensor(fill, dtype=torch.float32))
        head.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        head.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        head.mlp.load_state_dict({k: v.detach().cpu() for k, v in clf.network_.state_dict().items()})
        return head.eval()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def save_grade_head(
    head: GradeHead, path: str | os.PathLike, class_names: Sequence[Any], info: Mapping[str, Any] | None = None
) -> Path:
    """Write ``head`` to ``path`` atomically: its config, tensors (CPU), class names and ``info``.

    ``info`` must be JSON-able (numpy scalars and arrays are converted); the file loads with
    ``torch.load(path, weights_only=True)``.
    """
    from mimtl.utils import replace_atomic

    names = [f"{c}" for c in class_names]
    if len(names) != head.num_classes:
        raise ValueError(f"save_grade_head: {len(names)} class names for a head of {head.num_classes} classes")
    payload = {
        "format": GRADE_HEAD_FORMAT,
        "config": {
            "in_features": head.in_features,
            "num_classes": head.num_classes,
            "hidden": list(head.hidden),
            "dropout": head.dropout,
        },
        "class_names": names,
        "state_dict": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()},
        "info": json.loads(json.dumps(dict(info or {}), default=_jsonable)),
    }
    return replace_atomic(Path(path), lambda tmp: torch.save(payload, tmp))


def load_grade_head(path: str | os.PathLike) -> tuple[GradeHead, dict[str, Any]]:
    """``(head in eval mode, info)`` from a :func:`save_grade_head` file; ``info`` holds ``class_names`` too.

    Raises:
        FileNotFoundError: no file at ``path``.
        GradeHeadError: the file is not a grade head (another checkpoint, a broken file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: grade head not found (write one with mimtl.engines.grader.fit_grader)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise GradeHeadError(f"{path}: not a grade head file ({type(e).__name__}: {e})") from e
    if not isinstance(payload, Mapping) or payload.get("format") != GRADE_HEAD_FORMAT:
        keys = sorted(payload)[:8] if isinstance(payload, Mapping) else type(payload).__name__
        raise GradeHeadError(
            f"{path}: not a grade head (no format {GRADE_HEAD_FORMAT!r}; it holds {keys}); "
            "write one with mimtl.engines.grader.fit_grader"
        )
    try:
        config = payload["config"]
        head = GradeHead(config["in_features"], config["num_classes"], config["hidden"], config["dropout"])
        head.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise GradeHeadError(f"{path}: a broken grade head ({type(e).__name__}: {e})") from e
    info = dict(payload.get("info") or {})
    info["class_names"] = list(payload["class_names"])
    return head.eval(), info


def pool_bottleneck(
    bottleneck: torch.Tensor, mask: torch.Tensor | None, pooling: str = "mask"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool ``bottleneck`` (B, C, *s) as :class:`TumourFeatureExtractor` does; ``(features, empty)``.

    ``mask`` (B, 1, *spatial) counts every voxel > 0 as tumour; the share of tumour voxels under each
    bottleneck voxel weights the average. A case whose mask is empty gets the global pooling as its
    mask features; ``empty`` (B,) flags those cases.
    """
    dims = [d for d in range(2, bottleneck.dim())]  # a list: TorchScript takes no tuple(range)
    pooled_global = bottleneck.mean(dim=dims)
    empty = torch.zeros(bottleneck.shape[0], dtype=torch.bool, device=bottleneck.device)
    if pooling == "global":
        return pooled_global, empty
    if mask is None:
        raise ValueError("pool_bottleneck: mask pooling needs the tumour mask")
    mask = (mask > 0).to(bottleneck.dtype)
    weight = (
        F.adaptive_avg_pool3d(mask, bottleneck.shape[2:])
        if bottleneck.dim() == 5
        else F.adaptive_avg_pool2d(mask, bottleneck.shape[2:])
    )
    total = weight.sum(dim=dims)  # (B, 1)
    pooled_mask = (bottleneck * weight).sum(dim=dims) / total.clamp_min(1e-12)
    empty = total[:, 0] <= 0
    pooled_mask = torch.where(empty[:, None], pooled_global, pooled_mask)
    if pooling == "mask":
        return pooled_mask, empty
    return torch.cat([pooled_mask, pooled_global], dim=1), empty


class TumourGrader(nn.Module):
    """Segmentation and grade of a tumour from one encoder pass of a SegResNet.

    Args:
        segmenter: the stage-1 :class:`~monai.networks.nets.SegResNet` (its features trained the head).
        head: the :class:`GradeHead` fitted on its pooled features.
        pooling: the pooling the features were extracted with (``"mask"``, ``"global"``, ``"both"``).

    ``forward(image (B, C, *spatial)) -> (seg_logits (B, classes, *spatial), grade_probs (B, K))``; the
    tumour mask is ``argmax(seg_logits) > 0``; a case with no predicted tumour voxel is graded from
    its global pooling. TorchScript-scriptable (with MONAI's SegResNet).
    """

    def __init__(self, segmenter: SegResNet, head: GradeHead, pooling: str = "mask") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"TumourGrader: pooling must be one of {POOLINGS}, got {pooling!r}")
        channels = segmenter.init_filters * 2 ** (len(segmenter.blocks_down) - 1)
        n_features = channels * (2 if pooling == "both" else 1)
        if head.in_features != n_features:
            raise ValueError(
                f"TumourGrader: the head takes {head.in_features} features, but {pooling!r} pooling of this "
                f"SegResNet's bottleneck ({channels} channels) gives {n_features}; the head was fitted on "
                "features of another network or pooling"
            )
        self.segmenter = segmenter
        self.head = head
        self.pooling = pooling

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(seg_logits, pooled features)`` of one encoder pass."""
        bottleneck, down = self.segmenter.encode(image)
        down.reverse()
        seg = self.segmenter.decode(bottleneck, down)
        mask = None if self.pooling == "global" else (seg.argmax(1, keepdim=True) > 0)
        pooled, _ = pool_bottleneck(bottleneck, mask, self.pooling)
        return seg, pooled

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg, pooled = self.features(image)
        return seg, torch.softmax(self.head(pooled), dim=1)
