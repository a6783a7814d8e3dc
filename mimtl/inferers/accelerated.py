"""A ``SimpleInferer`` whose speed-ups (channels_last, autocast, plain tensors) are switches.

MONAI's engines only autocast on CUDA (``torch.autocast("cuda")``); bf16 autocast on a CPU with
AVX-512 BF16 is as large a win, so the inferer owns the autocast instead. It is device-agnostic:
the autocast device is the input's device.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

__all__ = ["AcceleratedInferer"]

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class AcceleratedInferer(Inferer):
    """Run ``network(inputs)`` with optional channels_last memory format and mixed precision.

    Args:
        amp: autocast the forward pass (on the inputs' device type).
        amp_dtype: ``"bfloat16"`` (CPU with AVX-512 BF16, Ampere+ GPUs; no loss scaling needed) or
            ``"float16"`` (CUDA; for training pair it with a GradScaler, e.g. MONAI trainers' ``amp=True``).
        channels_last: convert 4D inputs to channels_last (the network should be converted too:
            ``network.to(memory_format=torch.channels_last)``).
        plain_tensor: hand the network a plain ``torch.Tensor`` instead of a ``MetaTensor``; metadata
            tracking costs time on every layer and the network does not need it.

    The output is returned as float32 so losses, metrics and post-processing run at full precision.
    With every switch off it is exactly :class:`monai.inferers.SimpleInferer`.

    Example (YAML)::

        inferer: {_target_: mimtl.inferers.AcceleratedInferer, amp: true, channels_last: true}
    """

    def __init__(
        self, amp: bool = False, amp_dtype: str = "bfloat16", channels_last: bool = False, plain_tensor: bool = True
    ) -> None:
        super().__init__()
        if amp_dtype not in _DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(_DTYPES)}, got {amp_dtype!r}.")
        self.amp = amp
        self.amp_dtype = _DTYPES[amp_dtype]
        self.channels_last = channels_last
        self.plain_tensor = plain_tensor

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.plain_tensor and isinstance(inputs, MetaTensor):
            inputs = inputs.as_tensor()
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(inputs.device.type, dtype=self.amp_dtype, enabled=self.amp):
            out = network(inputs, *args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            out = out.float()
        return out

    def __repr__(self) -> str:
        dtype = str(self.amp_dtype).replace("torch.", "")
        return (
            f"{type(self).__name__}(amp={self.amp}, amp_dtype={dtype!r}, channels_last={self.channels_last}, "
            f"plain_tensor={self.plain_tensor})"
        )
