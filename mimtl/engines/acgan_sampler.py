"""ACGAN feature augmentation as an imbalanced-learn over-sampler.

:class:`ACGANOverSampler` is used exactly like ``SMOTE``: in an ``imblearn.pipeline.Pipeline`` its
``fit_resample`` runs on the training fold only. It trains a class-conditional feature GAN
(:class:`~mimtl.networks.feature_gan.FeatureGenerator`, :class:`~mimtl.networks.feature_gan.FeatureDiscriminator`,
:class:`~mimtl.losses.feature_gan.ACGANLoss`) through :class:`~mimtl.engines.gan.ConditionalGanTrainer`
on the fold's features (standardised inside), then appends generated vectors of each class until
the counts imbalanced-learn's ``sampling_strategy`` asks for are reached (``"auto"``: every class up to
the majority; a callable such as :func:`ratio_strategy` for partial balancing).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from imblearn.over_sampling.base import BaseOverSampler
from torch.utils.data import DataLoader

from mimtl.engines.feature_classifier import quiet_logger
from mimtl.engines.gan import ConditionalGanTrainer
from mimtl.losses.feature_gan import ACGANLoss
from mimtl.networks.feature_gan import FeatureDiscriminator, FeatureGenerator

__all__ = ["ACGANOverSampler", "fit_feature_gan", "generate_features", "ratio_strategy"]


class ratio_strategy:
    """A ``sampling_strategy`` for any imblearn sampler: each class is raised to ``ratio`` x the majority count.

    ``ratio=1`` balances fully; ``0.5`` brings each minority class to half the majority. A class already
    above the target is left alone.
    """

    def __init__(self, ratio: float) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio_strategy: ratio must be in (0, 1], got {ratio}")
        self.ratio = float(ratio)

    def __call__(self, y: np.ndarray) -> dict:
        """Desired counts after resampling (imblearn's convention), for the classes below the target."""
        classes, counts = np.unique(y, return_counts=True)
        target = int(round(self.ratio * counts.max()))
        return {c: target for c, n in zip(classes, counts) if n < target}

    def __repr__(self) -> str:
        return f"ratio_strategy({self.ratio})"


def fit_feature_gan(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    latent_size: int = 32,
    hidden: Sequence[int] = (128, 128),
    epochs: int = 200,
    batch_size: int = 32,
    lr: float = 2e-4,
    d_train_steps: int = 1,
    loss: ACGANLoss | None = None,
    projection: bool = False,
    dropout: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    handlers: Sequence | None = None,
) -> tuple[FeatureGenerator, FeatureDiscriminator, ConditionalGanTrainer]:
    """Train G and D on ``features`` (n, d) with class indices ``labels``; the trained pair and the trainer."""
    loss = ACGANLoss(conditional_d=projection) if loss is None else loss
    torch.manual_seed(seed)
    g = FeatureGenerator(latent_size, num_classes, features.shape[1], hidden=hidden)
    d = FeatureDiscriminator(
        features.shape[1],
        num_classes,
        hidden=hidden,
        dropout=dropout,
        twin=loss.tac,
        projection=projection,
        spectral_norm=loss.adversarial == "bce",
    )
    g, d = g.to(device), d.to(device)
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    items = [{"features": x[i], "label": y[i]} for i in range(len(y))]
    loader = DataLoader(items, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    trainer = ConditionalGanTrainer(
        device=device,
        max_epochs=epochs,
        train_data_loader=loader,
        g_network=g,
        g_optimizer=torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999)),
        d_network=d,
        d_optimizer=torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999)),
        loss_function=loss,
        num_classes=num_classes,
        latent_shape=latent_size,
        d_train_steps=d_train_steps,
        train_handlers=handlers,
        seed=seed,
    )
    trainer.logger = quiet_logger()  # one GAN per fold: keep its per-epoch lines out of the run's log
    trainer.run()
    return g.eval(), d.eval(), trainer


