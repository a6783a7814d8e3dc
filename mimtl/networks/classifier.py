"""X-ray classifier with a learned color module in front of an ImageNet-style backbone (Morra et al., ICPR 2020).

:class:`ColorizedClassifier` = ``color`` (1 -> 3 channels at the same resolution, see :mod:`mimtl.networks.color`)
followed by ``backbone`` (see :mod:`mimtl.networks.backbones`). The paper trains in two stages: first the backbone is
frozen while the color module and the new classifier train, then everything is fine-tuned::

    model = ColorizedClassifier("deconv", "efficientnet-lite0", num_classes=5)  # ImageNet backbone by default
    model.freeze("backbone")        # stage 1: color module + classifier train; backbone BN stays in eval mode
    ...                             # SupervisedTrainer(network=model, ...) (it calls model.train() every iteration)
    model.unfreeze("backbone")      # stage 2: fine-tune everything

    # transfer a learned color module to another backbone/dataset, keeping it fixed
    other = ColorizedClassifier("deconv", "resnet18", weights="resnet18-f37072fd.pth",
                                color_weights="runs/deconv_lite0/model.pt", freeze_color=True)

Inputs: the X-ray normalised as ``(x01 - XRAY_MEAN) / XRAY_STD`` with ``x01`` in [0, 1]
(:data:`~mimtl.networks.color.XRAY_MEAN` = 0.5028, :data:`~mimtl.networks.color.XRAY_STD` = 0.2902, CheXpert).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from mimtl.networks.backbones import (
    IMAGENET_BACKBONES,
    _canonical_name,
    create_backbone,
)
from mimtl.networks.color import XRAY_MEAN, XRAY_STD, color_module
from mimtl.networks.pretrained import (
    NOT_GIVEN,
    WeightsError,
    deprecated_alias,
    load_pretrained,
    read_state_dict,
)

__all__ = ["XRAY_MEAN", "XRAY_STD", "ColorizedClassifier", "load_color_module"]

_PARTS: tuple[str, ...] = ("color", "backbone", "head")
_INTERFACE: tuple[str, ...] = (
    "forward_features",
    "forward_head",
    "get_classifier",
    "reset_classifier",
    "head_modules",
    "num_features",
    "cam_layer",
)


def load_color_module(module: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the ``color.*`` tensors of a :class:`ColorizedClassifier` checkpoint into a color module (strict).

    Args:
        module: the color module to fill (e.g. ``model.color``); it must be of the same type and size as the saved one.
        path: a checkpoint of a ColorizedClassifier: its bare ``state_dict()`` or ``{"model": state_dict}`` /
            ``{"state_dict": ...}`` as MONAI's ``CheckpointSaver`` writes it; a ``module.`` prefix is removed. Read
            with ``torch.load(path, map_location="cpu", weights_only=True)``.

    Returns:
        ``module``.

    Raises:
        FileNotFoundError: ``path`` is no file.
        ValueError: the file has no ``color.*`` tensors, or they do not fit ``module`` (a
            :class:`~mimtl.networks.pretrained.WeightsError` naming the file and the missing / unexpected /
            mismatched keys).
    """
    path_str = os.fspath(path)
    state = read_state_dict(path)
    if not any(k.startswith("color.") for k in state):
        raise WeightsError(
            f"{path_str!r} has no 'color.*' tensors: expected a ColorizedClassifier checkpoint with a learned color "
            f"module (first keys: {list(state)[:5]})."
        )
    load_pretrained(
        module,
        state,
        source=path_str,
        prefixes=("color.",),
        adapt_stem=False,  # a color module is only transferred as trained, never adapted
        name=type(module).__name__,
        hint="Another color module type or size?",
    )
    return module


