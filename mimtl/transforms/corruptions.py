"""Image corruptions for grayscale radiographs, at five calibrated severities (robustness tests).

The 17 corruptions of Chen et al. (arXiv 2108.03823), after Hendrycks & Dietterich's ImageNet-C,
rewritten for single-channel radiographs: noise (Gaussian, shot, impulse, speckle, Poisson),
pixel dropout, blur (Gaussian, glass, defocus, motion, zoom), fog, contrast, brightness,
saturation (over-exposure with clipping), JPEG and elastic deformation. The PyPI package
``imagecorruptions`` is not used: it fails on NumPy 2, is RGB-only and draws from the global RNG.

Value range
    Each corruption works on intensities in ``[0, 1]``. ``value_range=(lo, hi)`` says what the
    input's 0 and 1 are: the image is mapped to ``[0, 1]`` by ``(x - lo) / (hi - lo)``,
    corrupted, **clipped to [0, 1]** (a corrupted film stays a film: noise cannot leave the
    detector's range) and mapped back. The default is ``(0, 1)`` for floating-point images and
    the full range of the type for integer images (``0..255`` for uint8). A float image outside
    its range raises a ``ValueError``: scale it first (e.g. ``ScaleIntensityRange``) or pass
    ``value_range``. Type (NumPy / torch / MetaTensor and its meta), dtype and shape are kept;
    integer images are rounded. JPEG quantises to 8 bits as a real JPEG file does.

Size
    Spatial parameters (blur widths, displacements, elastic grid) are given in pixels of a 256 px
    film and scale with ``min(H, W) / 256``, so a severity means the same at any resolution.

Seeds
    Nothing draws from a global RNG. The generator of one call is
    ``numpy.random.default_rng(SeedSequence([seed, h(image_id), h(name), severity]))`` with
    ``h`` the first 8 bytes of BLAKE2b of the UTF-8 text, read little-endian
    (:func:`corruption_rng`). The image id is the ``image_id`` argument, else the file name
    (``basename`` of ``filename_or_obj``) of a MetaTensor, else a BLAKE2b hash of the pixels;
    the dictionary transform reads it from ``id_key`` when given. So one film always gets the
    same corruption, wherever its folder lives, and two films get different ones.

Masks
    ``glass_blur`` and ``elastic_transform`` move pixels: the dictionary transform moves the
    masks (``mask_keys``) with the image, by nearest-neighbour sampling. ``zoom_blur`` averages
    the film with centred zooms of itself; the film stays where it was (only smeared), so it
    counts as photometric, like all others, and masks are left untouched.

Severity ``0`` is the identity (the clean image), so a loop over ``range(6)`` includes the
clean pass. The parameters per severity (:data:`SEVERITY_PARAMS`) were calibrated on the demo
films so that mean SSIM falls with severity by about the same steps for every corruption:
``python benchmarks/corruption_calibration.py --write`` reports SSIM and PSNR per step in
``docs/corruptions.md``.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import GaussianSmooth, MapTransform, Resample, Transform, Zoom
from monai.transforms.utils import create_grid
from monai.utils import ImageMetaKey, TransformBackends, convert_data_type, convert_to_dst_type, ensure_tuple
from scipy import ndimage

__all__ = [
    "CORRUPTIONS",
    "GEOMETRIC_CORRUPTIONS",
    "REFERENCE_SIZE",
    "SEVERITIES",
    "SEVERITY_PARAMS",
    "Corrupt",
    "CorruptD",
    "CorruptDict",
    "Corruptd",
    "corruption_rng",
    "image_id_of",
]

#: The 17 corruptions, in the order of the paper's tables (names as in ImageNet-C where shared).
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "poisson_noise",
    "pixel_dropout",
    "gaussian_blur",
    "glass_blur",
    "defocus_blur",
    "motion_blur",
    "zoom_blur",
    "fog",
    "contrast",
    "brightness",
    "saturate",
    "jpeg_compression",
    "elastic_transform",
)
#: Corruptions that move pixels; masks are moved with the image.
GEOMETRIC_CORRUPTIONS: frozenset[str] = frozenset({"glass_blur", "elastic_transform"})
#: Valid severities; 0 is the clean image.
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: Film size (pixels, shorter side) at which the spatial parameters are given.
REFERENCE_SIZE = 256

#: One parameter per corruption and severity 1..5 (see each ``_name`` function for its meaning).
#: Fitted by ``benchmarks/corruption_calibration.py --fit`` to mean SSIM 0.9, 0.8, 0.7, 0.6, 0.5 on
#: demo validation films (2 significant digits), except where a comment says otherwise.
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.015, 0.023, 0.032, 0.042, 0.054),
    "shot_noise": (2100.0, 790.0, 380.0, 210.0, 120.0),
    "impulse_noise": (0.0039, 0.009, 0.015, 0.022, 0.03),
    "speckle_noise": (0.025, 0.043, 0.065, 0.094, 0.14),
    "poisson_noise": (4300.0, 1400.0, 630.0, 320.0, 170.0),
    "pixel_dropout": (0.0039, 0.0088, 0.015, 0.024, 0.036),
    # blurs keep a radiograph's large structures, so its SSIM falls slowly: the fitted widths
    # (severity 5 would need a Gaussian of sigma 31 px) are capped at 16 px, motion at 65 px,
    # zoom at 1.5x, where the anatomy is still there to segment; JPEG bottoms out at quality 2
    # (quality 1 gives the same quantisation tables)
    "gaussian_blur": (2.3, 4.5, 8.5, 12.0, 16.0),
    "glass_blur": (1.8, 4.2, 8.7, 12.0, 16.0),
    "defocus_blur": (4.1, 8.1, 12.0, 14.0, 16.0),
    "motion_blur": (9.5, 20.0, 38.0, 52.0, 65.0),
    "zoom_blur": (0.048, 0.09, 0.17, 0.34, 0.5),
    "fog": (0.25, 0.69, 1.3, 2.2, 4.2),
    "contrast": (0.78, 0.56, 0.38, 0.24, 0.11),
    "brightness": (0.073, 0.18, 0.29, 0.41, 0.57),
    "saturate": (1.3, 1.5, 1.8, 2.4, 3.5),
    "jpeg_compression": (19.0, 6.0, 4.0, 3.0, 2.0),
    "elastic_transform": (1.2, 2.6, 4.7, 7.8, 13.0),
}

_Array = np.ndarray  # (C, H, W) float64 in [0, 1]
_Warp = Callable[[_Array], _Array]  # moves a mask as the corruption moved the image (nearest)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def corruption_rng(image_id: Any, name: str, severity: int, seed: int = 0) -> np.random.Generator:
    """The generator for corruption ``name`` at ``severity`` of image ``image_id``.

    ``default_rng(SeedSequence([seed, h(str(image_id)), h(name), severity]))`` with ``h`` the
    first 8 bytes of BLAKE2b of the UTF-8 text, little-endian. Stable across runs, processes
    and platforms.
    """
    key = [int(seed), _hash64(f"{image_id}"), _hash64(name), int(severity)]
    return np.random.default_rng(np.random.SeedSequence(key))


def image_id_of(img: Any, image_id: Any = None) -> str:
    """The id that seeds an image's corruption: ``image_id``, else a MetaTensor's file name, else a pixel hash."""
    if image_id is not None:
        return f"{image_id}"
    if isinstance(img, MetaTensor):
        name = img.meta.get(ImageMetaKey.FILENAME_OR_OBJ)
        if isinstance(name, (list, tuple)):
            name = name[0] if name else None
        if name:
            return os.path.basename(f"{name}")
    array = np.ascontiguousarray(convert_data_type(img, np.ndarray)[0])
    return "pixels:" + hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest()


# ---------------------------------------------------------------------------------------------
# The corruptions: f(x, p, rng, scale) -> (corrupted x, warp or None); x is (C, H, W) in [0, 1].
# ---------------------------------------------------------------------------------------------
def _gaussian_noise(x: _Array, sigma: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """Additive white noise of standard deviation ``sigma``."""
    return x + rng.normal(0.0, sigma, x.shape), None


def _shot_noise(x: _Array, photons: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """Photon counting on the displayed intensity: ``Poisson(x * photons) / photons``."""
    return rng.poisson(x * photons) / photons, None


def _impulse_noise(x: _Array, amount: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """Salt and pepper: a fraction ``amount`` of pixels set to 0 or 1 (half each)."""
    u = rng.random(x.shape)
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[u > 1.0 - amount / 2] = 1.0
    return out, None


def _speckle_noise(x: _Array, sigma: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """Multiplicative noise: ``x + x * N(0, sigma)``."""
    return x + x * rng.normal(0.0, sigma, x.shape), None


#: Attenuation (in e-folds) that the brightest displayed value stands for, for ``poisson_noise``.
_POISSON_MU = 4.0


def _poisson_noise(x: _Array, photons: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """X-ray quantum noise: a radiograph shows attenuation ``mu = 4 x``; the detector counts
    ``Poisson(photons * exp(-mu))`` and the film shows ``-log(counts / photons) / 4``. Unlike
    ``shot_noise``, dense (bright) regions, which few photons cross, are the noisiest."""
    counts = rng.poisson(photons * np.exp(-_POISSON_MU * x))
    return -np.log(np.maximum(counts, 0.5) / photons) / _POISSON_MU, None


def _pixel_dropout(x: _Array, fraction: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """A fraction ``fraction`` of pixels set to 0 (dead detector elements)."""
    return np.where(rng.random(x.shape) < fraction, 0.0, x), None


def _smooth(x: _Array, sigma: float) -> _Array:
    if sigma <= 0:
        return x
    return GaussianSmooth(sigma=sigma)(torch.from_numpy(x.astype(np.float32))).numpy().astype(np.float64)


def _gaussian_blur(x: _Array, sigma: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """MONAI's ``GaussianSmooth`` with standard deviation ``sigma`` (px at 256)."""
    return _smooth(x, sigma * scale), None


