"""A class-conditional GAN trainer on MONAI's :class:`monai.engines.GanTrainer`.

MONAI's ``GanTrainer`` has no label path: its generator sees latents only. It also sizes the
fakes by the loader's ``batch_size`` (wrong for the partial last batch) and reuses one set of fakes
for every discriminator step. :class:`ConditionalGanTrainer` keeps the ignite engine, the handlers,
the events and the state of ``GanTrainer`` and replaces its iteration:

1. the batch's reals ``x`` and labels ``y`` (``batch[features_key]``, ``batch[label_key]``);
   ``n = len(x)``, so a partial last batch gets ``n`` fakes;
2. for each of ``d_train_steps``: fresh latents and fake labels, fresh fakes (no gradient to G),
   one D step on ``ACGANLoss.discriminator_loss``;
3. fresh latents and fake labels, one G step on ``ACGANLoss.generator_loss``.

Fake labels are drawn from ``fake_label_prior``: ``"batch"`` (the labels of the reals, i.e. the
training distribution), ``"uniform"`` (balanced classes) or an explicit list of class probabilities.
The iteration's output holds ``g_loss``, ``d_loss`` and each loss term (``d_adv``, ``d_aux_real``,
``g_aux_fake``, ...) for :class:`~mimtl.handlers.LossCurveWriter` and ``StatsHandler``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import GanTrainer
from monai.utils import GanKeys
from torch.utils.data import DataLoader

from mimtl.losses.feature_gan import ACGANLoss

__all__ = ["ConditionalGanTrainer", "sample_fake_labels"]


def sample_fake_labels(
    n: int,
    prior: str | Sequence[float],
    real_labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` class labels for fakes: from the batch (``"batch"``), uniform, or given class probabilities."""
    device = real_labels.device
    if isinstance(prior, str):
        if prior == "batch":
            idx = torch.randint(0, real_labels.shape[0], (n,), generator=generator).to(device)
            return real_labels.long().view(-1)[idx]
        if prior == "uniform":
            return torch.randint(0, num_classes, (n,), generator=generator).to(device)
        raise ValueError(
            f"fake_label_prior must be 'batch', 'uniform' or a list of {num_classes} probabilities, got {prior!r}"
        )
    probs = torch.as_tensor(list(prior), dtype=torch.float)
    if probs.numel() != num_classes or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"fake_label_prior must be {num_classes} non-negative probabilities, got {list(prior)}")
    return torch.multinomial(probs / probs.sum(), n, replacement=True, generator=generator).to(device)


