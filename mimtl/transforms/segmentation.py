"""Segmentation label maps to one binary channel per structure (array and dictionary twins).

A label map ``(1, H, W)`` with values such as 0 background, 1 left lung, 2 right lung, 3 heart (the
demo set's, SCR's structures) becomes ``(K, H, W)``: channel k is 1 where the map equals
``values[k]``. The segmentation network predicts one sigmoid per channel, so structures may also
overlap (e.g. masks merged from separate files).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = [
    "ApplyToValidD",
    "ApplyToValidDict",
    "ApplyToValidd",
    "LabelMapToChannels",
    "LabelMapToChannelsD",
    "LabelMapToChannelsDict",
    "LabelMapToChannelsd",
]


class LabelMapToChannels(Transform):
    """``(1, H, W)`` label map -> ``(K, H, W)`` float binary channels, one per value of ``values``.

    Args:
        values: the label value of each output channel, e.g. ``[1, 2, 3]``; a list of values in place of one
            merges them into that channel (e.g. ``[[1, 2]]``: both lungs as one mask).

    Raises:
        ValueError: an input with more than one channel.
    """

    backend = [torch.Tensor.__name__]

    def __init__(self, values: Sequence[int | Sequence[int]]) -> None:
        if not values:
            raise ValueError("LabelMapToChannels needs at least one label value.")
        self.values = [list(v) if isinstance(v, (list, tuple)) else [v] for v in values]

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        if label.shape[0] != 1:
            raise ValueError(f"expected a one-channel label map (1, H, W), got shape {tuple(label.shape)}.")
        lab = label[0]
        channels = [torch.stack([lab == v for v in group]).any(0) for group in self.values]
        out = torch.stack(channels).to(torch.float32)
        if hasattr(label, "copy_meta_from"):
            from monai.data import MetaTensor

            return MetaTensor(out, meta=label.meta)
        return out


class LabelMapToChannelsd(MapTransform):
    """Dictionary twin of :class:`LabelMapToChannels`."""

    backend = LabelMapToChannels.backend

    def __init__(self, keys: KeysCollection, values: Sequence[int | Sequence[int]], allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelMapToChannels(values)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


LabelMapToChannelsD = LabelMapToChannelsDict = LabelMapToChannelsd


class ApplyToValidd(Transform):
    """Apply ``transform`` to the items :class:`~mimtl.data.TolerantDataset` could use; pass failed ones through.

    A failed film's placeholder has no transform history to invert and no file to save to, so
    postprocessing such as ``Invertd`` and ``SaveImaged`` is wrapped in it; the writer reports
    the row as failed.

    Args:
        transform: the dictionary transform (or ``Compose``) to apply.
        error_key: the key holding the failure reason (empty when the item is good).
    """

    def __init__(self, transform: Callable[[dict], dict], error_key: str = "error") -> None:
        self.transform = transform
        self.error_key = error_key

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        if data.get(self.error_key):
            return dict(data)
        return self.transform(dict(data))


ApplyToValidD = ApplyToValidDict = ApplyToValidd
