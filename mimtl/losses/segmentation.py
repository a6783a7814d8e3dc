"""Segmentation loss with an optional auxiliary reconstruction: Dice + BCE + w * (MSE + L1), on logits.

The loss of Chen et al. (arXiv 2108.03823) for a segmentation network with a parallel decoder
that rebuilds its input. Dice and BCE are computed from the segmentation **logits** (MONAI
``DiceCELoss`` with ``sigmoid=True``: the sigmoid is inside, and no threshold comes before the
loss; the paper's public code thresholded the output first, so its segmentation head got no
gradient). The reconstruction channel is a logit too, mapped through a sigmoid and compared with
the input image in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

__all__ = ["SegReconLoss"]


class SegReconLoss(nn.Module):
    """``Dice + BCE`` of the segmentation channels, plus ``w * (MSE + L1)`` of the reconstruction channel.

    With ``reconstruction=True`` the prediction is ``(B, K + 1, ...)`` (the training output of
    :class:`~mimtl.networks.AuxReconSegNet`: K segmentation logits, then the reconstruction logit) and
    the target ``(B, K + 1, ...)`` (K binary masks, then the input image in [0, 1]; MONAI's
    ``ConcatItemsd`` builds it in the training transforms). Without, both are ``(B, K, ...)``.

    Args:
        reconstruction: whether the last channel of prediction and target is the reconstruction.
        reconstruction_weight: ``w`` (0.1 in the paper).
        dice_weight: weight of the Dice term.
        bce_weight: weight of the BCE term.

    Raises:
        ValueError: prediction and target of different shapes.
    """

    def __init__(
        self,
        reconstruction: bool = False,
        reconstruction_weight: float = 0.1,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.reconstruction = bool(reconstruction)
        self.reconstruction_weight = float(reconstruction_weight)
        self.seg = DiceCELoss(sigmoid=True, lambda_dice=dice_weight, lambda_ce=bce_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            extra = " (with reconstruction=True both carry the reconstruction as their last channel)"
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ{extra}.")
        pred, target = pred.float(), target.float()
        if not self.reconstruction:
            return self.seg(pred, target)
        seg = self.seg(pred[:, :-1], target[:, :-1])
        recon, image = torch.sigmoid(pred[:, -1:]), target[:, -1:]
        return seg + self.reconstruction_weight * (F.mse_loss(recon, image) + F.l1_loss(recon, image))
