"""Class-conditional GAN on feature vectors (Mehra, Soliman, Sahoo, arXiv 2209.14097).

Stage 2 of the brain-tumour grading method learns to generate one pooled encoder feature vector
per case, conditioned on the grade:

* :class:`FeatureGenerator` ``G(z, y) -> f``: the latent code concatenated with a learned class
  embedding, through an MLP.
* :class:`FeatureDiscriminator` ``D(f[, y]) -> (adversarial logit, class logits, twin logits)``:
  one shared MLP body, a real/fake head and an auxiliary classifier head (ACGAN, Odena et al.
  2017). Options: a twin auxiliary classifier trained on fakes only (TAC-GAN, Gong et al. 2019,
  the published fix for ACGAN's pull away from the class boundary) and a projection term
  ``<embed(y), h>`` on the adversarial logit (Miyato & Koyama 2018).

Every head returns *logits*; the losses in :mod:`mimtl.losses.feature_gan` apply
BCE-with-logits and cross-entropy to them. No softmax or sigmoid is applied here: a softmax
before a cross-entropy (a double softmax) is the bug of popular public ACGAN code.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FeatureDiscriminator", "FeatureGenerator"]


def _mlp(
    in_features: int, hidden: Sequence[int], dropout: float, norm: bool, spectral: bool
) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    size = in_features
    for width in hidden:
        linear = nn.Linear(size, int(width))
        layers.append(nn.utils.parametrizations.spectral_norm(linear) if spectral else linear)
        if norm:
            layers.append(nn.LayerNorm(int(width)))
        layers.append(nn.LeakyReLU(0.2))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        size = int(width)
    return nn.Sequential(*layers), size


class FeatureGenerator(nn.Module):
    """``G(z, y)``: a feature vector of class ``y`` from a latent code ``z``.

    Args:
        latent_size: length of ``z``.
        num_classes: number of classes ``y`` indexes.
        out_features: length of the generated feature vector (the encoder's pooled feature size).
        hidden: widths of the hidden layers.
        embedding_size: length of the learned class embedding concatenated to ``z``
            (default: ``latent_size``).
        norm: LayerNorm after each hidden linear layer.

    The output is linear (features are standardised before the GAN sees them), so it can take
    any real value.

    Example::

        g = FeatureGenerator(latent_size=16, num_classes=2, out_features=64)
        f = g(torch.randn(8, 16), torch.randint(0, 2, (8,)))  # (8, 64)
    """

    def __init__(
        self,
        latent_size: int,
        num_classes: int,
        out_features: int,
        hidden: Sequence[int] = (128, 128),
        embedding_size: int | None = None,
        norm: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"FeatureGenerator: num_classes must be at least 2, got {num_classes}")
        self.latent_size = int(latent_size)
        self.num_classes = int(num_classes)
        self.out_features = int(out_features)
        self.embedding = nn.Embedding(num_classes, int(embedding_size or latent_size))
        self.body, size = _mlp(self.latent_size + self.embedding.embedding_dim, hidden, 0.0, norm, False)
        self.head = nn.Linear(size, self.out_features)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"FeatureGenerator: z must be (batch, {self.latent_size}), got {list(z.shape)}")
        return self.head(self.body(torch.cat([z, self.embedding(y.long().view(-1))], dim=1)))


class FeatureDiscriminator(nn.Module):
    """``D(f[, y])``: (real/fake logit ``(B,)``, class logits ``(B, C)``, twin logits ``(B, C)`` or ``(B, 0)``).

    Args:
        in_features: length of the feature vectors.
        num_classes: number of classes.
        hidden: widths of the shared hidden layers.
        dropout: dropout after each hidden layer (small data: some regularisation helps D).
        twin: add TAC-GAN's twin auxiliary classifier (trained on fakes only).
        projection: add the projection term ``<embed(y), h>`` to the adversarial logit; ``y`` is
            then required.
        spectral_norm: spectral normalisation on every linear layer (stabilises D; off for WGAN-GP,
            whose gradient penalty plays that role).

    Without ``twin`` the third output is an empty ``(B, 0)`` tensor, so the signature is the same
    for TorchScript either way.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.0,
        twin: bool = False,
        projection: bool = False,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"FeatureDiscriminator: num_classes must be at least 2, got {num_classes}")
        self.in_features = int(in_features)
        self.num_classes = int(num_classes)
        self.twin = bool(twin)
        self.projection = bool(projection)
        self.body, size = _mlp(self.in_features, hidden, dropout, False, spectral_norm)
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.adversarial = wrap(nn.Linear(size, 1))
        self.classifier = nn.Linear(size, self.num_classes)
        with warnings.catch_warnings():  # the unused heads are zero-sized, so the outputs keep one signature
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.twin_classifier = nn.Linear(size, self.num_classes if twin else 0)
            self.class_embedding = nn.Embedding(self.num_classes, size if projection else 0)

    def forward(
        self, f: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if f.ndim != 2 or f.shape[1] != self.in_features:
            raise ValueError(f"FeatureDiscriminator: features must be (batch, {self.in_features}), got {list(f.shape)}")
        h = self.body(f)
        adv = self.adversarial(h).squeeze(1)
        if self.projection:
            if y is None:
                raise ValueError("FeatureDiscriminator(projection=True) needs the labels y")
            adv = adv + (self.class_embedding(y.long().view(-1)) * h).sum(dim=1)
        return adv, self.classifier(h), self.twin_classifier(h)