def generate_features(
    generator: FeatureGenerator, counts: dict[int, int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``counts[c]`` generated vectors of each class index ``c`` (rows) and their class indices."""
    rng = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    xs, ys = [], []
    with torch.no_grad():
        for c, n in counts.items():
            if n <= 0:
                continue
            z = torch.randn(n, generator.latent_size, generator=rng).to(device)
            xs.append(generator(z, torch.full((n,), int(c), dtype=torch.long, device=device)).cpu().numpy())
            ys.append(np.full(n, int(c)))
    if not xs:
        return np.zeros((0, generator.out_features), np.float32), np.zeros(0, int)
    return np.concatenate(xs), np.concatenate(ys)


class ACGANOverSampler(BaseOverSampler):
    """Over-sample with features generated by a class-conditional GAN trained on the data it resamples.

    Args:
        sampling_strategy: as imbalanced-learn's (``"auto"``, a dict, or a callable such as
            :func:`ratio_strategy`).
        variant: ``"acgan"``, ``"tac-gan"`` (twin auxiliary classifier), ``"projection"``
            (projection discriminator + ACGAN loss) or ``"wgan-gp"`` (Wasserstein critic with
            gradient penalty + auxiliary classifier).
        label_smoothing: one-sided label smoothing of D's real target.
        latent_size, hidden, epochs, batch_size, lr, d_train_steps: the GAN's.
        random_state: seed (GAN weights, batches, latents).
        device: ``"cpu"`` or ``"cuda"``.
        loss_curves: a folder to write the GAN's loss curves to (CSV + PNG), or ``None``.

    After ``fit_resample``: ``generator_`` (on the standardised scale; ``mean_`` and ``scale_`` map back)
    and ``n_generated_`` (per class).
    """

    _sampling_type = "over-sampling"
    VARIANTS = ("acgan", "tac-gan", "projection", "wgan-gp")

    def __init__(
        self,
        sampling_strategy="auto",
        variant: str = "acgan",
        label_smoothing: float = 0.0,
        latent_size: int = 32,
        hidden: Sequence[int] = (128, 128),
        epochs: int = 200,
        batch_size: int = 32,
        lr: float = 2e-4,
        d_train_steps: int = 1,
        random_state: int | None = None,
        device: str = "cpu",
        loss_curves: str | None = None,
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.variant = variant
        self.label_smoothing = label_smoothing
        self.latent_size = latent_size
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.d_train_steps = d_train_steps
        self.random_state = random_state
        self.device = device
        self.loss_curves = loss_curves

    def _gan_loss(self) -> ACGANLoss:
        if self.variant not in self.VARIANTS:
            raise ValueError(f"ACGANOverSampler: variant must be one of {self.VARIANTS}, got {self.variant!r}")
        return ACGANLoss(
            adversarial="wgan-gp" if self.variant == "wgan-gp" else "bce",
            label_smoothing=0.0 if self.variant == "wgan-gp" else self.label_smoothing,
            tac=self.variant == "tac-gan",
            conditional_d=self.variant == "projection",
        )

    def _fit_resample(self, X, y):
        X = np.asarray(X)
        x32 = X.astype(np.float32)
        classes, y_idx = np.unique(y, return_inverse=True)
        self.mean_ = x32.mean(axis=0)
        self.scale_ = np.where(x32.std(axis=0) > 0, x32.std(axis=0), 1.0).astype(np.float32)
        handlers = []
        if self.loss_curves:
            from mimtl.handlers.loss_curves import LossCurveWriter

            handlers.append(
                LossCurveWriter(Path(self.loss_curves), keys=["d_loss", "g_loss", "d_aux_real", "g_aux_fake"])
            )
        seed = 0 if self.random_state is None else int(self.random_state)
        self.generator_, _, _ = fit_feature_gan(
            (x32 - self.mean_) / self.scale_,
            y_idx,
            num_classes=len(classes),
            latent_size=self.latent_size,
            hidden=self.hidden,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            d_train_steps=self.d_train_steps,
            loss=self._gan_loss(),
            projection=self.variant == "projection",
            seed=seed,
            device=self.device,
            handlers=handlers,
        )
        index = {c: i for i, c in enumerate(classes)}
        counts = {index[c]: int(n) for c, n in self.sampling_strategy_.items()}
        fake, fake_idx = generate_features(self.generator_, counts, seed=seed + 1)
        self.n_generated_ = {classes[c]: n for c, n in counts.items()}
        fake = fake * self.scale_ + self.mean_
        return np.concatenate([X, fake.astype(X.dtype)]), np.concatenate([np.asarray(y), classes[fake_idx]])
