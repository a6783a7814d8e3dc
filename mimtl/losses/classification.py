"""Multi-label classification losses."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MaskedBCEWithLogitsLoss", "classification_loss"]


class MaskedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy on logits that ignores label entries equal to ``ignore_value``.

    CheXpert's uncertain labels under the ``"ignore"`` policy are written as ``-1`` by mimtl's
    adapter: they must not count as negatives (what a plain ``BCEWithLogitsLoss`` would do with
    a clipped target) nor as positives. With no such entries it equals ``BCEWithLogitsLoss``.

    Args:
        ignore_value: the label value to leave out.
        pos_weight: optional per-label weight of the positives (as in ``BCEWithLogitsLoss``).
    """

    def __init__(self, ignore_value: float = -1.0, pos_weight: torch.Tensor | list[float] | None = None) -> None:
        super().__init__()
        self.ignore_value = float(ignore_value)
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(target.shape)} differ in shape.")
        target = target.to(logits.dtype)
        keep = (target != self.ignore_value).to(logits.dtype)
        loss = nn.functional.binary_cross_entropy_with_logits(
            logits, target.clamp(0, 1), pos_weight=self.pos_weight, reduction="none"
        )
        return (loss * keep).sum() / keep.sum().clamp_min(1.0)


def classification_loss(multi_label: bool = True, pos_weight: list[float] | None = None) -> nn.Module:
    """The loss of a classifier whose labels are vectors: one switch between the two tasks.

    ``multi_label=True``: independent findings, :class:`MaskedBCEWithLogitsLoss` (sigmoid outputs).
    ``False``: one class per image, ``CrossEntropyLoss`` with the one-hot label vectors as class
    probabilities (softmax outputs).
    """
    if multi_label:
        return MaskedBCEWithLogitsLoss(pos_weight=pos_weight)
    if pos_weight is not None:
        raise ValueError("pos_weight applies to multi-label (BCE) training only.")
    return nn.CrossEntropyLoss()