class ColorizedClassifier(nn.Module):
    """Color module + backbone classifier with a uniform interface, partial freezing and color-module transfer.

    ``forward(x) = backbone.forward_head(backbone.forward_features(color(x)))`` -> logits ``(B, num_classes)``
    (multi-label use: apply a sigmoid / ``BCEWithLogitsLoss``). State-dict keys are ``color.*`` and ``backbone.*``.

    Interface: ``forward_features``, ``forward_head(features, pre_logits=False)``, ``get_classifier``,
    ``reset_classifier``, ``num_features``, ``num_classes``, ``cam_layer`` (dotted name from the classifier root, for
    ``monai.visualize.GradCAM(nn_module=model, target_layers=model.cam_layer)``), ``domain_layer`` (the same layer: its
    pooled output is what :class:`~mimtl.handlers.DomainCheck` scores), ``freeze`` / ``unfreeze`` /
    ``frozen_parts``. TorchScript-scriptable (``torch.jit.script``, MONAI ``ckpt_export``).

    **Freezing really freezes**: a frozen part gets ``requires_grad=False`` *and* stays in eval mode, so its batch-norm
    running statistics do not move either, even when ``model.train()`` is called (MONAI's ``SupervisedTrainer`` calls
    it every iteration). Parts are ``"color"``, ``"backbone"`` (everything in the backbone but the classification
    head) and ``"head"`` (dropout + linear classifier, trainable unless named).

    Args:
        color_module: a name of :data:`~mimtl.networks.color.COLOR_MODULES` (``"deconv"``, ``"pixelshuffle"``,
            ``"coloru"``, ``"gray"``, ``"conv1x1"``) or a module mapping ``(B, in_channels, H, W)`` to
            ``(B, 3, H, W)``.
        backbone: a name of :data:`~mimtl.networks.backbones.BACKBONES` or a module with the uniform backbone
            interface (e.g. from :func:`~mimtl.networks.create_backbone`; its classifier is reset if its
            ``num_classes`` differs).
        num_classes: outputs of the classifier (5 CheXpert findings in the paper); 0 gives pooled features.
        weights: the backbone's initial weights. ``"default"``: ``"imagenet"`` for EfficientNet-Lite0/1/2 (real
            packaged ImageNet weights) and ``None`` (random init) for every other backbone; or explicitly ``None`` /
            ``"scratch"``, ``"imagenet"`` or the path of a torchvision/timm state-dict file or of a checkpoint holding
            the backbone (see :func:`~mimtl.networks.create_backbone`; another bundle's via
            ``mimtl.bundle.weights_path("bundle:NAME")``). Must be ``"default"``/``None`` when ``backbone`` is a
            module.
        in_channels: channels of the input image (1 for an X-ray).
        dropout: dropout before the classifier; ``None`` keeps the backbone's default (EfficientNet-Lite: its
            official 0.2/0.3; DenseNet/ResNet: 0).
        color_weights: path of a ColorizedClassifier checkpoint whose ``color.*`` tensors are loaded into the color
            module (:func:`load_color_module`; same color module type required).
        freeze_color: freeze the color module permanently (``freeze("color")``; ``unfreeze("color")`` then raises
            until ``model.freeze_color`` is set to ``False``).
        weights_match: ``"name"``, or ``"position"`` (opt-in) to pair a weight file's tensors by layer order.
        backbone_weights: deprecated alias of ``weights`` (DeprecationWarning).
        backbone_bn_stats: ``"frozen"`` (default): the backbone's batch-norm layers always normalise with their
            running (e.g. ImageNet) statistics and never update them, also while the backbone is fine-tuned; their
            affine weights still train. With small batches the running statistics otherwise lag behind the batch
            statistics training uses (EfficientNet's BN momentum is 0.01), and evaluation sees a different network
            than training did; keeping them also makes the color module map X-rays into the statistics the
            backbone was pretrained on. ``"update"``: ordinary batch norm in train mode.
    """

    __jit_unused_properties__ = ["frozen_parts"]
    __jit_ignored_attributes__ = ["_frozen", "random_init_parts"]

    def __init__(
        self,
        color_module: str | nn.Module = "deconv",
        backbone: str | nn.Module = "efficientnet-lite0",
        num_classes: int = 5,
        weights: str | os.PathLike | None = "default",
        in_channels: int = 1,
        dropout: float | None = None,
        color_weights: str | os.PathLike | None = None,
        freeze_color: bool = False,
        backbone_bn_stats: str = "frozen",
        weights_match: str = "name",
        backbone_weights: str | os.PathLike | None = NOT_GIVEN,
    ) -> None:
        super().__init__()
        weights = deprecated_alias(weights, "default", backbone_weights, "backbone_weights", "ColorizedClassifier")
        if backbone_bn_stats not in ("frozen", "update"):
            raise ValueError(f"backbone_bn_stats must be 'frozen' or 'update', got {backbone_bn_stats!r}.")
        self.backbone_bn_stats = backbone_bn_stats
        if isinstance(color_module, str):
            color: nn.Module = _build_color(color_module, in_channels)
        elif isinstance(color_module, nn.Module):
            color = color_module
        else:
            raise TypeError(f"color_module must be a name or an nn.Module, got {type(color_module).__name__}.")

        if isinstance(backbone, str):
            name = _canonical_name(backbone)
            if isinstance(weights, str) and weights == "default":
                weights = "imagenet" if name in IMAGENET_BACKBONES else None
            kwargs = {} if dropout is None else {"dropout": float(dropout)}
            net = create_backbone(
                name, weights=weights, in_channels=3, num_classes=num_classes, weights_match=weights_match, **kwargs
            )
        elif isinstance(backbone, nn.Module):
            missing = [a for a in _INTERFACE if not hasattr(backbone, a)]
            if missing:
                raise TypeError(
                    f"backbone {type(backbone).__name__} lacks the uniform backbone interface ({missing}): build it "
                    f"with mimtl.networks.create_backbone."
                )
            if weights not in ("default", None):
                raise ValueError("weights applies to a backbone given by name; load the module's weights first.")
            net = backbone
            if getattr(net, "num_classes", None) != num_classes:
                net.reset_classifier(num_classes)
        else:
            raise TypeError(f"backbone must be a name or an nn.Module, got {type(backbone).__name__}.")

        self.color = color
        self.backbone = net
        if isinstance(backbone, str) and num_classes not in (0, 1000):
            self._init_new_head()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = int(net.num_features)
        self.cam_layer = f"backbone.{net.cam_layer}"
        # the layer whose pooled output mimtl.handlers.DomainCheck scores (the backbone's final feature map)
        self.domain_layer = self.cam_layer
        self.freeze_color = False
        self._frozen = []  # list[str], in freeze order
        # parts that start from random weights: freezing one of them trains the rest against noise
        no_weights = weights is None or (isinstance(weights, str) and weights == "scratch")
        self.random_init_parts = ["backbone"] if isinstance(backbone, str) and no_weights else []
        if color_weights is not None:
            load_color_module(self.color, color_weights)
        if freeze_color:
            self.freeze("color")
            self.freeze_color = True

    # ------------------------------------------------------------------ forward (TorchScript)
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final backbone feature map ``(B, num_features, h, w)`` of the colorized input."""
        return self.backbone.forward_features(self.color(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooling (+ dropout and classifier unless ``pre_logits``): ``(B, num_classes)`` or ``(B, num_features)``."""
        return self.backbone.forward_head(features, pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for ``x`` of shape ``(B, in_channels, H, W)``."""
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ classifier
    def get_classifier(self) -> nn.Module:
        """The backbone's linear classifier (``nn.Identity`` when ``num_classes == 0``)."""
        return self.backbone.get_classifier()

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one (trainable unless ``"head"`` is frozen)."""
        self.backbone.reset_classifier(num_classes)
        self._init_new_head()
        self.num_classes = num_classes
        self._apply_freeze()

    def _init_new_head(self) -> None:
        # A new head starts near zero (logits ~ 0, p ~ 0.5): the backbones' own inits (e.g. TF's
        # uniform(+-1/sqrt(num_classes)) for EfficientNet) give logits of several units on pretrained
        # features, a large first loss and large early gradients into the color module.
        fc = self.backbone.get_classifier()
        if isinstance(fc, nn.Linear):
            nn.init.normal_(fc.weight, std=0.01)
            nn.init.zeros_(fc.bias)

    # ------------------------------------------------------------------ freezing
    @property
    def frozen_parts(self) -> tuple[str, ...]:
        """The frozen parts, in the order ``("color", "backbone", "head")``."""
        return tuple(p for p in _PARTS if p in self._frozen)

    def freeze(self, parts: str | Sequence[str] = ("backbone",)) -> ColorizedClassifier:
        """Freeze ``parts`` (``"color"``, ``"backbone"``, ``"head"`` or ``"all"``): no gradients, eval mode for good."""
        for part in _check_parts(parts):
            if part not in self._frozen:
                self._frozen.append(part)
        self._apply_freeze()
        return self

    def unfreeze(self, parts: str | Sequence[str] = ("backbone",)) -> ColorizedClassifier:
        """Make ``parts`` trainable again (they follow ``model.train()`` / ``model.eval()`` again).

        Raises:
            ValueError: ``"color"`` (or ``"all"``) while the model was built with ``freeze_color=True``.
        """
        parts = _check_parts(parts)
        if "color" in parts and self.freeze_color:
            raise ValueError(
                "the color module is frozen permanently (freeze_color=True); set model.freeze_color = False first "
                "to fine-tune it."
            )
        self._frozen = [p for p in self._frozen if p not in parts]
        self._apply_freeze()
        return self

    def train(self, mode: bool = True) -> ColorizedClassifier:
        """Set the training mode; frozen parts stay in eval mode (their batch-norm statistics do not update)."""
        super().train(mode)
        if mode and getattr(self, "_frozen", None):
            head = self._head_modules()
            if "color" in self._frozen:
                self.color.train(False)
            if "backbone" in self._frozen:
                self.backbone.train(False)
                if "head" not in self._frozen:
                    for m in head:
                        m.train(True)
            if "head" in self._frozen:
                for m in head:
                    m.train(False)
        if mode and getattr(self, "backbone_bn_stats", "update") == "frozen":
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train(False)
        return self

    def _head_modules(self) -> list[nn.Module]:
        return list(self.backbone.head_modules())

    def _apply_freeze(self) -> None:
        head_ids = {id(p) for m in self._head_modules() for p in m.parameters()}
        for p in self.color.parameters():
            p.requires_grad_("color" not in self._frozen)
        for p in self.backbone.parameters():
            part = "head" if id(p) in head_ids else "backbone"
            p.requires_grad_(part not in self._frozen)
        self.train(self.training)


def _check_parts(parts: str | Sequence[str]) -> list[str]:
    if isinstance(parts, str):
        parts = list(_PARTS) if parts == "all" else [parts]
    parts = list(parts)
    bad = [p for p in parts if p not in _PARTS]
    if bad:
        raise ValueError(f"unknown part(s) {bad}: expected some of {list(_PARTS)} (or 'all').")
    return parts


def _build_color(name: str, in_channels: int) -> nn.Module:
    return color_module(name, in_channels=in_channels)
