"""Color modules: learned maps from a 1-channel X-ray to a 3-channel image at the same resolution.

Morra et al., "Bridging the gap between natural and medical images through deep colorization" (ICPR 2020) put a
small network trained from scratch in front of an ImageNet backbone, so the backbone sees a 3-channel image whose
"colors" are learned for the task instead of a gray image replicated three times. This module holds the three
designs of the paper and the two baselines:

* ``"deconv"``, :class:`DeconvColor` (H, W multiples of 4): 7x7/2 conv-BN-LReLU, 3x3/2 max-pool, 8 residual blocks
  (64 ch), 1x1 conv to 3 ch, 8x8/4 transposed conv (groups=3); Xavier init.
* ``"pixelshuffle"``, :class:`PixelShuffleColor` (multiples of 4): same stem and blocks, 1x1 conv to 48 ch, BN,
  Hardtanh, PixelShuffle(4), replication pad + 2x2/1 average pool; ICNR init.
* ``"coloru"``, :class:`ColorUNet` (multiples of 4): small U-Net 1->16->32->64 (3 levels), 2 up blocks with skips,
  full-resolution output block, 1x1 conv to 3 ch.
* ``"gray"``, :class:`GrayToRGB` (any size): gray replicated to 3 channels, no parameters (baseline).
* ``"conv1x1"``, :class:`Conv1x1Color` (any size): learned 1x1 conv 1->3 with bias, initialised to replicate
  (baseline).

Every module maps ``(B, in_channels, H, W)`` to ``(B, 3, H, W)``. The learned ones are fully convolutional: any
``H, W`` that are multiples of 4 work (224, 256, 128, 64, 96x160, ...); other sizes raise a ``ValueError`` naming the
constraint (``torch.jit.Error`` with the same message once scripted). All are TorchScript-scriptable and run with
``channels_last`` tensors and under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

Input convention: the X-ray normalised with the CheXpert statistics of the paper,
``(x01 - XRAY_MEAN) / XRAY_STD`` with ``x01`` in [0, 1] (:data:`XRAY_MEAN` = 0.5028, :data:`XRAY_STD` = 0.2902).

Example::

    from mimtl.networks import color_module

    net = color_module("deconv")  # or "pixelshuffle", "coloru", "gray", "conv1x1"
    rgb = net(torch.randn(2, 1, 224, 224))  # (2, 3, 224, 224)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

__all__ = [
    "COLOR_MODULES",
    "XRAY_MEAN",
    "XRAY_STD",
    "ColorUNet",
    "Conv1x1Color",
    "DeconvColor",
    "GrayToRGB",
    "PixelShuffleColor",
    "color_module",
    "icnr_",
]

#: Mean of the [0, 1]-scaled CheXpert X-rays (Morra et al. 2020): inputs are ``(x01 - XRAY_MEAN) / XRAY_STD``.
XRAY_MEAN: float = 0.5028
#: Standard deviation of the [0, 1]-scaled CheXpert X-rays (Morra et al. 2020).
XRAY_STD: float = 0.2902

_LRELU: tuple = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})  # PyTorch default slope
_BN: str = "batch"


def _check_size(x: torch.Tensor, multiple: int, name: str) -> None:
    """Raise a ``ValueError`` unless ``x`` is ``(B, C, H, W)`` with ``H`` and ``W`` multiples of ``multiple``."""
    if x.dim() != 4:
        raise ValueError(f"{name} expects a (B, C, H, W) tensor, got {x.dim()} dimensions.")
    h, w = x.shape[2], x.shape[3]
    if h % multiple != 0 or w % multiple != 0:
        raise ValueError(
            f"{name} needs the height and width to be multiples of {multiple}, got {h}x{w}: resize or pad the image."
        )


def icnr_(weight: torch.Tensor, upscale: int, init=nn.init.xavier_uniform_) -> torch.Tensor:
    """ICNR initialisation (Aitken et al. 2017) of the weight of a convolution that feeds ``nn.PixelShuffle``.

    A sub-kernel ``(out / upscale**2, in, kh, kw)`` is initialised with ``init`` and each of its output kernels is
    repeated ``upscale**2`` times (the consecutive channels ``c * r**2 ... (c + 1) * r**2 - 1`` that the pixel shuffle
    scatters into the ``r x r`` block of output channel ``c``). At initialisation the conv + pixel shuffle is then a
    convolution at low resolution followed by nearest-neighbour upsampling: no checkerboard artifacts.

    Args:
        weight: convolution weight ``(C * upscale**2, in, kh, kw)``, filled in place.
        upscale: pixel-shuffle factor ``r``.
        init: initialiser of the sub-kernel (default Xavier uniform; its fans are those of the sub-kernel).

    Returns:
        ``weight``.
    """
    r2 = upscale * upscale
    if weight.shape[0] % r2 != 0:
        raise ValueError(f"ICNR: {weight.shape[0]} output channels are not a multiple of upscale**2 = {r2}.")
    sub = torch.empty((weight.shape[0] // r2, *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
    init(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(r2, dim=0))
    return weight


def _xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights (zero bias) for every (transposed) convolution, BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _ResNetTrunk(nn.Module):
    """Stem and residual blocks shared by :class:`DeconvColor` and :class:`PixelShuffleColor` (stride 4 output).

    7x7 conv (stride 2, padding 3, no bias) -> BN -> LeakyReLU, 3x3 max-pool (stride 2, padding 1), then
    ``num_blocks`` MONAI ``ResidualUnit`` s, each two 3x3 conv -> BN -> LeakyReLU sub-units and an identity skip.
    For ``H`` a multiple of 4 the output is exactly ``H / 4``.
    """

    def __init__(self, in_channels: int, channels: int, num_blocks: int) -> None:
        super().__init__()
        self.stem = Convolution(
            2,
            in_channels,
            channels,
            strides=2,
            kernel_size=7,
            padding=3,
            adn_ordering="NA",
            act=_LRELU,
            norm=_BN,
            bias=False,
        )
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.blocks = nn.Sequential(
            *[
                ResidualUnit(
                    2,
                    channels,
                    channels,
                    kernel_size=3,
                    subunits=2,
                    adn_ordering="NA",
                    act=_LRELU,
                    norm=_BN,
                    bias=False,
                )
                for _ in range(num_blocks)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pool(self.stem(x)))


class DeconvColor(nn.Module):
    """DECONV color module (Morra et al. 2020): ResNet-like trunk at 1/4 resolution, transposed-conv upsampling.

    ``7x7/2 conv (64) + BN + LeakyReLU -> 3x3/2 max-pool -> 8 x [two 3x3 conv-BN-LeakyReLU + identity]
    -> 1x1 conv (3 ch) -> 8x8 transposed conv, stride 4, padding 2, groups 3 (one upsampling kernel per channel)``.
    Every (transposed) convolution is Xavier-uniform initialised (zero biases), batch norms to 1 / 0.
    ``H`` and ``W`` must be multiples of 4 (the transposed conv gives back exactly ``4 * (H / 4)``).

    Args:
        in_channels: input channels (1 for an X-ray).
        channels: width of the trunk (64 in the paper).
        num_blocks: residual blocks (8 in the paper).
    """

    size_multiple: int = 4

    def __init__(self, in_channels: int = 1, channels: int = 64, num_blocks: int = 8) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.trunk = _ResNetTrunk(in_channels, channels, num_blocks)
        self.to_rgb = nn.Conv2d(channels, 3, kernel_size=1, bias=True)
        self.up = nn.ConvTranspose2d(3, 3, kernel_size=8, stride=4, padding=2, groups=3, bias=False)
        _xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, 3, H, W)``."""
        _check_size(x, 4, "DeconvColor")
        return self.up(self.to_rgb(self.trunk(x)))


