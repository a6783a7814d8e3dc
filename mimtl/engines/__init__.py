"""Engines and engine helpers beyond MONAI's."""

from mimtl.engines.distributed import (
    cleanup_distributed,
    init_distributed,
    is_main_process,
    local_device,
    main_process_only,
)
from mimtl.engines.gan import ConditionalGanTrainer, sample_fake_labels
from mimtl.engines.metrics import lower_is_better
from mimtl.engines.tile_ae import TileAEPrepareBatch, tile_ae_outputs

__all__ = [
    "ConditionalGanTrainer",
    "TileAEPrepareBatch",
    "cleanup_distributed",
    "init_distributed",
    "is_main_process",
    "local_device",
    "lower_is_better",
    "main_process_only",
    "sample_fake_labels",
    "tile_ae_outputs",
]
