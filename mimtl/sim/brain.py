"""Brain tumour grading demo data: BraTS-like multi-sequence MRI built from the MNI152 template.

Every case is a distinct synthetic "patient": the MNI152 2009 grey/white-matter maps (fetched
from the nilearn wheel by :func:`mimtl.sim.sources.fetch`) are warped by a small random affine
and a smooth elastic deformation, four BraTS sequences (FLAIR, T1, T1ce, T2) are synthesised
from the warped tissue maps, and a simulated glioma of one of two grades is grown into them:

* **HGG** (high grade): large, lobulated; necrotic core (dark T1, bright T2), an irregular
  enhancing rim on T1ce, wide peritumoral oedema following the white matter (bright T2/FLAIR)
  and a strong mass effect that pushes the surrounding anatomy away.
* **LGG** (low grade): smaller, diffuse boundary, T2/FLAIR hyperintense and T1 hypointense,
  no enhancement, no necrosis, little oedema and little mass effect.

Real grades overlap, and so do these, so that grading is a problem worth augmenting:

* a share of HGG (``nonenhancing_hgg``, default 20 %) do not enhance and have no necrosis: a
  non-enhancing core (label 1) with the LGG signal; such high-grade gliomas are well documented
  (roughly a tenth to a third of non-enhancing gliomas prove high grade on histology);
* a share of LGG (``enhancing_lgg``, default 25 %) show patchy enhancement (label 4 in parts of the
  solid tumour, weaker than an HGG rim); reported in about 15-60 % of low-grade gliomas;
* sizes, oedema reach and mass effect are drawn from overlapping ranges (HGG radius 11-22 mm,
  LGG 8-18 mm; oedema 1.3-2.2 vs 1.1-1.8 tumour radii; mass effect 0.3-0.65 vs 0.1-0.45);
* per case (scanner and protocol), the tumour's contrast against the background varies (x0.7-1.15)
  and so does the strength of enhancement (contrast dose and timing, x0.6-1.1).

The phenotype of each case is written in the datalist (``"phenotype"``: ``typical``,
``non-enhancing`` or ``patchy-enhancement``); exactly ``round(n_HGG * nonenhancing_hgg)`` HGG and
``round(n_LGG * enhancing_lgg)`` LGG are atypical.

Each sequence then gets its own bias field (coil inhomogeneity), gain and Rician noise, and is
masked to the brain, as BraTS images are skull-stripped. The files are written in the BraTS 2020
layout (``MICCAI_BraTS2020_TrainingData/BraTS20_Training_XXX/BraTS20_Training_XXX_{flair,t1,
t1ce,t2,seg}.nii.gz`` plus ``name_mapping.csv``, whose ``Grade`` column holds the class), with
an axial 2D slice per case under ``slices/``, a MONAI datalist and a contact sheet. See
docs/demo_data.md ("Brain MRI") for the design choices.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from mimtl.sim.sheet import contact_sheet
from mimtl.sim.sources import fetch

__all__ = [
    "BRAIN_LABELS",
    "BRATS2020_HGG_FRACTION",
    "BRATS_ROOT",
    "ENHANCING_LGG_FRACTION",
    "MODALITIES",
    "NAME_MAPPING_HEADER",
    "NONENHANCING_HGG_FRACTION",
    "build_brain_tumours",
]

#: Sequence order of every ``"image"`` list in the datalist (the BraTS file suffixes).
MODALITIES = ("flair", "t1", "t1ce", "t2")
#: BraTS segmentation labels (label 3 is unused since BraTS 2017).
BRAIN_LABELS = {
    0: "background",
    1: "necrotic / non-enhancing tumour core",
    2: "peritumoral oedema",
    4: "GD-enhancing tumour",
}
#: Share of HGG cases in the BraTS 2020 training set: 293 HGG and 76 LGG of 369 cases.
BRATS2020_HGG_FRACTION = 293 / 369
#: Default share of HGG without enhancement and of LGG with patchy enhancement (see the module doc).
NONENHANCING_HGG_FRACTION = 0.2
ENHANCING_LGG_FRACTION = 0.25
PHENOTYPES = ("typical", "non-enhancing", "patchy-enhancement")
#: Top folder of the cases, as in the BraTS 2020 download.
BRATS_ROOT = "MICCAI_BraTS2020_TrainingData"
#: Header of BraTS 2020 ``name_mapping.csv``; the Grade column is the classification target.
NAME_MAPPING_HEADER = (
    "Grade",
    "BraTS_2017_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2019_subject_ID",
    "BraTS_2020_subject_ID",
)

DEFAULT_N = 60
DEFAULT_SHAPE = (96, 112, 96)
DEFAULT_SPACING = 2.0

# Relative signal of each tissue (rows) in each sequence (columns: flair, t1, t1ce, t2); white
# matter on T1 = 1. Orderings follow clinical MRI: T1 WM > GM > CSF, T2 CSF > GM > WM, FLAIR as
# T2 but with CSF nulled; gadolinium shortens T1 only where the blood-brain barrier is broken.
_SIGNAL = {
    "csf": (0.12, 0.28, 0.30, 1.00),
    "gm": (0.78, 0.68, 0.70, 0.62),
    "wm": (0.58, 1.00, 1.00, 0.42),
    "oedema": (1.30, 0.62, 0.64, 0.95),  # vasogenic: more free water, FLAIR/T2 bright
    "necrosis": (0.55, 0.30, 0.33, 1.05),  # fluid-like core: dark T1, bright T2, FLAIR partly nulled
    "enhancing": (0.95, 0.62, 1.65, 0.78),  # leaky vessels of the active rim light up on T1ce
    "lgg": (1.15, 0.52, 0.54, 1.00),  # infiltrative non-enhancing tumour
}


@dataclass(frozen=True)
class _Template:
    """The MNI152 tissue maps, average-pooled to about the output spacing."""

    maps: torch.Tensor  # (1, 4, X, Y, Z): grey matter, white matter, brain, tumour-centre candidates
    world_to_voxel: np.ndarray  # 4x4, template world (mm) -> pooled voxel
    centre: np.ndarray  # world centre (mm) of the brain's bounding box


@dataclass(frozen=True)
class _Case:
    """One synthesised case: four sequences (float), the BraTS label map and the tumour's axial slice."""

    images: dict[str, np.ndarray]
    seg: np.ndarray
    slice_z: int