class PixelShuffleColor(nn.Module):
    """PixelShuffle color module (Morra et al. 2020): same trunk as :class:`DeconvColor`, sub-pixel upsampling.

    ``trunk -> 1x1 conv (48 = 3 * 4**2 ch) -> BN -> Hardtanh -> PixelShuffle(4) -> replication pad (1 px, top/left)
    -> 2x2 average pool, stride 1``. The pad + average pool is the blur of Sugawara et al. that removes the remaining
    checkerboard artifacts while keeping the size. The 1x1 conv that feeds the pixel shuffle is ICNR-initialised
    (:func:`icnr_`, Xavier-uniform sub-kernel, zero bias); the trunk is Xavier-uniform initialised like DECONV.
    ``H`` and ``W`` must be multiples of 4.

    Args:
        in_channels: input channels (1 for an X-ray).
        channels: width of the trunk (64 in the paper).
        num_blocks: residual blocks (8 in the paper).
        hardtanh_range: ``(min, max)`` of the Hardtanh; the default ``(-1, 1)`` is ``nn.Hardtanh``'s. The authors'
            public code used a practically unbounded ``(-1e4, 1e4)``; widen it for backbones that expect
            ImageNet mean/std inputs (about [-2.1, 2.6]).
    """

    size_multiple: int = 4
    upscale: int = 4

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 64,
        num_blocks: int = 8,
        hardtanh_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        r = self.upscale
        self.trunk = _ResNetTrunk(in_channels, channels, num_blocks)
        self.to_subpixels = nn.Conv2d(channels, 3 * r * r, kernel_size=1, bias=True)
        self.norm = nn.BatchNorm2d(3 * r * r)
        self.act = nn.Hardtanh(float(hardtanh_range[0]), float(hardtanh_range[1]))
        self.shuffle = nn.PixelShuffle(r)
        self.pad = nn.ReplicationPad2d((1, 0, 1, 0))
        self.blur = nn.AvgPool2d(kernel_size=2, stride=1)
        _xavier_init(self)
        icnr_(self.to_subpixels.weight, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, 3, H, W)``."""
        _check_size(x, 4, "PixelShuffleColor")
        x = self.shuffle(self.act(self.norm(self.to_subpixels(self.trunk(x)))))
        return self.blur(self.pad(x))


class ColorUNet(nn.Module):
    """ColorU color module (Morra et al. 2020): a small U-Net (0.18M parameters with the default widths).

    Exact layout (LReLU = LeakyReLU(0.01); every convolution has a bias; 4x4 convs use stride 2 and padding 1):

    * ``down1 .. down3`` (``in -> 16``, ``16 -> 32``, ``32 -> 64``): 3x3 conv (``c_in -> c_out``), LReLU,
      4x4 stride-2 conv (``c_out -> c_out``), LReLU, BN. Outputs at 1/2, 1/4 and 1/8 resolution.
    * ``up1`` (64 -> 32) and ``up2`` (64 -> 16): 4x4 stride-2 transposed conv, LReLU, 3x3 conv, LReLU, BN; the output
      of ``up1`` is concatenated with ``down2``'s (32 + 32 = 64 ch, 1/4), that of ``up2`` with ``down1``'s
      (16 + 16 = 32 ch, 1/2).
    * ``out``: 4x4 stride-2 transposed conv (32 -> 16) back to full resolution, LReLU, 1x1 conv to 3 channels.

    Default PyTorch initialisation, BN weight 1 / bias 0. The three stride-2 levels need sizes that are multiples
    of 8: sizes that are multiples of 4 only (e.g. 100) are replication-padded by 4 pixels at the bottom/right and
    the output is cropped back, so any multiple of 4 works.

    Args:
        in_channels: input channels (1 for an X-ray).
        channels: widths of the three levels (``(16, 32, 64)`` in the paper).
    """

    size_multiple: int = 4

    def __init__(self, in_channels: int = 1, channels: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"ColorUNet needs 3 level widths, got {channels}.")
        self.in_channels = in_channels
        c1, c2, c3 = (int(c) for c in channels)
        self.down1 = self._down(in_channels, c1)
        self.down2 = self._down(c1, c2)
        self.down3 = self._down(c2, c3)
        self.up1 = self._up(c3, c2)
        self.up2 = self._up(2 * c2, c1)
        self.out = nn.Sequential(
            Convolution(
                2,
                2 * c1,
                c1,
                strides=2,
                kernel_size=4,
                padding=1,
                output_padding=0,
                is_transposed=True,
                adn_ordering="A",
                act=_LRELU,
                norm=None,
            ),
            nn.Conv2d(c1, 3, kernel_size=1),
        )

    # The BN after the activation is a separate module, not a MONAI ADN with ordering "AN": TorchScript gives
    # nn.Sequential subclasses with the same child names and types one compiled type whatever their order, so an
    # "AN" ADN here and the "NA" ADNs of DeconvColor would run in the same (wrong) order in one process.
    @staticmethod
    def _down(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            Convolution(2, c_in, c_out, kernel_size=3, adn_ordering="A", act=_LRELU, norm=None),
            Convolution(2, c_out, c_out, strides=2, kernel_size=4, padding=1, adn_ordering="A", act=_LRELU, norm=None),
            nn.BatchNorm2d(c_out),
        )

    @staticmethod
    def _up(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            Convolution(
                2,
                c_in,
                c_out,
                strides=2,
                kernel_size=4,
                padding=1,
                output_padding=0,
                is_transposed=True,
                adn_ordering="A",
                act=_LRELU,
                norm=None,
            ),
            Convolution(2, c_out, c_out, kernel_size=3, adn_ordering="A", act=_LRELU, norm=None),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, 3, H, W)``."""
        _check_size(x, 4, "ColorUNet")
        h, w = x.shape[2], x.shape[3]
        pad_h, pad_w = (8 - h % 8) % 8, (8 - w % 8) % 8
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [0, pad_w, 0, pad_h], mode="replicate")
        x1 = self.down1(x)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        y = torch.cat([self.up1(x3), x2], dim=1)
        y = torch.cat([self.up2(y), x1], dim=1)
        y = self.out(y)
        if pad_h > 0 or pad_w > 0:
            y = y[:, :, :h, :w]
        return y


