"""Segmentation network with a swappable encoder, a U-Net or PSP decoder and an optional reconstruction decoder.

The downstream network of Chen et al. (arXiv 2108.03823): its encoder starts from scratch, from
ImageNet (EfficientNet-Lite0's packaged weights), from a T-AE checkpoint
(:class:`~mimtl.networks.TileAutoencoder`, whose encoder has the same layout and keys) or from any
other model's checkpoint, through the one weights option (``weights: None | "imagenet" | <path>``;
another bundle's model: ``mimtl.bundle.weights_path("bundle:NAME")``). Decoders:

* ``"unet"``: MONAI's ``UNetDecoder`` (as in ``FlexibleUNet``) with skip connections;
* ``"psp"``: a PSP-style decoder: pyramid pooling (bins 1, 2, 3, 6) of the deepest feature map,
  upsampled to the stride-8 map, fused with it by a 3x3 convolution, the output upsampled x8.
  (PSPNet keeps stride 8 with dilated convolutions; this encoder is not dilated, so the context
  comes from the stride-32 map and the detail from the stride-8 one.)

With ``reconstruction=True`` a parallel decoder rebuilds the input from the deepest feature map
alone (no skips: the bottleneck has to keep the image). In training mode the network then returns
``(B, K + 1, H, W)``: the K segmentation logits and one reconstruction logit (for
:class:`~mimtl.losses.SegReconLoss`); in eval mode the K segmentation logits only, as without it
(the output of inference and export). With ``reconstruction=False`` the reconstruction decoder is
not built: no parameter, no state-dict key, no operation of it exists.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
from torch import nn

from mimtl.networks.encoders import build_encoder, encoder_channels, init_encoder, set_bn_momentum

__all__ = ["DECODERS", "AuxReconSegNet", "PSPDecoder"]

DECODERS = ("unet", "psp")


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _unet_decoder(encoder_channels: Sequence[int], decoder_channels: Sequence[int]) -> nn.Module:
    """MONAI's ``UNetDecoder`` as ``FlexibleUNet`` builds it (batch norm, ReLU, nearest upsampling)."""
    return UNetDecoder(
        spatial_dims=2,
        encoder_channels=encoder_channels,
        decoder_channels=decoder_channels,
        act=("relu", {"inplace": True}),
        norm=("batch", {"eps": 1e-3, "momentum": 0.1}),
        dropout=0.0,
        bias=False,
        upsample="nontrainable",
        pre_conv="default",
        interp_mode="nearest",
        align_corners=None,
        is_pad=False,
    )