@lru_cache(maxsize=4)
def _template(pool: int) -> _Template:
    """Load the template once per process; pooling by ``pool`` voxels anti-aliases the resampling."""
    t1_img = nib.load(fetch("mni_t1"))
    t1 = np.asarray(t1_img.dataobj)
    gm = np.asarray(nib.load(fetch("mni_gm")).dataobj, dtype=np.float32) / 255
    wm = np.asarray(nib.load(fetch("mni_wm")).dataobj, dtype=np.float32) / 255
    brain = (t1 > 0).astype(np.float32)  # the template is skull-stripped: its support is the brain mask
    maps = torch.from_numpy(np.stack([gm, wm, brain]))[None]
    if pool > 1:
        maps = F.avg_pool3d(maps, pool, pool)
    # A pooled voxel v covers template voxels pool*v .. pool*v+pool-1: its centre is pool*v+(pool-1)/2.
    voxel_to_world = t1_img.affine @ np.array(
        [[pool, 0, 0, (pool - 1) / 2], [0, pool, 0, (pool - 1) / 2], [0, 0, pool, (pool - 1) / 2], [0, 0, 0, 1]]
    )
    gm_p, wm_p, brain_p = maps[0].numpy()
    spacing = float(np.abs(voxel_to_world[0, 0]))
    # Tumour centres: deep (>= 15 mm from the brain surface) white matter of the cerebral
    # hemispheres, where adult gliomas mostly are (frontal and temporal lobes first): above MNI
    # z = 0, or the temporal lobes (lateral, in front of y = -35 mm); never the posterior fossa
    # (cerebellum, brainstem) nor the midline.
    depth = ndimage.distance_transform_edt(brain_p > 0.5, sampling=spacing)
    x, y, z = _voxel_world(voxel_to_world, brain_p.shape)
    lobes = (z > 0) | ((z > -30) & (y > -35) & (np.abs(x) > 25))
    candidates = (wm_p > 0.5) & (depth >= 15) & lobes & (np.abs(x) > 10)
    maps = torch.cat([maps, torch.from_numpy(candidates.astype(np.float32))[None, None]], 1)
    nz = np.nonzero(t1)
    lo = t1_img.affine[:3, :3] @ np.array([i.min() for i in nz]) + t1_img.affine[:3, 3]
    hi = t1_img.affine[:3, :3] @ np.array([i.max() for i in nz]) + t1_img.affine[:3, 3]
    return _Template(maps.contiguous(), np.linalg.inv(voxel_to_world), (lo + hi) / 2)


