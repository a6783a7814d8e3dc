"""Engine parts for T-AE pretraining on MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``.

The batch of a T-AE step holds the (possibly) shuffled image, the index of the permutation applied
and the original image (``RandTileShuffled`` writes them). :class:`TileAEPrepareBatch` hands the
network the shuffled image and the index (so the decoder puts the tiles back where they came from)
and the loss both targets; :func:`tile_ae_outputs` gives metric handlers the pairs they compare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

__all__ = ["TileAEPrepareBatch", "tile_ae_outputs"]


class TileAEPrepareBatch(PrepareBatch):
    """``(image, {"image": original, "perm": index}, (), {"perm": index})`` on the device.

    Args:
        image_key: the shuffled input.
        original_key: the un-shuffled image (the reconstruction target).
        index_key: the permutation index.

    Raises:
        KeyError: a key is missing from the batch (the message names it and the keys there are).
    """

    def __init__(self, image_key: str = "image", original_key: str = "target", index_key: str = "perm") -> None:
        self.keys = (image_key, original_key, index_key)

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict, tuple, dict]:
        missing = [k for k in self.keys if k not in batchdata]
        if missing:
            raise KeyError(
                f"T-AE batch lacks {missing} (has {sorted(batchdata)}): use mimtl.transforms.RandTileShuffled."
            )

        def move(t: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(t).to(device=device, non_blocking=non_blocking, **kwargs)

        image, original, index = (move(batchdata[k]) for k in self.keys)
        index = index.reshape(-1).long()
        return image, {"image": original, "perm": index}, (), {"perm": index}


def tile_ae_outputs(pred: str = "recon", target: str = "image", stack: bool = False) -> Callable:
    """An ``output_transform`` for metric handlers: ``(predictions, targets)`` from a T-AE engine's output.

    ``pred``: a key of the network's output dict (``"recon"``, ``"perm_logits"``); ``target``: a key of
    the target dict (``"image"``, ``"perm"``). With ``stack`` the per-sample lists are stacked into
    batch tensors (ignite's metrics, e.g. ``Accuracy`` with ``pred="perm_logits", target="perm"``).
    """

    def transform(output: Sequence[Mapping] | Mapping) -> tuple[Any, Any]:
        items = [output] if isinstance(output, Mapping) else list(output)
        preds = [item["pred"][pred] for item in items]
        targets = [item["label"][target] for item in items]
        if isinstance(output, Mapping):  # not decollated: already batches
            return preds[0], targets[0]
        if stack:
            return torch.stack([torch.as_tensor(p) for p in preds]), torch.stack([torch.as_tensor(t) for t in targets])
        return preds, targets

    return transform