class PSPDecoder(nn.Module):
    """Pyramid pooling of the deepest map, fused at stride 8, logits upsampled to the input size.

    Args:
        encoder_channels: channels of the encoder's five feature maps (strides 2 ... 32).
        out_channels: output channels.
        channels: channels of the fused map.
        bins: pooling grid sizes.
    """

    def __init__(
        self, encoder_channels: Sequence[int], out_channels: int, channels: int = 64, bins: Sequence[int] = (1, 2, 3, 6)
    ) -> None:
        super().__init__()
        deep, mid = encoder_channels[-1], encoder_channels[-3]
        branch = max(deep // len(bins), 8)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(deep, branch, 1, bias=False),
                nn.BatchNorm2d(branch),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )
        self.fuse = _conv_bn_relu(deep + branch * len(bins) + mid, channels, 3)
        self.head = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: list[torch.Tensor], size: list[int]) -> torch.Tensor:
        deep, mid = features[-1], features[-3]
        pooled = [deep]
        for stage in self.stages:
            pooled.append(F.interpolate(stage(deep), size=deep.shape[2:], mode="bilinear", align_corners=False))
        x = F.interpolate(torch.cat(pooled, 1), size=mid.shape[2:], mode="bilinear", align_corners=False)
        x = self.head(self.fuse(torch.cat([x, mid], 1)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class AuxReconSegNet(nn.Module):
    """Encoder + U-Net / PSP decoder for K-channel segmentation logits, optionally a reconstruction decoder (2D).

    Args:
        out_channels: segmentation channels K (one sigmoid per structure).
        encoder: a FlexibleUNet backbone name (``"efficientnet-lite0"``, ``"resnet18"``...).
        in_channels: image channels.
        decoder: ``"unet"`` or ``"psp"``.
        reconstruction: build the parallel reconstruction decoder.
        weights: the encoder's initial weights: ``None``/``"scratch"``, ``"imagenet"`` or a file (a T-AE
            checkpoint, another model's checkpoint, natural-image weights), see
            :func:`~mimtl.networks.encoders.init_encoder`.
        decoder_channels: channels of the U-Net decoder stages (also of the reconstruction decoder).
        psp_channels: channels of the PSP decoder's fused map.
        encoder_bn_momentum: running-statistics momentum of the encoder's batch norms (None keeps
            EfficientNet's 0.01; 0.1 for training from scratch or on a new domain, see
            :func:`~mimtl.networks.encoders.set_bn_momentum`).

    Raises:
        ValueError: unknown encoder or decoder, ``out_channels < 1``, a weights file that does not fit.
    """

    def __init__(
        self,
        out_channels: int,
        encoder: str = "efficientnet-lite0",
        in_channels: int = 1,
        decoder: str = "unet",
        reconstruction: bool = False,
        weights: str | os.PathLike | None = None,
        decoder_channels: Sequence[int] = (128, 64, 32, 16, 16),
        psp_channels: int = 64,
        encoder_bn_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if out_channels < 1:
            raise ValueError(f"out_channels must be at least 1, got {out_channels}.")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}.")
        channels = encoder_channels(encoder)
        self.out_channels = int(out_channels)
        self.in_channels = int(in_channels)
        self.decoder_name = decoder
        self.size_divisor = 2 ** len(channels)
        self.skip_connect = len(channels) - 1
        self.encoder = build_encoder(encoder, in_channels)
        # the layer whose pooled deepest map mimtl.handlers.DomainCheck scores
        self.domain_layer = "encoder"
        self.encoder_init = init_encoder(self.encoder, encoder, weights)
        set_bn_momentum(self.encoder, encoder_bn_momentum)
        dec = tuple(decoder_channels)[: len(channels)]
        all_channels = (in_channels, *channels)
        self.unet_decoder: nn.Module | None = None
        self.seg_head: nn.Module | None = None
        self.psp_decoder: nn.Module | None = None
        if decoder == "unet":
            self.unet_decoder = _unet_decoder(all_channels, dec)
            self.seg_head = SegmentationHead(2, dec[-1], out_channels, kernel_size=3, act=None)
        else:
            self.psp_decoder = PSPDecoder(channels, out_channels, psp_channels)
        self.recon_decoder: nn.Module | None = None
        self.recon_head: nn.Module | None = None
        if reconstruction:
            # skip channels 0: the reconstruction is decoded from the deepest map alone
            self.recon_decoder = _unet_decoder((in_channels, *([0] * (len(channels) - 1)), channels[-1]), dec)
            self.recon_head = SegmentationHead(2, dec[-1], in_channels, kernel_size=3, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits ``(B, K, H, W)``; in training with reconstruction ``(B, K + 1, H, W)``.

        Raises:
            ValueError: not a 4D input, or a side that is no multiple of the encoder stride (32).
        """
        if x.dim() != 4 or x.shape[2] % self.size_divisor != 0 or x.shape[3] % self.size_divisor != 0:
            raise ValueError(
                f"AuxReconSegNet expects (B, C, H, W) with H and W multiples of {self.size_divisor}, got "
                f"{list(x.shape)}: pad or resize the image (e.g. DivisiblePadd k={self.size_divisor})."
            )
        features = self.encoder(x)
        if self.unet_decoder is not None and self.seg_head is not None:
            seg = self.seg_head(self.unet_decoder(features, self.skip_connect))
        elif self.psp_decoder is not None:
            seg = self.psp_decoder(features, [x.shape[2], x.shape[3]])
        else:
            raise RuntimeError("no decoder")
        if self.training and self.recon_decoder is not None and self.recon_head is not None:
            recon = self.recon_head(self.recon_decoder(features, 0))
            return torch.cat([seg, recon], dim=1)
        return seg