class GrayToRGB(nn.Module):
    """Baseline without parameters: the gray channel replicated to 3 channels (any ``H, W``).

    Args:
        in_channels: must be 1.
    """

    size_multiple: int = 1

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        if in_channels != 1:
            raise ValueError(f"GrayToRGB replicates a single channel, got in_channels={in_channels}.")
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W) -> (B, 3, H, W)``, a copy (not a view), in the memory format of ``x``."""
        return torch.cat([x, x, x], dim=1)


class Conv1x1Color(nn.Module):
    """Baseline: a learned 1x1 convolution ``in_channels -> 3`` with bias (any ``H, W``).

    Initialised to replicate: weight 1 for ``in_channels == 1`` (``1 / in_channels``, the channel mean, otherwise)
    and bias 0, so at initialisation it equals :class:`GrayToRGB`.

    Args:
        in_channels: input channels (1 for an X-ray).
    """

    size_multiple: int = 1

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv = nn.Conv2d(in_channels, 3, kernel_size=1, bias=True)
        nn.init.constant_(self.conv.weight, 1.0 / in_channels)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, 3, H, W)``."""
        return self.conv(x)


#: name -> class of every color module (``color_module(name)`` builds one).
COLOR_MODULES: dict[str, type[nn.Module]] = {
    "deconv": DeconvColor,
    "pixelshuffle": PixelShuffleColor,
    "coloru": ColorUNet,
    "gray": GrayToRGB,
    "conv1x1": Conv1x1Color,
}


def color_module(name: str, in_channels: int = 1, **kwargs) -> nn.Module:
    """Build a color module by name (case-insensitive; ``-`` and ``_`` are ignored: ``"pixel_shuffle"`` works).

    Args:
        name: one of :data:`COLOR_MODULES`: ``"deconv"``, ``"pixelshuffle"``, ``"coloru"``, ``"gray"``, ``"conv1x1"``.
        in_channels: input channels (1 for an X-ray).
        kwargs: further arguments of the class (e.g. ``channels``, ``num_blocks``).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in COLOR_MODULES:
        raise ValueError(f"unknown color module {name!r}, expected one of {sorted(COLOR_MODULES)}.")
    return COLOR_MODULES[key](in_channels=in_channels, **kwargs)