class ConditionalGanTrainer(GanTrainer):
    """``GanTrainer`` with a label-conditioned generator ``G(z, y)`` and an ACGAN-style ``D(f) -> (adv, cls, twin)``.

    Args:
        device, max_epochs, train_data_loader, g_network, g_optimizer, d_network, d_optimizer,
            epoch_length, d_train_steps, latent_shape, non_blocking, train_handlers, optim_set_to_none,
            key_train_metric, additional_metrics: as :class:`monai.engines.GanTrainer`.
        loss_function: an :class:`~mimtl.losses.feature_gan.ACGANLoss` (both players' losses).
        num_classes: number of classes (default: ``g_network.num_classes``).
        features_key, label_key: keys of the reals and their labels in a batch dict.
        fake_label_prior: ``"batch"``, ``"uniform"`` or class probabilities (see module doc).
        amp: autocast the forward passes (bf16 on CPU, fp16 with a grad scaler on CUDA).
        seed: seed of the latents and fake labels (their own generator; ``None``: torch's global one).

    Example (a config)::

        trainer:
          _target_: mimtl.engines.ConditionalGanTrainer
          device: '@device'
          max_epochs: 200
          train_data_loader: '@loader'
          g_network: '@generator'
          g_optimizer: '@g_optimizer'
          d_network: '@discriminator'
          d_optimizer: '@d_optimizer'
          loss_function: {_target_: mimtl.losses.ACGANLoss, tac: true}
          latent_shape: 32
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        g_network: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_network: torch.nn.Module,
        d_optimizer: torch.optim.Optimizer,
        loss_function: ACGANLoss | None = None,
        num_classes: int | None = None,
        features_key: str = "features",
        label_key: str = "label",
        fake_label_prior: str | Sequence[float] = "batch",
        epoch_length: int | None = None,
        d_train_steps: int = 1,
        latent_shape: int = 64,
        non_blocking: bool = False,
        train_handlers: Sequence | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        optim_set_to_none: bool = True,
        amp: bool = False,
        seed: int | None = None,
    ) -> None:
        self.loss = ACGANLoss() if loss_function is None else loss_function
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            g_network=g_network,
            g_optimizer=g_optimizer,
            g_loss_function=self.loss.generator_loss,
            d_network=d_network,
            d_optimizer=d_optimizer,
            d_loss_function=self.loss.discriminator_loss,
            epoch_length=epoch_length,
            d_train_steps=d_train_steps,
            latent_shape=latent_shape,
            non_blocking=non_blocking,
            train_handlers=train_handlers,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            optim_set_to_none=optim_set_to_none,
            decollate=False,
        )
        self.num_classes = int(num_classes if num_classes is not None else g_network.num_classes)
        self.features_key = features_key
        self.label_key = label_key
        sample_fake_labels(1, fake_label_prior, torch.zeros(1, dtype=torch.long), self.num_classes)  # validate now
        self.fake_label_prior = fake_label_prior
        # not ``self.amp``: MONAI's Trainer.run would build a CUDA-only GradScaler of its own from it
        self.use_amp = bool(amp)
        self._rng = None if seed is None else torch.Generator().manual_seed(int(seed))
        on_cuda = torch.device(device).type == "cuda"
        self._amp_dtype = torch.float16 if on_cuda else torch.bfloat16
        self._scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and on_cuda)
        # train mode once per epoch, not per step (module.train() walks every submodule: ~7 % of a small GAN's step)
        self.add_event_handler(Events.EPOCH_STARTED, self._train_mode)

    def _train_mode(self, _engine=None) -> None:
        self.g_network.train()
        self.d_network.train()

    def _autocast(self, device: torch.device):
        """``torch.autocast`` when amp is on; no context otherwise (it costs time on every step)."""
        return torch.autocast(device.type, dtype=self._amp_dtype) if self.use_amp else contextlib.nullcontext()

    def _fakes(self, n: int, real_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = real_labels.device
        z = torch.randn(n, self.latent_shape, generator=self._rng).to(device, non_blocking=self.non_blocking)
        y = sample_fake_labels(n, self.fake_label_prior, real_labels, self.num_classes, self._rng)
        with self._autocast(device):
            fakes = self.g_network(z, y)
        return z, y, fakes.float()

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if not self._scaler.is_enabled():
            loss.backward()
            optimizer.step()
            return
        self._scaler.scale(loss).backward()
        self._scaler.step(optimizer)
        self._scaler.update()

    def _iteration(self, engine: ConditionalGanTrainer, batchdata: dict) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        if not isinstance(batchdata, dict) or engine.features_key not in batchdata or engine.label_key not in batchdata:
            raise ValueError(
                f"ConditionalGanTrainer: each batch must be a dict with {engine.features_key!r} and {engine.label_key!r}"
            )
        device = engine.state.device
        reals = batchdata[engine.features_key].to(device, non_blocking=engine.non_blocking).float()
        labels = batchdata[engine.label_key].to(device, non_blocking=engine.non_blocking).long().view(-1)
        n = reals.shape[0]  # the partial last batch gets as many fakes as it has reals

        d_total, d_terms = 0.0, {}
        for _ in range(engine.d_train_steps):
            with torch.no_grad():
                _, fake_labels, fakes = engine._fakes(n, labels)  # fresh fakes for every D step
            engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            with engine._autocast(device):
                d_loss, d_terms = engine.loss.discriminator_loss(engine.d_network, reals, labels, fakes, fake_labels)
            engine._step(d_loss, engine.d_optimizer)
            d_total += float(d_loss.detach())

        z, fake_labels, fakes = engine._fakes(n, labels)
        engine.g_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast(device):
            g_loss, g_terms = engine.loss.generator_loss(engine.d_network, fakes, fake_labels)
        engine._step(g_loss, engine.g_optimizer)
        # G's step changed nothing in D, but its backward left gradients there: drop them
        engine.d_optimizer.zero_grad(set_to_none=True)

        out: dict[str, Any] = {
            GanKeys.REALS: reals,
            GanKeys.FAKES: fakes.detach(),
            GanKeys.LATENTS: z,
            "fake_labels": fake_labels,
            GanKeys.GLOSS: float(g_loss.detach()),
            GanKeys.DLOSS: d_total / engine.d_train_steps,
        }
        out.update({f"d_{k}": v for k, v in d_terms.items()})
        out.update({f"g_{k}": v for k, v in g_terms.items()})
        return out
