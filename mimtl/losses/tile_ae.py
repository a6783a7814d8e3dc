"""The T-AE pretraining loss: permutation CE + L1 + MSE reconstruction + sliced Wasserstein to a Gaussian.

Chen et al. (arXiv 2108.03823) train the tile autoencoder with a cross-entropy on the permutation
class, L1 and MSE between the rebuilt and the original image, and a sliced-Wasserstein (SW) term
that pulls the tile latents towards a standard Gaussian prior. Here:

* the reconstruction terms compare the decoder's sigmoid output with the *original* image in
  [0, 1] (not the shuffled mosaic, not a tanh output);
* the SW term is computed over **all tile latents of the batch** (``B x 9`` samples); the public
  code computed it per tile at batch size 1, one sample, where a sorted 1-sample distribution
  says nothing about its shape;
* the weights are arguments. Defaults ``ce=1, l1=10, mse=10, sw=0.1``: at initialisation the CE
  of 100 classes is ln(100) = 4.6 and the L1 / MSE of a [0, 1] film against a mid-gray output
  about 0.25 / 0.08, so a factor 10 puts the reconstruction (about 3) beside the permutation task
  instead of below it; SW keeps the 100 : 1 ratio to each reconstruction term of the paper's
  code (1000, 1000, 10), a regulariser rather than a goal (see the bundle README).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TileAELoss", "sliced_wasserstein"]


def sliced_wasserstein(
    latent: torch.Tensor, num_projections: int = 64, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Squared sliced 2-Wasserstein distance between the samples ``latent`` and a standard Gaussian.

    The ``(M, D)`` samples (every further dimension but the last is flattened into ``M``) are
    projected on ``num_projections`` random unit directions; each projection of ``N(0, I)`` is
    ``N(0, 1)``, so ``M`` Gaussian draws per direction stand for the prior. The sorted projections
    are compared pairwise (the 1D optimal transport) and the squared differences averaged.
    About 0 for Gaussian samples (it shrinks as M grows), about ``|shift|^2 / D`` for samples shifted
    by ``shift``.

    Args:
        latent: samples, ``(..., D)``; at least 2 of them.
        num_projections: random directions.
        generator: for the directions and prior draws (default: torch's global RNG, seeded by the run).

    Raises:
        ValueError: fewer than 2 samples.
    """
    z = latent.reshape(-1, latent.shape[-1]).float()
    m, d = z.shape
    if m < 2:
        raise ValueError(f"the sliced-Wasserstein term needs at least 2 latent samples (the batch's tiles), got {m}.")
    theta = torch.randn(d, num_projections, generator=generator, device=z.device if generator is None else "cpu")
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(z.device)
    prior = torch.randn(m, num_projections, generator=generator, device=z.device if generator is None else "cpu")
    proj = torch.sort(z @ theta, dim=0).values
    ref = torch.sort(prior.to(z.device), dim=0).values
    return ((proj - ref) ** 2).mean()


class TileAELoss(nn.Module):
    """``ce * CE(permutation) + l1 * L1 + mse * MSE + sw * SW(latents, N(0, I))``.

    ``forward(pred, target)``: ``pred`` is :class:`~mimtl.networks.TileAutoencoder`'s output dict
    (``perm_logits``, ``recon``, ``latent``); ``target`` a dict with the original image
    (``"image"``, in [0, 1], the shape of ``recon``) and the permutation index (``"perm"``).
    The terms of the last call are kept in :attr:`terms` (floats), for logging.

    Raises:
        ValueError: a negative weight, or a reconstruction whose shape differs from the image's.
    """

    def __init__(
        self, ce: float = 1.0, l1: float = 10.0, mse: float = 10.0, sw: float = 0.1, num_projections: int = 64
    ):
        super().__init__()
        for name, w in (("ce", ce), ("l1", l1), ("mse", mse), ("sw", sw)):
            if w < 0:
                raise ValueError(f"TileAELoss weight {name} must be >= 0, got {w}.")
        self.weights = {"ce": float(ce), "l1": float(l1), "mse": float(mse), "sw": float(sw)}
        self.num_projections = int(num_projections)
        self.terms: dict[str, float] = {}

    def components(
        self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The four unweighted terms."""
        recon, image = pred["recon"].float(), target["image"].float()
        if recon.shape != image.shape:
            raise ValueError(f"reconstruction {tuple(recon.shape)} and image {tuple(image.shape)} differ in shape.")
        return {
            "ce": F.cross_entropy(pred["perm_logits"].float(), target["perm"].reshape(-1).long()),
            "l1": F.l1_loss(recon, image),
            "mse": F.mse_loss(recon, image),
            "sw": sliced_wasserstein(pred["latent"], self.num_projections)
            if self.weights["sw"] > 0
            else recon.new_zeros(()),
        }

    def forward(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        terms = self.components(pred, target)
        self.terms = {k: float(v.detach()) for k, v in terms.items()}
        return sum(self.weights[k] * v for k, v in terms.items())
