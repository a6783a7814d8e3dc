"""Tile-wise autoencoder (T-AE) for unsupervised pretraining (Chen et al., arXiv 2108.03823).

The input is an image whose 3 x 3 tiles may have been shuffled by one permutation of a fixed set
(:mod:`mimtl.transforms.tiles`: ``RandTileShuffled`` keeps the order with probability 0.7). One
shared encoder (any FlexibleUNet backbone, EfficientNet-Lite0 by default, so the segmentation
network loads it by name) encodes each tile alone; a 1x1 convolution maps its deepest feature
map to ``latent_channels``. Then

* the **permutation head** (one linear layer) reads the nine pooled tile latents in the order
  they were seen and predicts which permutation was applied (class 0: order kept);
* the tile latent maps are **put back where their tiles came from** (the applied permutation,
  or the predicted one when none is given) on the 3 x 3 grid, and the **decoder** rebuilds the
  *original* (un-shuffled) image from them, through a sigmoid so that it is compared with
  targets in [0, 1] (the public code compared a tanh output with [0, 1] targets and rebuilt the
  shuffled mosaic);
* the pooled latents are returned for the sliced-Wasserstein term of
  :class:`~mimtl.losses.TileAELoss`, computed over the whole batch.

``forward(x, perm=None)`` returns ``{"perm_logits": (B, N), "recon": (B, C, H, W),
"latent": (B, 9, latent_channels)}``; :class:`TileAutoencoderReconstruction` (same weights)
returns the reconstruction alone, for inference and TorchScript export.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from mimtl.networks.encoders import build_encoder, encoder_channels, init_encoder, set_bn_momentum
from mimtl.transforms.tiles import DEFAULT_NUM_PERMUTATIONS, permutation_set

__all__ = ["TileAutoencoder", "TileAutoencoderReconstruction"]


class _UpBlock(nn.Sequential):
    """x2 nearest upsampling, 3x3 conv, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class TileAutoencoder(nn.Module):
    """T-AE: shared tile encoder, permutation head, decoder of the un-shuffled image (2D).

    Args:
        encoder: a FlexibleUNet backbone name (``"efficientnet-lite0"``, ``"resnet18"``...).
        in_channels: image channels (1 for an X-ray).
        grid: tiles per side (3).
        num_permutations: size of the permutation set (classes of the permutation head).
        latent_channels: channels of each tile's latent map (and of the pooled latent vectors).
        decoder_channels: channels of the decoder's x2 stages; one stage per factor 2 of the
            encoder's stride (5 for a stride of 32).
        weights: the encoder's initial weights (``None`` | ``"imagenet"`` | a path), see
            :func:`~mimtl.networks.encoders.init_encoder`.
        encoder_bn_momentum: running-statistics momentum of the encoder's batch norms (None keeps
            EfficientNet's 0.01; 0.1 for training from scratch or on a new domain, see
            :func:`~mimtl.networks.encoders.set_bn_momentum`).

    Raises:
        ValueError: an unknown encoder, or ``decoder_channels`` of another length than the number of
            the encoder's feature maps.
    """

    def __init__(
        self,
        encoder: str = "efficientnet-lite0",
        in_channels: int = 1,
        grid: int = 3,
        num_permutations: int = DEFAULT_NUM_PERMUTATIONS,
        latent_channels: int = 64,
        decoder_channels: Sequence[int] = (128, 64, 32, 16, 16),
        weights: str | os.PathLike | None = None,
        encoder_bn_momentum: float | None = None,
    ) -> None:
        super().__init__()
        channels = encoder_channels(encoder)
        if len(decoder_channels) != len(channels):
            raise ValueError(
                f"decoder_channels needs {len(channels)} stages (one per x2 of the {encoder} encoder's stride), "
                f"got {list(decoder_channels)}."
            )
        self.grid = int(grid)
        self.tiles = self.grid * self.grid
        self.in_channels = int(in_channels)
        self.stride = 2 ** len(channels)
        self.encoder = build_encoder(encoder, in_channels)
        self.encoder_init = init_encoder(self.encoder, encoder, weights)
        set_bn_momentum(self.encoder, encoder_bn_momentum)
        self.to_latent = nn.Conv2d(channels[-1], latent_channels, 1)
        self.perm_head = nn.Linear(self.tiles * latent_channels, num_permutations)
        stages, cin = [], latent_channels
        for cout in decoder_channels:
            stages.append(_UpBlock(cin, cout))
            cin = cout
        self.decoder = nn.Sequential(*stages)
        self.recon_head = nn.Conv2d(cin, in_channels, 3, padding=1)
        # stored with the weights: a checkpoint says which permutation each class is
        self.register_buffer("permutations", torch.as_tensor(permutation_set(num_permutations, self.grid)))

    def _check(self, x: torch.Tensor) -> None:
        side = self.grid * self.stride
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % side != 0 or x.shape[3] % side != 0:
            raise ValueError(
                f"TileAutoencoder expects (B, {self.in_channels}, H, W) images with H and W multiples of {side} "
                f"({self.grid} tiles of a multiple of the encoder stride {self.stride}), got {list(x.shape)}."
            )

    def encode_tiles(self, x: torch.Tensor) -> torch.Tensor:
        """Latent maps of the tiles, as seen: ``(B, tiles, latent_channels, h, w)``."""
        b, c, hh, ww = x.shape
        g = self.grid
        th, tw = hh // g, ww // g
        tiles = x.reshape(b, c, g, th, g, tw).permute(0, 2, 4, 1, 3, 5).reshape(b * g * g, c, th, tw)
        z = self.to_latent(self.encoder(tiles)[-1])
        return z.reshape(b, g * g, z.shape[1], z.shape[2], z.shape[3])

    def decode(self, z: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """The image rebuilt from tile latents ``z`` seen in ``order`` (``(B, tiles)``: position i shows tile order[i])."""
        b, k, c, h, w = z.shape
        g = self.grid
        back = order.argsort(dim=1)  # original tile j was seen at position back[j]
        z = torch.gather(z, 1, back.reshape(b, k, 1, 1, 1).expand(b, k, c, h, w))
        mosaic = z.reshape(b, g, g, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * h, g * w)
        return torch.sigmoid(self.recon_head(self.decoder(mosaic)))

    def forward(self, x: torch.Tensor, perm: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Permutation logits, the rebuilt original image and the pooled tile latents.

        Args:
            x: ``(B, C, H, W)`` images, their tiles possibly shuffled.
            perm: ``(B,)`` indices of the permutation applied (training); ``None``: the predicted one.
        """
        self._check(x)
        z = self.encode_tiles(x)
        latent = z.mean(dim=(3, 4))  # (B, tiles, latent_channels)
        logits = self.perm_head(latent.flatten(1))
        index = logits.argmax(dim=1) if perm is None else perm.reshape(-1).long()
        recon = self.decode(z, self.permutations[index])
        return {"perm_logits": logits, "recon": recon, "latent": latent}


class TileAutoencoderReconstruction(TileAutoencoder):
    """A :class:`TileAutoencoder` (same weights, same keys) whose ``forward`` returns the reconstruction only.

    The tiles are taken as seen (order kept): ``(B, C, H, W) -> (B, C, H, W)`` in [0, 1]. For
    inference (how well a film is rebuilt) and TorchScript export.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        self._check(x)
        z = self.encode_tiles(x)
        order = self.permutations[torch.zeros(x.shape[0], dtype=torch.long, device=x.device)]
        return self.decode(z, order)
