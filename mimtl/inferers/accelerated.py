"""A ``SimpleInferer`` whose speed-ups (channels_last, autocast, plain tensors) are switches.

MONAI's engines only autocast on CUDA (``torch.autocast("cuda")``); bf16 autocast on a CPU with
native bf16 (AVX-512 BF16, AMX) is as large a win, so the inferer owns the autocast instead. It is
device-agnostic: the autocast device is the input's device.

bf16 only pays where the hardware runs it natively: on a CPU without it (AVX2, or AVX-512 without
the BF16 extension) oneDNN emulates bf16 and the same network ran 7x *slower* than fp32. So the
default, ``amp="auto"``, decides per device at the first batch (:func:`native_bf16`) and logs the
choice once; ``True``/``False`` still force it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

__all__ = ["AMP_MODES", "AcceleratedInferer", "native_bf16"]

logger = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
#: Values of ``amp``: a bool forces autocast on or off; "auto" chooses by :func:`native_bf16`.
AMP_MODES = (True, False, "auto")


def _cpu_flag(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)  # private probes of torch.cpu; absent in some builds
    try:
        return bool(probe()) if callable(probe) else False
    except Exception:
        return False


def native_bf16(device: str | torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and why (for the log).

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and later). CPU: the AVX-512 BF16 or AMX
    instructions, which oneDNN's bf16 kernels need to beat fp32 (oneDNN reports bf16 support on any
    AVX-512 CPU, emulating it; that is the slow case). Anything else: no.
    """
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA device with bf16" if ok else "CUDA device without native bf16"
    if device.type == "cpu":
        found = [
            f
            for f, probe in (("AVX-512 BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
            if _cpu_flag(probe)
        ]
        if found:
            return True, f"CPU with {' and '.join(found)}"
        return False, f"CPU without native bf16 ({torch.backends.cpu.get_cpu_capability()})"
    return False, f"{device.type} device"


class AcceleratedInferer(Inferer):
    """Run ``network(inputs)`` with optional channels_last memory format and mixed precision.

    Args:
        amp: ``"auto"`` (default): bf16 autocast where the inputs' device runs bf16 natively (CUDA
            with bf16, a CPU with AVX-512 BF16 or AMX), fp32 elsewhere; decided at the first batch
            and logged once. ``True``/``False`` force autocast on/off.
        amp_dtype: ``"bfloat16"`` (no loss scaling needed) or ``"float16"`` (CUDA; for training pair
            it with a GradScaler, e.g. MONAI trainers' ``amp=True``). ``amp="auto"`` checks for
            native bf16 only; it enables float16 only on CUDA.
        channels_last: convert 4D inputs to channels_last (the network should be converted too:
            ``network.to(memory_format=torch.channels_last)``); faster on every CPU measured.
        plain_tensor: hand the network a plain ``torch.Tensor`` instead of a ``MetaTensor``; metadata
            tracking costs time on every layer and the network does not need it.
        inner: another inferer to run under these settings, e.g. MONAI's ``SlidingWindowInferer``:
            ``inner(inputs, network)`` runs inside the autocast, and each window it cuts is laid out
            channels_last before the network sees it.
        fold_batch_norm: at the first call with a network in eval mode, fold its batch norms into
            the convolutions before them, in place (:func:`mimtl.inferers.fold.fold_batch_norms`,
            checked against the unfolded output): a fifth less forward time on a CPU. For inference
            workflows only: the folded network has other parameter names and no norms to train.

    The output is returned as float32 so losses, metrics and post-processing run at full precision.
    With every switch off it is exactly :class:`monai.inferers.SimpleInferer`.

    Example (YAML)::

        inferer: {_target_: mimtl.inferers.AcceleratedInferer, amp: auto, channels_last: true}
    """

    def __init__(
        self,
        amp: bool | str = "auto",
        amp_dtype: str = "bfloat16",
        channels_last: bool = False,
        plain_tensor: bool = True,
        inner: Callable[..., Any] | None = None,
        fold_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if amp_dtype not in _DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(_DTYPES)}, got {amp_dtype!r}.")
        if amp not in AMP_MODES or (isinstance(amp, str) and amp != "auto"):
            raise ValueError(f"amp must be true, false or 'auto', got {amp!r}.")
        self.amp = amp
        self.amp_dtype = _DTYPES[amp_dtype]
        self.channels_last = channels_last
        self.plain_tensor = plain_tensor
        self.inner = inner
        self.fold_batch_norm = fold_batch_norm
        self._tried: weakref.WeakSet = weakref.WeakSet()  # networks with nothing to fold
        self._decided: dict[str, bool] = {}  # device type -> autocast on, for amp="auto"

    def autocast_enabled(self, device: str | torch.device) -> bool:
        """Whether the forward on ``device`` runs under autocast (resolving ``amp="auto"`` once per device type)."""
        if self.amp != "auto":
            return bool(self.amp)
        device = torch.device(device)
        if device.type not in self._decided:
            if self.amp_dtype == torch.float16:
                on, why = (
                    device.type == "cuda",
                    f"float16 autocast {'on CUDA' if device.type == 'cuda' else 'is for CUDA only'}",
                )
            else:
                on, why = native_bf16(device)
            self._decided[device.type] = on
            logger.info(
                "amp=auto: %s autocast %s (%s)",
                str(self.amp_dtype).replace("torch.", ""),
                "on" if on else "off, fp32",
                why,
            )
        return self._decided[device.type]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.plain_tensor and isinstance(inputs, MetaTensor):
            inputs = inputs.as_tensor()
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self.fold_batch_norm:
            self._fold(network, inputs)
        enabled = self.autocast_enabled(inputs.device)
        with torch.autocast(inputs.device.type, dtype=self.amp_dtype, enabled=enabled):
            if self.inner is None:
                out = network(inputs, *args, **kwargs)
            else:  # e.g. a sliding window: its windows are cut and stacked anew, so lay each one out too
                out = self.inner(inputs, self._laid_out(network), *args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            out = out.float()
        return out

    def _fold(self, network: Any, inputs: torch.Tensor) -> None:
        from mimtl.inferers.fold import fold_batch_norms, is_folded

        if not isinstance(network, torch.nn.Module) or network.training or is_folded(network):
            return
        if network in self._tried:  # the check refused this network once: not again at every batch
            return
        roi = getattr(self.inner, "roi_size", None)
        if self.inner is None or roi is None:
            example = inputs[:1].float()
        else:  # the network sees windows, not the whole image
            example = torch.randn(1, inputs.shape[1], *roi, device=inputs.device)
            if self.channels_last and example.ndim == 4:
                example = example.contiguous(memory_format=torch.channels_last)
        # the check runs the network twice in fp32: on a 64 px corner it costs a few milliseconds
        # instead of two full-size forwards (a network that refuses the corner gets the whole input)
        corner = example[(..., *[slice(0, 64)] * (example.ndim - 2))]
        try:
            folded = fold_batch_norms(network, corner)
        except (RuntimeError, ValueError):
            folded = fold_batch_norms(network, example)
        if not folded:
            self._tried.add(network)
        logger.info("fold_batch_norm: %d batch norms folded into their convolutions", folded)

    def _laid_out(self, network: Callable[..., Any]) -> Callable[..., Any]:
        if not self.channels_last:
            return network

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if isinstance(x, torch.Tensor) and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            return network(x, *args, **kwargs)

        return forward

    def __repr__(self) -> str:
        dtype = str(self.amp_dtype).replace("torch.", "")
        return (
            f"{type(self).__name__}(amp={self.amp!r}, amp_dtype={dtype!r}, channels_last={self.channels_last}, "
            f"plain_tensor={self.plain_tensor}, fold_batch_norm={self.fold_batch_norm})"
        )
