"""Two-stage transfer learning inside one training run.

Stage 1 trains the new parts (e.g. a color module and the classifier head) while the pretrained
backbone is frozen; stage 2 fine-tunes everything, usually at a lower learning rate. Doing the
switch in a handler keeps it one ``SupervisedTrainer`` run (one config, one checkpoint history,
resumable) instead of two chained runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["StagedFineTuning"]

logger = logging.getLogger(__name__)


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel / DataParallel wrappers."""
    while isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        network = network.module
    return network


class StagedFineTuning:
    """Freeze ``parts`` of ``network`` for the first ``frozen_epochs`` epochs, then unfreeze them.

    Args:
        network: a model with ``freeze(parts)`` / ``unfreeze(parts)`` (e.g.
            :class:`mimtl.networks.ColorizedClassifier`), possibly wrapped in DDP.
        frozen_epochs: number of epochs of stage 1; ``0`` trains everything from the start.
        parts: the parts frozen in stage 1.
        optimizer: needed only with ``finetune_lr``.
        finetune_lr: learning rate set on every parameter group when stage 2 starts.

    The stage is derived from the engine's epoch, so a resumed run picks the right one; it is also
    part of :meth:`state_dict`, which :class:`~mimtl.handlers.ResumableCheckpoint` stores (a restored
    stage 2 keeps the optimizer's restored learning rate instead of setting ``finetune_lr`` again). With DDP,
    wrap the network with ``find_unused_parameters=True``: frozen parameters get no gradient in
    stage 1 but must still be reduced in stage 2, so they have to be registered from the start.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        frozen_epochs: int,
        parts: Sequence[str] = ("backbone",),
        optimizer: torch.optim.Optimizer | None = None,
        finetune_lr: float | None = None,
    ) -> None:
        if frozen_epochs < 0:
            raise ValueError(f"frozen_epochs must be >= 0, got {frozen_epochs}.")
        if finetune_lr is not None and optimizer is None:
            raise ValueError("finetune_lr needs the optimizer whose learning rate it sets.")
        model = _unwrap(network)
        if not (hasattr(model, "freeze") and hasattr(model, "unfreeze")):
            raise TypeError(f"{type(model).__name__} has no freeze()/unfreeze(); StagedFineTuning cannot stage it.")
        self.model = model
        self.frozen_epochs = int(frozen_epochs)
        self.parts = tuple(parts)
        self.optimizer = optimizer
        self.finetune_lr = finetune_lr
        self.stage = 0  # 0: not started; 1: parts frozen; 2: everything trains
        self._restored = False

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self._on_started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)

    def state_dict(self) -> dict:
        """The stage (1: ``parts`` frozen, 2: fine-tuning everything) and the settings it came from."""
        return {"stage": self.stage, "frozen_epochs": self.frozen_epochs, "parts": list(self.parts)}

    def load_state_dict(self, state: dict) -> None:
        """Put the model in the stored stage now (the optimizer's own state holds its learning rate)."""
        if list(state["parts"]) != list(self.parts) or int(state["frozen_epochs"]) != self.frozen_epochs:
            raise ValueError(
                f"staged fine-tuning was frozen_epochs={state['frozen_epochs']} parts={list(state['parts'])}, "
                f"this configuration has frozen_epochs={self.frozen_epochs} parts={list(self.parts)}"
            )
        self.stage = int(state["stage"])
        if self.stage == 1:
            self.model.freeze(self.parts)
        elif self.stage == 2:
            self.model.unfreeze(self.parts)
        self._restored = self.stage > 0

    def _on_started(self, engine) -> None:
        if self._restored:  # a resumed run: load_state_dict has set the stage and the optimizer its lr
            self._restored = False
            return
        # at STARTED, engine.state.epoch is the number of finished epochs (0, or where a resumed run was)
        if engine.state.epoch < self.frozen_epochs:
            random = [p for p in self.parts if p in getattr(self.model, "random_init_parts", ())]
            if random:
                logger.warning(
                    f"{', '.join(random)} starts from random weights (none given: no ImageNet weights ship for it) "
                    f"and stays frozen for epochs 1-{self.frozen_epochs}: stage 1 trains the rest against random "
                    f"features. Give a weight file (e.g. --set backbone_weights=/path/densenet121.pth) or frozen_epochs=0."
                )
            self.model.freeze(self.parts)
            self.stage = 1
            logger.info(f"stage 1: {', '.join(self.parts)} frozen for epochs 1-{self.frozen_epochs}")
        else:
            self._start_stage_two(engine)

    def _on_epoch_started(self, engine) -> None:
        self._restored = False
        if self.frozen_epochs and engine.state.epoch == self.frozen_epochs + 1:
            self._start_stage_two(engine)

    def _start_stage_two(self, engine) -> None:
        self.model.unfreeze(self.parts)
        self.stage = 2
        if self.finetune_lr is not None and self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.finetune_lr
        lr = f" at lr {self.finetune_lr}" if self.finetune_lr is not None else ""
        logger.info(f"stage 2 from epoch {max(engine.state.epoch, 1)}: fine-tuning everything{lr}")