def _voxel_world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates (3, *shape) of every voxel centre of a grid."""
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    a = affine.astype(np.float32)
    return np.einsum("ij,j...->i...", a[:3, :3], idx) + a[:3, 3, None, None, None]


def _output_affine(shape: tuple[int, int, int], spacing: float, centre: np.ndarray) -> np.ndarray:
    """RAS affine of the output grid, centred on the brain."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = centre - spacing * (np.asarray(shape) - 1) / 2
    return affine


def _smooth_noise(rng: np.random.Generator, channels: int, ctrl: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Smooth random fields (``channels``, *shape), unit-ish std, with ``ctrl`` control points per axis.

    Cubic B-spline interpolation of the control points to a quarter of the grid, then trilinear to
    the full grid: as smooth to the eye as a full cubic zoom at a fraction of its cost.
    """
    coarse = rng.standard_normal((channels, *ctrl)).astype(np.float32)
    mid = [max(c, -(-s // 4)) for c, s in zip(ctrl, shape)]
    # One channel at a time: a 4D zoom would also interpolate (with 4x the taps) across channels.
    fine = np.stack([ndimage.zoom(c, [m / n for m, n in zip(mid, ctrl)], order=3, mode="nearest") for c in coarse])
    return F.interpolate(torch.from_numpy(fine)[None], size=shape, mode="trilinear", align_corners=True)[0].numpy()


def _sample(template: _Template, points: np.ndarray, channels: slice) -> np.ndarray:
    """Trilinear values of template ``channels`` at world ``points`` (3, X, Y, Z); zero outside."""
    w2v = template.world_to_voxel.astype(np.float32)
    vox = np.einsum("ij,j...->i...", w2v[:3, :3], points) + w2v[:3, 3, None, None, None]
    size = np.asarray(template.maps.shape[2:], dtype=np.float32)
    norm = 2 * vox / (size - 1)[:, None, None, None] - 1
    # grid_sample wants (x, y, z) = (last, middle, first) input axis, channels last.
    grid = torch.from_numpy(np.ascontiguousarray(np.moveaxis(norm[::-1], 0, -1)))[None]
    out = F.grid_sample(template.maps[:, channels], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].numpy()


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix from angles (radians) about x, then y, then z."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    return (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    )


def _base_warp(rng: np.random.Generator, world: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Template coordinates of the output voxels: small affine jitter plus a smooth elastic field."""
    rot = _rotation(np.deg2rad(rng.normal(0, [3.0, 3.0, 5.0])))  # head tilt: most freedom in the axial plane
    # Head size varies ~5% between adults; a little anisotropy makes heads rounder or longer.
    scale = rng.uniform(0.94, 1.06) * rng.uniform(0.97, 1.03, 3)
    matrix = (rot @ np.diag(1 / scale)).astype(np.float32)  # output -> template: inverse scale
    shift = rng.normal(0, 3.0, 3).astype(np.float32)
    c = centre.astype(np.float32)[:, None, None, None]
    points = np.einsum("ij,j...->i...", matrix, world - c) + c + shift[:, None, None, None]
    # Low-frequency anatomy differences (ventricle size, gyral pattern shifts): ~3 mm, ~40 mm wavelength.
    return points + 3.0 * _smooth_noise(rng, 3, (5, 6, 5), world.shape[1:])


def _angular_noise(rng: np.random.Generator, direction: np.ndarray, ctrls: tuple[int, ...]) -> np.ndarray:
    """Smooth random functions of the direction from the tumour centre, for lobulated star-shaped outlines.

    One function per entry of ``ctrls`` (its control points per axis: more = more lobes), each a
    random field on [-1, 1]^3 read on the unit sphere; returns (len(ctrls), *direction.shape[1:]).
    """
    field = torch.from_numpy(np.concatenate([_smooth_noise(rng, 1, (c,) * 3, (16, 16, 16)) for c in ctrls]))[None]
    grid = torch.from_numpy(np.ascontiguousarray(np.moveaxis(direction[::-1], 0, -1)))[None]
    return F.grid_sample(field, grid, mode="bilinear", align_corners=True)[0].numpy()


def _soft(rho: np.ndarray, width: float) -> np.ndarray:
    """Membership that is 1 inside (rho < 1) and 0 outside, with a transition ``width`` wide."""
    return 1 / (1 + np.exp(np.clip((rho - 1) / width, -50, 50)))


def _mass_effect(points: np.ndarray, centre: np.ndarray, strength: float, sigma: float) -> np.ndarray:
    """Pull sampling points towards the tumour, which pushes the displayed tissue away from it.

    p' = p - a g(r) (p - c) with a Gaussian g <= 1 and a < 1 stays one-to-one (radial derivative
    1 - a g (1 - r^2/sigma^2) > 0), so the anatomy is compressed, never folded.
    """
    d = points - centre.astype(np.float32)[:, None, None, None]
    g = np.exp(-(d**2).sum(0) / (2 * sigma**2))
    return points - strength * g * d


@dataclass(frozen=True)
class _Tumour:
    """Geometry of one simulated glioma (lengths in mm)."""

    hgg: bool
    centre: np.ndarray  # world position of the centre
    radius: float  # of the solid tumour (enhancing rim for HGG)
    stretch: np.ndarray  # 3x3, volume-preserving: ellipsoidal rather than spherical tumours
    core_fraction: float  # necrosis radius / tumour radius (HGG)
    reach: float  # oedema radius / tumour radius
    mass_effect: float  # strength a < 1 of the displacement, see _mass_effect
    phenotype: str = "typical"  # one of PHENOTYPES
    contrast: float = 1.0  # per-case scale of the tumour's contrast against the background
    enhancement: float = 1.0  # per-case strength of T1ce enhancement (dose, timing)

    @property
    def enhancing_rim(self) -> bool:
        """A necrotic core inside an enhancing rim: the typical HGG."""
        return self.hgg and self.phenotype == "typical"


def _draw_tumour(rng: np.random.Generator, hgg: bool, centre: np.ndarray, phenotype: str = "typical") -> _Tumour:
    """Random size and shape; HGG tend to be larger, more oedematous and more space-occupying, with overlap."""
    rot = _rotation(rng.uniform(-np.pi, np.pi, 3))
    axes = np.exp(rng.normal(0, 0.15, 3))
    stretch = (rot @ np.diag(np.prod(axes) ** (1 / 3) / axes) @ rot.T).astype(np.float32)
    return _Tumour(
        hgg=hgg,
        centre=centre,
        radius=rng.uniform(11, 22) if hgg else rng.uniform(8, 18),  # HGG typically 3-5 cm across, LGG 2-3 cm
        stretch=stretch,
        core_fraction=rng.uniform(0.35, 0.75),  # from nearly solid enhancement to a thin rim
        reach=rng.uniform(1.3, 2.2) if hgg else rng.uniform(1.1, 1.8),
        mass_effect=rng.uniform(0.3, 0.65) if hgg else rng.uniform(0.1, 0.45),
        phenotype=phenotype,
        contrast=rng.uniform(0.7, 1.15),
        enhancement=rng.uniform(0.6, 1.1),
    )


def _pick_centre(rng: np.random.Generator, candidates: np.ndarray) -> tuple[int, ...]:
    """A random voxel of the warped candidate map (deep hemispheric white matter)."""
    flat = np.flatnonzero(candidates > 0.5)
    if flat.size == 0:  # only for grids that miss the cerebrum; fall back to the grid centre
        return tuple(int(s) // 2 for s in candidates.shape)
    return tuple(int(i) for i in np.unravel_index(flat[rng.integers(flat.size)], candidates.shape))


def _tumour_maps(
    rng: np.random.Generator, tumour: _Tumour, world: np.ndarray, gm: np.ndarray, wm: np.ndarray, brain: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft memberships (0..1) of the solid tumour, its necrotic core and the oedema."""
    d = np.einsum("ij,j...->i...", tumour.stretch, world - tumour.centre[:, None, None, None])
    r = np.sqrt((d**2).sum(0)) + 1e-6
    # Outlines: HGG lobulated (7 control points, 22%), LGG smoother (5, 15%); necrosis and oedema
    # have outlines of their own.
    outline, core_outline, oedema_outline = _angular_noise(rng, d / r, (7 if tumour.hgg else 5, 6, 5))
    rho = r / (tumour.radius * (1 + (0.22 if tumour.hgg else 0.15) * outline))
    # non-enhancing tumours (every LGG, some HGG) have diffuse margins (infiltration)
    solid = _soft(rho, 0.04 if tumour.enhancing_rim else 0.12) * brain
    necrosis = np.zeros_like(r)
    if tumour.enhancing_rim:
        necrosis = _soft(r / (tumour.radius * tumour.core_fraction * (1 + 0.25 * core_outline)), 0.05)
    # Vasogenic oedema spreads along white-matter tracts, much less into cortex, not into CSF.
    affinity = np.clip(1.3 * wm + 0.35 * gm, 0, 1)
    oedema = _soft(r / (tumour.radius * tumour.reach * (1 + 0.3 * oedema_outline)), 0.1) * affinity
    return solid, necrosis, oedema


def _patches(rng: np.random.Generator, solid: np.ndarray) -> np.ndarray:
    """Soft (0..1) blobs covering roughly a third of the solid tumour: the enhancing parts of a patchy LGG."""
    field = _smooth_noise(rng, 1, (10, 12, 10), solid.shape)[0]
    inside = solid > 0.5
    cut = np.percentile(field[inside], 65) if inside.any() else 0.0
    return np.clip((field - cut) * 4 + 0.5, 0, 1).astype(np.float32)


def _labels(
    tumour: _Tumour, solid: np.ndarray, necrosis: np.ndarray, oedema: np.ndarray, brain: np.ndarray, patches: np.ndarray
) -> np.ndarray:
    """BraTS label map: 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing (rim or patches)."""
    seg = np.zeros(solid.shape, np.uint8)
    inside = brain > 0.5
    seg[(oedema > 0.35) & inside] = 2
    core = (solid > 0.5) & inside
    seg[core] = 4 if tumour.enhancing_rim else 1
    seg[core & (necrosis > 0.5)] = 1
    seg[core & (patches > 0.5)] = 4
    return seg


def _sequences(
    rng: np.random.Generator,
    tumour: _Tumour,
    tissue: dict[str, np.ndarray],
    solid: np.ndarray,
    necrosis: np.ndarray,
    oedema: np.ndarray,
    patches: np.ndarray,
) -> dict[str, np.ndarray]:
    """Noise-free FLAIR, T1, T1ce and T2: tissue fractions times tissue signals, tumour composited on top."""
    heterogeneity = 1 + 0.1 * _smooth_noise(rng, 1, (12, 14, 12), solid.shape)[0]
    images = {}
    for m, name in enumerate(MODALITIES):
        # Scanner-to-scanner contrast differences: +-5% on every tissue's signal.
        sig = {k: v[m] * rng.normal(1, 0.05) for k, v in _SIGNAL.items()}
        x = sum(tissue[k] * sig[k] for k in ("gm", "wm", "csf"))
        background = x
        x = x + 0.8 * oedema * (sig["oedema"] - x)  # oedema keeps a trace of the underlying anatomy
        # enhancement (T1ce only) varies with contrast dose and timing
        enhancing = (
            sig["enhancing"] if name != "t1ce" else sig["lgg"] + tumour.enhancement * (sig["enhancing"] - sig["lgg"])
        )
        if tumour.enhancing_rim:
            core = (necrosis * sig["necrosis"] + (1 - necrosis) * enhancing) * heterogeneity
            x = x + solid * (core - x)
        else:
            tissue_signal = sig["lgg"] + 0.8 * patches * (enhancing - sig["lgg"])  # patches: 0 unless patchy
            x = x + 0.9 * solid * (tissue_signal * heterogeneity - x)
        images[name] = background + tumour.contrast * (x - background)  # protocol-dependent tumour contrast
    return images


def _simulate(
    rng: np.random.Generator,
    grade: str,
    template: _Template,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    phenotype: str = "typical",
) -> _Case:
    """Synthesise one patient with a tumour of ``grade`` and ``phenotype`` (see :data:`PHENOTYPES`)."""
    world = _voxel_world(affine, shape)
    points = _base_warp(rng, world, template.centre)
    # The tumour is placed first, in the warped white matter, so its mass effect can shape the tissue.
    brain, candidates = _sample(template, points, slice(2, 4))
    centre_vox = _pick_centre(rng, candidates)
    tumour = _draw_tumour(rng, grade == "HGG", world[(slice(None), *centre_vox)], phenotype)
    sigma = (1.4 if tumour.hgg else 1.2) * tumour.radius
    moved = _mass_effect(points, points[(slice(None), *centre_vox)], tumour.mass_effect, sigma)
    # Only grey and white matter move; the brain outline stays (the skull does not expand), so
    # tissue pushed against it is squeezed instead, like effaced sulci.
    gm, wm = _sample(template, moved, slice(0, 2)) * brain
    tissue = {"gm": gm, "wm": wm, "csf": np.clip(brain - gm - wm, 0, 1)}
    solid, necrosis, oedema = _tumour_maps(rng, tumour, world, gm, wm, brain)
    patches = _patches(rng, solid) if phenotype == "patchy-enhancement" else np.zeros_like(solid)
    images = _sequences(rng, tumour, tissue, solid, necrosis, oedema, patches)
    seg = _labels(tumour, solid, necrosis, oedema, brain, patches)
    return _Case(_acquire(rng, images, brain), seg, centre_vox[2])


def _acquire(rng: np.random.Generator, images: dict[str, np.ndarray], brain: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sequence bias field, gain and Rician noise, then skull-stripping as in BraTS."""
    shape = brain.shape
    bias = _smooth_noise(rng, len(images), (3, 3, 3), shape)  # smooth, +-10-20% across the head
    mask = brain > 0.5  # only brain voxels are kept, so only they need noise
    sigma = 0.025  # ~2.5% of white matter on T1: a typical clinical SNR
    out = {}
    for b, (name, x) in zip(bias, images.items()):
        x = x[mask] * np.exp(0.1 * b[mask])
        # Rician: the magnitude of a complex signal with Gaussian noise in both channels.
        noisy = np.hypot(
            x + sigma * rng.standard_normal(x.shape, np.float32), sigma * rng.standard_normal(x.shape, np.float32)
        )
        gain = 1000 * rng.uniform(0.75, 1.3)  # scanners store arbitrary, unstandardised units
        out[name] = np.zeros(shape, np.float32)
        out[name][mask] = noisy * gain
    return out


def _plan(n: int, hgg_fraction: float, seed: int) -> tuple[list[str], dict[str, list[int]]]:
    """Grades of cases 0..n-1 (exactly round(n * hgg_fraction) HGG, shuffled) and a 70/15/15 split per grade."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    n_hgg = int(round(n * hgg_fraction))
    grades = np.array(["HGG"] * n_hgg + ["LGG"] * (n - n_hgg))[rng.permutation(n)].tolist()
    split: dict[str, list[int]] = {"training": [], "validation": [], "test": []}
    for grade in ("HGG", "LGG"):
        ids = rng.permutation([i for i, g in enumerate(grades) if g == grade]).tolist()
        n_val = n_test = int(round(0.15 * len(ids)))
        split["validation"] += ids[:n_val]
        split["test"] += ids[n_val : n_val + n_test]
        split["training"] += ids[n_val + n_test :]
    return grades, {k: sorted(v) for k, v in split.items()}


def _phenotypes(grades: list[str], nonenhancing_hgg: float, enhancing_lgg: float, seed: int) -> list[str]:
    """Exactly round(n_HGG * nonenhancing_hgg) non-enhancing HGG and round(n_LGG * enhancing_lgg) patchy LGG."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    phenotypes = ["typical"] * len(grades)
    for grade, share, atypical in (
        ("HGG", nonenhancing_hgg, "non-enhancing"),
        ("LGG", enhancing_lgg, "patchy-enhancement"),
    ):
        ids = [i for i, g in enumerate(grades) if g == grade]
        for i in rng.permutation(ids)[: int(round(len(ids) * share))].tolist():
            phenotypes[i] = atypical
    return phenotypes


def _display(a: np.ndarray) -> np.ndarray:
    """Axial (x, y) slice of a RAS volume -> image rows = anterior..posterior, radiological left/right."""
    return np.ascontiguousarray(a.T[::-1, ::-1])


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)  # scanner space
    img.set_sform(affine, code=1)
    nib.save(img, path)  # nibabel gzips with mtime 0: the same data give the same bytes


def _write_case(case: _Case, name: str, affine: np.ndarray, root: Path) -> tuple[dict, dict, np.ndarray]:
    """Write the 3D files and the 2D slices of one case; returns its datalist items and display slices."""
    folder = root / BRATS_ROOT / name
    folder.mkdir(parents=True)
    paths = {}
    for key, array in [*case.images.items(), ("seg", case.seg)]:
        data = array if key == "seg" else np.clip(np.rint(array), 0, np.iinfo(np.int16).max).astype(np.int16)
        paths[key] = folder / f"{name}_{key}.nii.gz"
        _save_nifti(data, affine, paths[key])
        plane = _display(data[:, :, case.slice_z])
        # 16-bit PNGs keep the int16 values of the volume; the seg keeps the BraTS label values.
        png = Image.fromarray(plane.astype(np.uint8 if key == "seg" else np.uint16))
        png.save(root / "slices" / f"{name}_{key}.png")
    rel = lambda p: p.relative_to(root).as_posix()
    item3d = {"image": [rel(paths[m]) for m in MODALITIES], "label": rel(paths["seg"])}
    item2d = {
        "image": [f"slices/{name}_{m}.png" for m in MODALITIES],
        "label": f"slices/{name}_seg.png",
        "slice": case.slice_z,
    }
    return (
        item3d,
        item2d,
        np.stack(
            [_display(case.images[m][:, :, case.slice_z]) for m in ("t1ce", "flair")]
            + [_display(case.seg[:, :, case.slice_z])]
        ),
    )


def _name_mapping(names: list[str], grades: list[str]) -> str:
    """BraTS 2020 ``name_mapping.csv``: synthetic cases have no earlier-challenge or TCGA ids (NA)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(NAME_MAPPING_HEADER)
    writer.writerows([g, "NA", "NA", "NA", "NA", name] for name, g in zip(names, grades))
    return buf.getvalue()


def _check_target(out_dir: Path) -> None:
    """Refuse to replace a folder that is not an earlier build of this data set."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder.")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not ((out_dir / "datalist.json").is_file() and (out_dir / BRATS_ROOT).is_dir()):
            raise FileExistsError(f"{out_dir} exists and is not a brain demo data set; not replacing it.")


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished build into place; an earlier build there is replaced."""
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
        os.replace(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out_dir)


def build_brain_tumours(
    out_dir: Path,
    n: int = DEFAULT_N,
    seed: int = 0,
    progress: bool = True,
    *,
    hgg_fraction: float = BRATS2020_HGG_FRACTION,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: float = DEFAULT_SPACING,
    sheet_cases: int = 12,
    nonenhancing_hgg: float = NONENHANCING_HGG_FRACTION,
    enhancing_lgg: float = ENHANCING_LGG_FRACTION,
) -> Path:
    """Build the brain tumour grading demo data set into ``out_dir``; returns the datalist JSON path.

    Args:
        out_dir: target folder; built in a temporary sibling and renamed into place at the end, so
            an interrupted build leaves nothing half-written. An earlier build there is replaced;
            any other non-empty folder is refused.
        n: number of cases.
        seed: the same seed gives the same bytes; case ``i`` is drawn from ``(seed, i)``.
        progress: show a progress bar over the cases.
        hgg_fraction: share of HGG cases (exactly ``round(n * hgg_fraction)``); the default is
            the BraTS 2020 training ratio, 293 HGG : 76 LGG.
        shape: volume size in voxels (x, y, z); the default covers 192 x 224 x 192 mm.
        spacing: isotropic voxel size in mm (real BraTS: 240 x 240 x 155 at 1 mm).
        sheet_cases: cases shown in ``contact_sheet.png`` (two tiles each: T1ce, FLAIR + seg).
        nonenhancing_hgg: share of HGG drawn without enhancement or necrosis (0: every HGG enhances).
        enhancing_lgg: share of LGG drawn with patchy enhancement (0: no LGG enhances).

    Returns:
        ``out_dir/datalist.json`` with ``training``/``validation``/``test`` (3D, stratified 70/15/15
        by grade) and ``training_2d``/``validation_2d``/``test_2d`` (the axial slice through the
        tumour centre, PNG) lists; items are ``{"image": [flair, t1, t1ce, t2], "label": seg,
        "grade": "HGG" | "LGG", "grade_label": 1 | 0, "phenotype": ..., "name": ...}`` with paths
        relative to it.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    for key, value in (
        ("hgg_fraction", hgg_fraction),
        ("nonenhancing_hgg", nonenhancing_hgg),
        ("enhancing_lgg", enhancing_lgg),
    ):
        if not 0 <= value <= 1:
            raise ValueError(f"{key} must be in [0, 1], got {value}.")
    out_dir = Path(out_dir).expanduser().resolve()
    shape = tuple(int(s) for s in shape)
    _check_target(out_dir)
    template = _template(max(1, int(round(spacing))))
    affine = _output_affine(shape, float(spacing), template.centre)
    grades, split = _plan(n, hgg_fraction, seed)
    phenotypes = _phenotypes(grades, nonenhancing_hgg, enhancing_lgg, seed)
    names = [f"BraTS20_Training_{i + 1:0{max(3, len(str(n)))}d}" for i in range(n)]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        (tmp / "slices").mkdir()
        items3d, items2d, tiles = [], [], []
        for i in tqdm(range(n), desc="brain tumours", unit="case", disable=not progress):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, i)))
            case = _simulate(rng, grades[i], template, affine, shape, phenotypes[i])
            item3d, item2d, tile = _write_case(case, names[i], affine, tmp)
            extra = {
                "grade": grades[i],
                "grade_label": int(grades[i] == "HGG"),
                "phenotype": phenotypes[i],
                "name": names[i],
            }
            items3d.append(item3d | extra)
            items2d.append(item2d | extra)
            if i < sheet_cases:
                tiles.append(tile)
        (tmp / BRATS_ROOT / "name_mapping.csv").write_text(_name_mapping(names, grades), encoding="utf-8")
        datalist = {
            "name": "mimtl brain tumour demo (BraTS 2020 layout, synthetic)",
            "description": "MNI152-based synthetic gliomas; grade from name_mapping.csv (HGG=1, LGG=0).",
            "modality": dict(enumerate(m.upper() if m != "t1ce" else "T1ce" for m in MODALITIES)),
            "labels": BRAIN_LABELS,
            "spacing": [float(spacing)] * 3,
            "shape": list(shape),
            "seed": seed,
            **{part: [items3d[i] for i in ids] for part, ids in split.items()},
            **{f"{part}_2d": [items2d[i] for i in ids] for part, ids in split.items()},
        }
        (tmp / "datalist.json").write_text(json.dumps(datalist, indent=2) + "\n", encoding="utf-8")
        _write_sheet(tiles, names, grades, tmp / "contact_sheet.png")
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "datalist.json"


def _write_sheet(tiles: list[np.ndarray], names: list[str], grades: list[str], out: Path) -> None:
    """Per case: T1ce (shows enhancement) and FLAIR with the labels outlined (1 red, 2 blue, 4 green)."""
    images, captions, masks = [], [], []
    for i, (t1ce, flair, seg) in enumerate(tiles):
        short = names[i].rsplit("_", 1)[-1]
        images += [t1ce, flair]
        captions += [f"{short} {grades[i]} T1ce", f"{short} {grades[i]} FLAIR+seg"]
        masks += [None, seg.astype(np.int64)]
    contact_sheet(images, captions, masks, columns=6, tile=192, out=out)
