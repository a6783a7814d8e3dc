"""DenseNet-121/169/201 as a MONAI ``FlexibleUNet`` encoder (five feature maps at strides 2, 4, 8, 16, 32).

MONAI registers EfficientNet and ResNet encoders in ``FLEXUNET_BACKBONE`` but no DenseNet. :class:`DenseNetEncoder`
is built from the layers of MONAI's ``DenseNet`` and keeps its ``features.*`` module (the classifier is not built),
so its state-dict keys are MONAI's (``features.conv0.weight``, ``features.denseblock1.denselayer1.layers.norm1.*``,
...) and torchvision/timm DenseNet weight files load through :func:`torchvision_densenet_key`
(``denselayerN.norm1`` -> ``denselayerN.layers.norm1``).

Importing this module registers ``"densenet121"``, ``"densenet169"`` and ``"densenet201"``::

    import mimtl.networks  # noqa: F401  (registers the encoders)
    from monai.networks.nets import FlexibleUNet

    net = FlexibleUNet(in_channels=1, out_channels=19, backbone="densenet121")

The skip features are taken as in torchvision's dense prediction heads: the output of each dense block after
the batch norm and ReLU that open the following transition (before its 1x1 convolution and pooling), and
``norm5`` + ReLU for the last block.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.layers.utils import get_act_layer
from monai.networks.nets import DenseNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

__all__ = ["DENSENET_CONFIGS", "DenseNetEncoder", "torchvision_densenet_key"]

#: name -> layers per dense block (torchvision/MONAI: init_features 64, growth_rate 32, bn_size 4).
DENSENET_CONFIGS: dict[str, tuple[int, int, int, int]] = {
    "densenet121": (6, 12, 24, 16),
    "densenet169": (6, 12, 32, 32),
    "densenet201": (6, 12, 48, 32),
}
# torchvision/timm dense-layer keys, new (norm1) and old (norm.1) style -> MONAI's denselayerN.layers.norm1
_TV_DENSE_LAYER = re.compile(
    r"^(features\.denseblock\d+\.denselayer\d+)\.(norm|relu|conv)\.?([12])\."
    r"(weight|bias|running_mean|running_var|num_batches_tracked)$"
)


def torchvision_densenet_key(key: str) -> str:
    """Map a torchvision/timm DenseNet key onto MONAI's ``DenseNet`` naming (the key map of DenseNet weights).

    ``features.denseblockI.denselayerJ.norm1`` (or old-style ``norm.1``) -> ``...denselayerJ.layers.norm1``,
    ``classifier.*`` -> ``class_layers.out.*``; every other key is the same in both.

    Args:
        key: a key of the file, without wrapper prefixes.

    Returns:
        The key in MONAI's naming.
    """
    if key.startswith("classifier."):
        return "class_layers.out." + key[len("classifier.") :]
    match = _TV_DENSE_LAYER.match(key)
    if match:
        block, kind, idx, tensor = match.groups()
        return f"{block}.layers.{kind}{idx}.{tensor}"
    return key


_INIT_FEATURES = 64
_GROWTH_RATE = 32


def _feature_channels(block_config: Sequence[int]) -> tuple[int, ...]:
    """Channels of the five outputs: stem, then each dense block's output (halved by every transition)."""
    channels = [_INIT_FEATURES]
    c = _INIT_FEATURES
    for i, n in enumerate(block_config):
        c += n * _GROWTH_RATE
        channels.append(c)
        if i < len(block_config) - 1:
            c //= 2
    return tuple(channels)


class DenseNetEncoder(DenseNet, BaseEncoder):
    """MONAI ``DenseNet`` (no classifier) returning five feature maps for ``FlexibleUNet``.

    Outputs, for a ``(B, in_channels, H, W)`` input (densenet121 channels):

    ====== ======= ============================================================
    stride channels taken after
    ====== ======= ============================================================
    2      64      ``features.relu0``
    4      256     ``denseblock1`` + ``transition1.norm`` / ``relu``
    8      512     ``denseblock2`` + ``transition2.norm`` / ``relu``
    16     1024    ``denseblock3`` + ``transition3.norm`` / ``relu``
    32     1024    ``denseblock4`` + ``norm5`` + ReLU
    ====== ======= ============================================================

    Args:
        variant: ``"densenet121"``, ``"densenet169"`` or ``"densenet201"``.
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: number of input channels.
        pretrained: must be ``False``: no DenseNet weights ship offline; load a torchvision/timm weight file instead
            (e.g. ``HeatmapUNet(encoder="densenet121", weights="densenet121-a639ec97.pth")``).
        act: activation type and arguments (MONAI default: in-place ReLU).
        norm: normalisation type and arguments (MONAI default: batch norm).
        dropout_prob: dropout rate after each dense layer.

    Raises:
        ValueError: unknown ``variant`` or ``pretrained=True``.
    """

    backbone_names = list(DENSENET_CONFIGS)

    def __init__(
        self,
        variant: str = "densenet121",
        spatial_dims: int = 2,
        in_channels: int = 3,
        pretrained: bool = False,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        dropout_prob: float = 0.0,
    ) -> None:
        if variant not in DENSENET_CONFIGS:
            raise ValueError(f"unknown DenseNet {variant!r}, expected one of {list(DENSENET_CONFIGS)}.")
        if pretrained:
            raise ValueError(
                f"no offline pretrained weights for {variant}: pass the path of a torchvision/timm state-dict file "
                "as encoder weights instead (e.g. HeatmapUNet(weights=...))."
            )
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=1,
            init_features=_INIT_FEATURES,
            growth_rate=_GROWTH_RATE,
            block_config=DENSENET_CONFIGS[variant],
            bn_size=4,
            act=act,
            norm=norm,
            dropout_prob=dropout_prob,
        )
        # only ``features`` is kept, so the state dict is torchvision's ``features.*`` part in MONAI naming
        del self.class_layers
        self.final_act = get_act_layer(name=act)
        self.variant = variant
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_channels: tuple[int, ...] = _feature_channels(DENSENET_CONFIGS[variant])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """The five feature maps at strides 2, 4, 8, 16, 32."""
        f = self.features
        x = f.relu0(f.norm0(f.conv0(x)))
        out = [x]
        # each transition is norm -> relu -> conv -> pool; its normalised, activated input is the skip feature
        x = f.denseblock1(f.pool0(x))
        x = f.transition1.relu(f.transition1.norm(x))
        out.append(x)
        x = f.denseblock2(f.transition1.pool(f.transition1.conv(x)))
        x = f.transition2.relu(f.transition2.norm(x))
        out.append(x)
        x = f.denseblock3(f.transition2.pool(f.transition2.conv(x)))
        x = f.transition3.relu(f.transition3.norm(x))
        out.append(x)
        x = f.denseblock4(f.transition3.pool(f.transition3.conv(x)))
        out.append(self.final_act(f.norm5(x)))
        return out

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """Initialisation parameters per registered name (FlexibleUNet overrides the last three)."""
        return [
            {"variant": name, "spatial_dims": 2, "in_channels": 3, "pretrained": False} for name in cls.backbone_names
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """Channels of the five outputs, per registered name."""
        return [_feature_channels(DENSENET_CONFIGS[name]) for name in cls.backbone_names]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Five outputs for every DenseNet."""
        return [5] * len(cls.backbone_names)

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """``["densenet121", "densenet169", "densenet201"]``."""
        return list(cls.backbone_names)


FLEXUNET_BACKBONE.register_class(DenseNetEncoder)