def _glass_blur(x: _Array, delta: float, rng: np.random.Generator, scale: float) -> tuple[_Array, _Warp]:
    """Frosted glass: blur (sigma ``0.6 + 0.2 delta`` px), move each pixel to a random place up to
    ``delta`` px away (twice), blur again. The masks move with the same pixel shuffle."""
    _, h, w = x.shape
    d, sigma = delta * scale, (0.6 + 0.2 * delta) * scale
    iy, ix = np.mgrid[0:h, 0:w]
    for _ in range(2):
        dy = np.rint(rng.uniform(-d, d, (h, w))).astype(np.intp)
        dx = np.rint(rng.uniform(-d, d, (h, w))).astype(np.intp)
        ny, nx = np.clip(np.arange(h)[:, None] + dy, 0, h - 1), np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
        iy, ix = iy[ny, nx], ix[ny, nx]
    out = _smooth(_smooth(x, sigma)[:, iy, ix], sigma)
    return out, lambda m: m[:, iy, ix]


def _convolve(x: _Array, kernel: _Array) -> _Array:
    return np.stack([ndimage.convolve(c, kernel, mode="reflect") for c in x])


def _defocus_blur(x: _Array, radius: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """An out-of-focus lens: convolution with an anti-aliased disk of radius ``radius`` (px at 256)."""
    r = radius * scale
    k = int(np.ceil(r))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    disk = np.clip(r + 0.5 - np.hypot(yy, xx), 0.0, 1.0)
    return _convolve(x, disk / disk.sum()), None


def _motion_blur(x: _Array, length: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """Patient or tube motion: a line kernel ``length`` px long (at 256), at a random angle in
    [-45, 45] degrees."""
    half = length * scale / 2
    angle = np.deg2rad(rng.uniform(-45.0, 45.0))
    k = int(np.ceil(half))
    t = np.linspace(-half, half, max(3, int(np.ceil(8 * half)) + 1))
    kernel = np.zeros((2 * k + 1, 2 * k + 1))
    np.add.at(kernel, (np.rint(k - t * np.sin(angle)).astype(int), np.rint(k + t * np.cos(angle)).astype(int)), 1.0)
    return _convolve(x, kernel / kernel.sum()), None


def _zoom_blur(x: _Array, zoom: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """Zoom during exposure: the mean of the film and its centred zooms (MONAI ``Zoom``) by
    factors from 1 to ``1 + zoom`` in steps of ``max(0.02, zoom / 8)``."""
    t = torch.from_numpy(x.astype(np.float32))
    step = max(0.02, zoom / 8)
    factors = np.arange(1.0 + step, 1.0 + zoom + 1e-9, step)
    acc = x.copy()
    for f in factors:
        acc += Zoom(zoom=float(f), mode="bilinear", keep_size=True)(t).numpy()
    return acc / (len(factors) + 1), None


def _fog(x: _Array, strength: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """Scatter haze: smooth fractal noise (1/f^2 spectrum, in cycles per film) in [0, 1] added with
    weight ``strength``, then rescaled so the film's maximum stays: less contrast, uneven veil."""
    _, h, w = x.shape
    spectrum = np.fft.fft2(rng.standard_normal((h, w)))
    f = np.hypot(np.fft.fftfreq(h)[:, None] * h, np.fft.fftfreq(w)[None, :] * w)
    f[0, 0] = np.inf
    haze = np.real(np.fft.ifft2(spectrum / f**2))
    haze = (haze - haze.min()) / max(np.ptp(haze), 1e-12)
    top = x.max()
    return (x + strength * haze[None]) * top / (top + strength), None


def _contrast(x: _Array, factor: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """Intensities pulled towards the film's mean: ``(x - mean) * factor + mean``."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * factor + mean, None


def _brightness(x: _Array, shift: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """A brighter film: ``x + shift`` (clipped at 1)."""
    return x + shift, None


def _saturate(x: _Array, gain: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """Over-exposure of a grayscale film: ``x * gain``, clipped at 1, so bright structures burn
    out to white (the grayscale counterpart of ImageNet-C's colour saturation). Dark stays dark,
    unlike ``brightness``."""
    return x * gain, None


def _jpeg_compression(x: _Array, quality: float, rng: np.random.Generator, scale: float) -> tuple[_Array, None]:
    """Lossy JPEG at ``quality`` (PIL, 8-bit grayscale, 4:4:4): 8x8 block artefacts."""
    from PIL import Image

    out = np.empty_like(x)
    for i, c in enumerate(x):
        buffer = io.BytesIO()
        Image.fromarray(np.rint(np.clip(c, 0, 1) * 255).astype(np.uint8)).save(buffer, "JPEG", quality=int(quality))
        out[i] = np.asarray(Image.open(buffer), dtype=np.float64) / 255.0
    return out, None


#: Control-point spacing (px at 256) of ``elastic_transform``.
_ELASTIC_SPACING = 32.0


def _elastic_transform(x: _Array, magnitude: float, rng: np.random.Generator, scale: float) -> tuple[_Array, _Warp]:
    """Elastic deformation: control points every 32 px (at 256) displaced by ``N(0, magnitude)``
    px (at 256) in each direction, interpolated bicubically to every pixel, applied by MONAI's
    ``Resample`` (border padding), bilinear for the film and nearest for the masks.

    (MONAI's ``Rand2DElastic`` is not used: its grid is not the identity at magnitude 0, it moves
    the film by about half a pixel, which alone costs the demo films 0.1 SSIM.)
    """
    _, h, w = x.shape
    spacing = _ELASTIC_SPACING * scale
    lattice = (int(np.ceil(h / spacing)) + 1, int(np.ceil(w / spacing)) + 1)
    offsets = torch.from_numpy(rng.normal(0.0, magnitude * scale, (1, 2, *lattice)))
    displacement = torch.nn.functional.interpolate(offsets, size=(h, w), mode="bicubic", align_corners=True)[0]
    grid = create_grid((h, w), backend="torch")
    grid[:2] += displacement
    resample = Resample()

    def warp(a: _Array, mode: str = "nearest") -> _Array:
        out = resample(torch.from_numpy(np.ascontiguousarray(a)), grid, mode=mode, padding_mode="border")
        return np.asarray(convert_data_type(out, np.ndarray)[0], dtype=np.float64)

    return warp(x, "bilinear"), warp


_FUNCTIONS: dict[str, Callable[..., tuple[_Array, _Warp | None]]] = {
    name: globals()[f"_{name}"] for name in CORRUPTIONS
}


def _check(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise ValueError(f"name must be one of {', '.join(CORRUPTIONS)}; got {name!r}.")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= 5:
        raise ValueError(f"severity must be an integer from 0 (clean) to 5; got {severity!r}.")


def _range_of(img: NdarrayOrTensor, value_range: Sequence[float] | None) -> tuple[float, float]:
    if value_range is not None:
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with high > low; got {tuple(value_range)}.")
        return lo, hi
    dtype = img.dtype
    if isinstance(img, torch.Tensor):
        if dtype.is_floating_point:
            return 0.0, 1.0
        info = torch.iinfo(dtype)
        return float(info.min), float(info.max)
    if np.issubdtype(dtype, np.floating):
        return 0.0, 1.0
    info = np.iinfo(dtype)
    return float(info.min), float(info.max)


class Corrupt(Transform):
    """Corrupt a channel-first 2D radiograph with corruption ``name`` at ``severity`` (1-5; 0 = clean).

    See the module docstring for the value range, seeding and the calibrated parameters.

    Args:
        name: one of :data:`CORRUPTIONS`.
        severity: 0 (identity) to 5.
        seed: base seed, mixed with the image id, ``name`` and ``severity`` (:func:`corruption_rng`).
        value_range: ``(low, high)`` of the input's intensities; default ``(0, 1)`` for float
            images, the type's range for integers.
        parameter: use this corruption parameter instead of the calibrated
            ``SEVERITY_PARAMS[name][severity - 1]`` (for calibration and custom studies; the
            severity still seeds the generator).

    Example::

        noisy = Corrupt("gaussian_noise", 3)(film)            # film: (1, H, W) in [0, 1]
        noisy, warp = Corrupt("elastic_transform", 2).corrupt(film)
        moved_mask = warp(mask)                               # nearest, same displacement

    Raises:
        ValueError: an unknown name, a severity outside 0-5, a bad ``value_range``, an image that
            is not ``(C, H, W)`` or that lies outside its value range.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(
        self,
        name: str,
        severity: int,
        seed: int = 0,
        value_range: Sequence[float] | None = None,
        parameter: float | None = None,
    ) -> None:
        _check(name, severity)
        if parameter is not None and not np.isfinite(float(parameter)):
            raise ValueError(f"parameter must be a finite number or None; got {parameter!r}.")
        self._parameter = None if parameter is None else float(parameter)
        self.name = name
        self.severity = int(severity)
        self.seed = int(seed)
        self.value_range = None if value_range is None else tuple(float(v) for v in value_range)
        if self.value_range is not None:
            _range_of(np.zeros(1), self.value_range)  # validates

    @property
    def parameter(self) -> float | None:
        """The corruption's parameter at this severity (None for severity 0)."""
        if not self.severity:
            return None
        return self._parameter if self._parameter is not None else SEVERITY_PARAMS[self.name][self.severity - 1]

    def __call__(self, img: NdarrayOrTensor, image_id: Any = None) -> NdarrayOrTensor:
        """The corrupted image, of the type, dtype and shape of ``img``."""
        return self.corrupt(img, image_id)[0]

    def corrupt(self, img: NdarrayOrTensor, image_id: Any = None) -> tuple[NdarrayOrTensor, Callable[[Any], Any]]:
        """The corrupted image and a function that moves a mask the same way (identity for photometric ones).

        The returned function takes a ``(C, H, W)`` mask of the image's spatial size (any type),
        samples it nearest-neighbour and returns it with its type and dtype.
        """
        if img.ndim != 3:
            raise ValueError(f"img must be a channel-first 2D image (C, H, W); got shape {tuple(img.shape)}.")
        if self.severity == 0:
            return img, _identity
        lo, hi = _range_of(img, self.value_range)
        x = np.asarray(convert_data_type(img, np.ndarray)[0], dtype=np.float64)
        x = (x - lo) / (hi - lo)
        tolerance = 1e-3
        if x.size and (x.min() < -tolerance or x.max() > 1 + tolerance):
            raise ValueError(
                f"img has values in [{x.min() * (hi - lo) + lo:g}, {x.max() * (hi - lo) + lo:g}], outside "
                f"value_range ({lo:g}, {hi:g}); scale it to that range or pass value_range."
            )
        rng = corruption_rng(image_id_of(img, image_id), self.name, self.severity, self.seed)
        scale = min(x.shape[1:]) / REFERENCE_SIZE
        out, warp = _FUNCTIONS[self.name](np.clip(x, 0.0, 1.0), self.parameter, rng, scale)
        out = np.clip(out, 0.0, 1.0) * (hi - lo) + lo
        is_int = not (
            img.dtype.is_floating_point if isinstance(img, torch.Tensor) else np.issubdtype(img.dtype, np.floating)
        )
        if is_int:
            out = np.rint(out)
        result = convert_to_dst_type(out, img, dtype=img.dtype)[0]
        return result, _identity if warp is None else _mask_warp(warp, tuple(x.shape[1:]))


def _identity(mask: Any) -> Any:
    return mask


def _mask_warp(warp: _Warp, spatial: tuple[int, ...]) -> Callable[[Any], Any]:
    def apply(mask: Any) -> Any:
        if mask.ndim != 3 or tuple(mask.shape[1:]) != spatial:
            raise ValueError(
                f"mask must be (C, {spatial[0]}, {spatial[1]}) like its image; got shape {tuple(mask.shape)}."
            )
        m = np.asarray(convert_data_type(mask, np.ndarray)[0], dtype=np.float64)
        return convert_to_dst_type(np.rint(warp(m)) if _is_integer(mask) else warp(m), mask, dtype=mask.dtype)[0]

    return apply


def _is_integer(a: Any) -> bool:
    return not a.dtype.is_floating_point if isinstance(a, torch.Tensor) else not np.issubdtype(a.dtype, np.floating)


class Corruptd(MapTransform):
    """Dictionary twin of :class:`Corrupt`: corrupts ``keys``, moves ``mask_keys`` with them.

    Every image key gets the same corruption (same seed, so the same noise and displacement);
    masks are moved nearest-neighbour by geometric corruptions and left untouched otherwise.

    Args:
        keys: image keys.
        name, severity, seed, value_range: see :class:`Corrupt`.
        mask_keys: masks / label maps that follow the image (channel-first, same spatial size).
        id_key: key holding the image id that seeds the corruption (default: the first image's
            file name, see :func:`image_id_of`).
        allow_missing_keys: don't raise when a key is absent.
    """

    backend = Corrupt.backend

    def __init__(
        self,
        keys: KeysCollection,
        name: str,
        severity: int,
        mask_keys: KeysCollection = (),
        id_key: Hashable | None = None,
        seed: int = 0,
        value_range: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.corrupter = Corrupt(name, severity, seed=seed, value_range=value_range)
        self.mask_keys = ensure_tuple(mask_keys)
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        if self.id_key is not None and self.id_key not in d:
            raise KeyError(f"id_key {self.id_key!r} is not in the data (keys: {sorted(map(str, d))}).")
        image_id = image_id_of(d[keys[0]], d[self.id_key] if self.id_key is not None else None)
        warp = _identity
        for key in keys:
            d[key], warp = self.corrupter.corrupt(d[key], image_id)
        for key in self.mask_keys:
            if key in d:
                d[key] = warp(d[key])
            elif not self.allow_missing_keys:
                raise KeyError(f"mask key {key!r} is not in the data (keys: {sorted(map(str, d))}).")
        return d


CorruptD = CorruptDict = Corruptd
