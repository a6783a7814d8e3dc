"""Losses of the class-conditional feature GAN (ACGAN, TAC-GAN, WGAN-GP), all on logits.

:class:`ACGANLoss` computes the discriminator's and the generator's losses from a
:class:`~mimtl.networks.feature_gan.FeatureDiscriminator`'s outputs. The adversarial term is
``binary_cross_entropy_with_logits`` (or the Wasserstein critic with a gradient penalty), the
auxiliary term is ``cross_entropy`` on the class logits. Both take raw logits: a softmax (or
sigmoid) applied before them would be applied twice, which flattens the gradients and is the bug
of popular public ACGAN implementations.

Terms (``s`` = label smoothing of the real target, ``CE`` = cross-entropy, ``C`` = classifier
head, ``C'`` = twin head):

* ACGAN (Odena et al. 2017): D minimises ``BCE(D(x), 1-s) + BCE(D(G(z,y)), 0) + CE(C(x), y_x) +
  CE(C(G(z,y)), y)``; G minimises ``BCE(D(G(z,y)), 1) + CE(C(G(z,y)), y)``.
* TAC-GAN (Gong et al. 2019): D's classifier learns on real data only and a twin classifier
  learns the labels of the fakes; G minimises ``... + CE(C(G), y) - CE(C'(G), y)``, which
  removes ACGAN's bias toward samples far from the class boundary.
* WGAN-GP (Gulrajani et al. 2017): critic ``mean D(G) - mean D(x) + gp_weight * (||grad D(x_hat)|| - 1)^2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ADVERSARIAL_LOSSES", "ACGANLoss", "gradient_penalty"]

ADVERSARIAL_LOSSES = ("bce", "wgan-gp")


def gradient_penalty(
    discriminator: nn.Module, reals: torch.Tensor, fakes: torch.Tensor, y: torch.Tensor | None
) -> torch.Tensor:
    """WGAN-GP's penalty ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` on random interpolates of reals and fakes."""
    n = min(reals.shape[0], fakes.shape[0])
    alpha = torch.rand(n, 1, device=reals.device, dtype=reals.dtype)
    x_hat = (alpha * reals[:n].detach() + (1 - alpha) * fakes[:n].detach()).requires_grad_(True)
    adv = discriminator(x_hat, None if y is None else y[:n])[0]
    (grad,) = torch.autograd.grad(adv.sum(), x_hat, create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


class ACGANLoss(nn.Module):
    """Discriminator and generator losses of ACGAN / TAC-GAN / WGAN-GP on logits.

    Args:
        adversarial: ``"bce"`` (non-saturating GAN, BCE-with-logits) or ``"wgan-gp"``.
        aux_weight: weight of the auxiliary (class) cross-entropy terms.
        label_smoothing: one-sided smoothing: the real target of D's adversarial BCE is ``1 - s``.
        tac: TAC-GAN: the twin classifier learns the fakes' labels and G is pushed away from it;
            D's classifier learns on real data only. Needs ``FeatureDiscriminator(twin=True)``.
        aux_on_fakes: ACGAN's D also classifies the fakes (the original ACGAN; ignored with ``tac``).
        gp_weight: weight of WGAN-GP's gradient penalty.
        conditional_d: pass the labels to D (needed by a projection discriminator).

    :meth:`discriminator_loss` and :meth:`generator_loss` return ``(total, terms)``, ``terms`` a dict of
    detached floats (``adv``, ``aux_real``, ``aux_fake``, ``twin``, ``gp``) for logging.
    """

    def __init__(
        self,
        adversarial: str = "bce",
        aux_weight: float = 1.0,
        label_smoothing: float = 0.0,
        tac: bool = False,
        aux_on_fakes: bool = True,
        gp_weight: float = 10.0,
        conditional_d: bool = False,
    ) -> None:
        super().__init__()
        if adversarial not in ADVERSARIAL_LOSSES:
            raise ValueError(f"ACGANLoss: adversarial must be one of {ADVERSARIAL_LOSSES}, got {adversarial!r}")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"ACGANLoss: label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.adversarial = adversarial
        self.aux_weight = float(aux_weight)
        self.label_smoothing = float(label_smoothing)
        self.tac = bool(tac)
        self.aux_on_fakes = bool(aux_on_fakes) and not self.tac
        self.gp_weight = float(gp_weight)
        self.conditional_d = bool(conditional_d)

    def _d(self, discriminator: nn.Module, f: torch.Tensor, y: torch.Tensor):
        return discriminator(f, y if self.conditional_d else None)

    def _check_twin(self, twin: torch.Tensor) -> None:
        if self.tac and twin.shape[1] == 0:
            raise ValueError(
                "ACGANLoss(tac=True) needs a discriminator with a twin classifier (FeatureDiscriminator(twin=True))"
            )

    def discriminator_loss(
        self,
        discriminator: nn.Module,
        reals: torch.Tensor,
        real_labels: torch.Tensor,
        fakes: torch.Tensor,
        fake_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """D's loss on a batch of reals and (detached) fakes."""
        fakes = fakes.detach()
        adv_r, cls_r, _ = self._d(discriminator, reals, real_labels)
        adv_f, cls_f, twin_f = self._d(discriminator, fakes, fake_labels)
        self._check_twin(twin_f)
        terms: dict[str, torch.Tensor] = {}
        if self.adversarial == "bce":
            target_r = torch.full_like(adv_r, 1.0 - self.label_smoothing)
            terms["adv"] = F.binary_cross_entropy_with_logits(adv_r, target_r) + F.binary_cross_entropy_with_logits(
                adv_f, torch.zeros_like(adv_f)
            )
        else:
            gp = gradient_penalty(discriminator, reals, fakes, real_labels if self.conditional_d else None)
            terms["adv"] = adv_f.mean() - adv_r.mean()
            terms["gp"] = self.gp_weight * gp
        terms["aux_real"] = self.aux_weight * F.cross_entropy(cls_r, real_labels.long())
        if self.aux_on_fakes:
            terms["aux_fake"] = self.aux_weight * F.cross_entropy(cls_f, fake_labels.long())
        if self.tac:
            terms["twin"] = self.aux_weight * F.cross_entropy(twin_f, fake_labels.long())
        total = torch.stack(list(terms.values())).sum()
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def generator_loss(
        self, discriminator: nn.Module, fakes: torch.Tensor, fake_labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """G's loss on fresh fakes (gradients flow through D into G)."""
        adv_f, cls_f, twin_f = self._d(discriminator, fakes, fake_labels)
        self._check_twin(twin_f)
        terms: dict[str, torch.Tensor] = {}
        if self.adversarial == "bce":
            terms["adv"] = F.binary_cross_entropy_with_logits(adv_f, torch.ones_like(adv_f))
        else:
            terms["adv"] = -adv_f.mean()
        terms["aux_fake"] = self.aux_weight * F.cross_entropy(cls_f, fake_labels.long())
        if self.tac:
            terms["twin"] = -self.aux_weight * F.cross_entropy(twin_f, fake_labels.long())
        total = torch.stack(list(terms.values())).sum()
        return total, {k: float(v.detach()) for k, v in terms.items()}
