"""Fold inference-mode batch norms into the convolutions that feed them.

In eval mode a ``BatchNorm`` right after a convolution is an affine map per channel, so it can be
merged into the convolution's weights and bias: the network computes the same function with one
pass over each feature map fewer. On a CPU the batch norms of an EfficientNet-Lite or a ResNet
trunk take a fifth of the forward time (bf16 autocast makes them no cheaper), so inference folds
them once after the weights are loaded.

Which convolution feeds which norm is found by running the network once: a norm whose input is
the very tensor a convolution returned is a candidate. The folded network is then checked against
the original on that input; if they differ (a convolution whose output is also used elsewhere, a
shared convolution), nothing is folded.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["fold_batch_norms", "is_folded", "unfold_batch_norms"]

logger = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _pairs(network: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, str]], object]:
    """``(conv name, norm name)`` for every norm whose input is the output of a convolution, in call
    order, and the network's output on ``example``."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> (conv, output kept alive)
    calls: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    hooks = []

    def on_conv(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor):
                produced[id(output)] = (name, output)

        return hook

    def on_norm(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            calls[name] = calls.get(name, 0) + 1
            source = produced.get(id(args[0])) if args else None
            if source is not None and source[1] is args[0]:
                pairs.append((source[0], name))

        return hook

    for name, module in network.named_modules():
        if isinstance(module, _CONVS):
            hooks.append(module.register_forward_hook(on_conv(name)))
        elif isinstance(module, _NORMS):
            hooks.append(module.register_forward_pre_hook(on_norm(name)))
    try:
        with torch.no_grad():
            output = network(example)
    finally:
        for h in hooks:
            h.remove()
    # a module called more than once (shared weights) cannot be folded for only one of its uses
    return [(c, n) for c, n in pairs if calls.get(c) == 1 and calls.get(n) == 1], output


def _tensors(output: object) -> list[torch.Tensor]:
    """The tensors of a network's output (a tensor, or a list / tuple / dict of them), in order."""
    if isinstance(output, torch.Tensor):
        return [output.float()]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def _close(before: list[torch.Tensor], after: list[torch.Tensor], rtol: float) -> bool:
    if not before or len(before) != len(after):
        return False
    for a, b in zip(before, after, strict=True):
        if a.shape != b.shape:
            return False
        if float((a - b).abs().max()) > rtol * max(float(a.abs().max()), 1e-12):
            return False
    return True


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _foldable(network: nn.Module, conv: str, norm: str) -> bool:
    """A norm with running statistics, and neither module hooked: a hooked module is watched by
    someone (a domain check, a CAM), so its output must not change."""
    modules = [network.get_submodule(conv), network.get_submodule(norm)]
    return getattr(modules[1], "running_var", None) is not None and not any(map(_hooked, modules))


def _replace(network: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    parent._modules[child] = module


def fold_batch_norms(network: nn.Module, example: torch.Tensor, rtol: float = 1e-4) -> int:
    """Fold every eval-mode batch norm that directly follows a convolution into it, in place.

    The norm becomes an ``nn.Identity`` and the convolution gets the merged weight and bias, so
    the parameters' names change: fold only a network used for inference. The original modules
    are kept: :func:`unfold_batch_norms` puts them back, and so does loading a state dict into the
    network (a workflow run again loads its checkpoint again, then folds again at its first batch).

    Args:
        network: the network, in eval mode, with its weights loaded.
        example: an input batch (its values do not matter; its shape should be the real one).
        rtol: the largest change of the output, relative to its largest magnitude, still accepted.

    Returns:
        How many norms were folded (0 when the check fails: the network is then left unchanged).

    Raises:
        ValueError: the network is in training mode (its norms use batch statistics).
    """
    if network.training:
        raise ValueError("fold_batch_norms needs a network in eval mode (network.eval()).")
    with torch.no_grad():
        found, before = _pairs(network, example)
        pairs = [(c, n) for c, n in found if _foldable(network, c, n)]
        if not pairs:
            return 0
        originals = {name: network.get_submodule(name) for pair in pairs for name in pair}
        for conv_name, norm_name in pairs:
            conv, norm = originals[conv_name], originals[norm_name]
            fused = copy.copy(conv)
            fused._parameters = dict(conv._parameters)
            weight, bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
            )
            if conv.weight.dim() == 4 and conv.weight.is_contiguous(memory_format=torch.channels_last):
                weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last))
            fused.weight, fused.bias = weight, bias
            _replace(network, conv_name, fused)
            _replace(network, norm_name, nn.Identity())
        after = _tensors(network(example))
        before = _tensors(before)
        if not _close(before, after, rtol):
            for name, module in originals.items():  # the originals were not touched: put them back
                _replace(network, name, module)
            logger.warning("fold_batch_norms: the folded network differed from the original; nothing folded.")
            return 0
    _remember_originals(network, originals)
    return len(pairs)


def is_folded(network: nn.Module) -> bool:
    """Whether :func:`fold_batch_norms` folded ``network`` (and it was not unfolded since)."""
    return hasattr(network, _UNFOLD)


def unfold_batch_norms(network: nn.Module) -> bool:
    """Put back the convolutions and norms :func:`fold_batch_norms` replaced; False if it was not folded."""
    undo = getattr(network, _UNFOLD, None)
    if undo is None:
        return False
    undo()
    return True


_UNFOLD = "_mimtl_unfold_batch_norms"


def _remember_originals(network: nn.Module, originals: dict[str, nn.Module]) -> None:
    def undo() -> None:
        for name, module in originals.items():
            _replace(network, name, module)
        handle.remove()
        delattr(network, _UNFOLD)

    def before_load(*args: object) -> None:  # the original names are the ones a checkpoint has
        undo()

    # the root's pre-hook runs before its children load, so they are the original modules again
    handle = network.register_load_state_dict_pre_hook(before_load)
    setattr(network, _UNFOLD, undo)
