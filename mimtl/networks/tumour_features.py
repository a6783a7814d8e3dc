"""Stage 1 of the ACGAN method: a tumour segmentation network and its bottleneck, pooled to one vector per case.

* :func:`tumour_segresnet`: MONAI's :class:`~monai.networks.nets.SegResNet` (3D, or 2D for slices),
  small by default, with its initial weights through the one weights path
  (:func:`mimtl.networks.pretrained.load_pretrained`): a file holding a whole SegResNet, or only its
  encoder (e.g. another bundle's checkpoint: ``weights: {_target_: mimtl.bundle.weights_path, spec: bundle:NAME}``).
* :class:`TumourFeatureExtractor`: runs the encoder (``SegResNet.encode``) and pools the bottleneck
  inside the tumour mask (``"mask"``), over the whole volume (``"global"``) or both, concatenated
  (``"both"``). The mask is the case's label map or the network's own prediction.

A case whose mask holds no tumour voxel has nothing to pool inside it: with ``empty_mask="error"``
(default) that is an :class:`EmptyTumourMaskError` naming the case; with ``"global"`` its mask
features are the global pooling instead, and the extractor lists the case in ``empty_cases``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import SegResNet
from torch import nn

from mimtl.errors import DataValidationError

__all__ = ["POOLINGS", "EmptyTumourMaskError", "TumourFeatureExtractor", "tumour_segresnet"]

POOLINGS = ("mask", "global", "both")


class EmptyTumourMaskError(DataValidationError):
    """A case's tumour mask holds no voxel, so mask pooling has nothing to average."""


def tumour_segresnet(
    spatial_dims: int = 3,
    in_channels: int = 4,
    out_channels: int = 4,
    init_filters: int = 8,
    blocks_down: Sequence[int] = (1, 2, 2, 4),
    blocks_up: Sequence[int] = (1, 1, 1),
    dropout_prob: float | None = None,
    weights: str | os.PathLike | None = None,
) -> SegResNet:
    """A SegResNet for BraTS-style input (4 sequences in; background + BraTS labels 1, 2, 4 out).

    ``weights``: ``None`` (random), or a weights file: a whole SegResNet of this shape (all tensors
    load), or a checkpoint holding at least its encoder (``convInit`` and ``down_layers``; the decoder
    then keeps its initialisation). A first convolution with other input channels is adapted.
    """
    net = SegResNet(
        spatial_dims=spatial_dims,
        init_filters=init_filters,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob=dropout_prob,
        blocks_down=tuple(blocks_down),
        blocks_up=tuple(blocks_up),
    )
    if weights is not None:
        from mimtl.networks.pretrained import load_pretrained, parse_weights

        path = parse_weights(weights, "tumour_segresnet")
        if path == "imagenet":
            raise ValueError(
                "tumour_segresnet: no ImageNet weights exist for a 3D SegResNet; give a weights file or None"
            )
        encoder = sum(p.numel() for n, p in net.named_parameters() if n.startswith(("convInit", "down_layers")))
        load_pretrained(
            net,
            path,
            prefixes="any",
            optional_groups=("up_layers", "up_samples", "conv_final"),
            min_match=encoder / sum(p.numel() for p in net.parameters()) * 0.999,
            ignore_unexpected=True,
            name="tumour_segresnet",
            hint="It needs at least the encoder (convInit, down_layers) of a SegResNet of the same init_filters and blocks_down.",
        )
    return net


class TumourFeatureExtractor(nn.Module):
    """One feature vector per case from a SegResNet's bottleneck.

    Args:
        network: a :class:`~monai.networks.nets.SegResNet` (trained on the tumour segmentation).
        pooling: ``"mask"`` (average inside the tumour), ``"global"`` (average over the volume) or
            ``"both"`` (the two concatenated: twice the bottleneck channels).
        mask_source: ``"label"`` (the mask given to ``forward``) or ``"prediction"`` (the network's own
            segmentation: any non-background class).
        empty_mask: ``"error"`` or ``"global"`` (see the module doc).

    ``forward(image, mask=None, case_ids=None) -> (B, n_features)``; ``mask`` (B, 1, *spatial) counts
    every voxel > 0 as tumour (the BraTS labels 1, 2, 4).
    """

    def __init__(
        self, network: SegResNet, pooling: str = "mask", mask_source: str = "label", empty_mask: str = "error"
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"TumourFeatureExtractor: pooling must be one of {POOLINGS}, got {pooling!r}")
        if mask_source not in ("label", "prediction"):
            raise ValueError(
                f"TumourFeatureExtractor: mask_source must be 'label' or 'prediction', got {mask_source!r}"
            )
        if empty_mask not in ("error", "global"):
            raise ValueError(f"TumourFeatureExtractor: empty_mask must be 'error' or 'global', got {empty_mask!r}")
        self.network = network
        self.pooling = pooling
        self.mask_source = mask_source
        self.empty_mask = empty_mask
        self.empty_cases: list = []

    @property
    def bottleneck_channels(self) -> int:
        return self.network.init_filters * 2 ** (len(self.network.blocks_down) - 1)

    @property
    def num_features(self) -> int:
        return self.bottleneck_channels * (2 if self.pooling == "both" else 1)

    def feature_names(self) -> list[str]:
        kinds = {"mask": ["mask"], "global": ["global"], "both": ["mask", "global"]}[self.pooling]
        return [f"{k}_{c}" for k in kinds for c in range(self.bottleneck_channels)]

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor | None = None, case_ids: Sequence | None = None
    ) -> torch.Tensor:
        bottleneck, _ = self.network.encode(image)
        dims = tuple(range(2, bottleneck.ndim))
        pooled_global = bottleneck.mean(dim=dims)
        if self.pooling == "global":
            return pooled_global
        if self.mask_source == "prediction":
            mask = (self.network(image).argmax(1, keepdim=True) > 0).float()
        if mask is None:
            raise ValueError("TumourFeatureExtractor: mask pooling with mask_source='label' needs the tumour mask")
        # share of tumour voxels under each bottleneck voxel
        weight = (
            F.adaptive_avg_pool3d((mask > 0).float(), bottleneck.shape[2:])
            if bottleneck.ndim == 5
            else F.adaptive_avg_pool2d((mask > 0).float(), bottleneck.shape[2:])
        )
        total = weight.sum(dim=dims)  # (B, 1)
        pooled_mask = (bottleneck * weight).sum(dim=dims) / total.clamp_min(1e-12)
        empty = (total[:, 0] <= 0).nonzero().flatten().tolist()
        for i in empty:
            case = case_ids[i] if case_ids is not None else f"batch item {i}"
            if self.empty_mask == "error":
                raise EmptyTumourMaskError(
                    f"case {case}: its tumour mask has no voxel > 0, so there is nothing to pool inside it "
                    "(check the label file, or set empty_mask: global to use the whole-volume features for such cases)"
                )
            self.empty_cases.append(case)
            pooled_mask[i] = pooled_global[i]
        if self.pooling == "mask":
            return pooled_mask
        return torch.cat([pooled_mask, pooled_global], dim=1)
