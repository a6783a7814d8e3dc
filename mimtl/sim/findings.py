"""Air-space and interstitial findings, inserted in 3D into the chest CT before projection.

Beside :func:`mimtl.sim.drr.insert_nodule`, :func:`~mimtl.sim.drr.insert_effusion` and
:func:`~mimtl.sim.drr.enlarge_heart`, these simulate the remaining findings of the CheXpert
competition labels (the five of Morra et al.'s released models):

* :func:`insert_consolidation`: lobar or segmental air-space opacity (a wedge from the hilum,
  or the whole lobe) inside one lobe of the CT, with air bronchograms: a branching tree of
  airways that stays air inside the opacity;
* :func:`insert_atelectasis`: volume loss of one lobe: the lobe collapses towards its hilum
  into a dense airless wedge, the rest of the lung fills the space (the fissure moves), and a
  smooth displacement pulls the mediastinum, diaphragm and chest wall towards it;
* :func:`insert_edema`: bilateral perihilar haze fading towards the periphery ("bat wing"),
  upper-zone redistribution and septal (Kerley B) lines at the lateral lung bases.

Each takes a volume (never changed: a changed copy is returned), a generator that draws what is
not given, and returns ``(volume, description)``; the description is JSON-able.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mimtl.sim.drr import LUNG_LABELS, ChestVolume, _box, _carry_cache, _inner_point, _label_mask, _world_grid

__all__ = [
    "ATELECTASIS_LABEL",
    "CONSOLIDATION_LABEL",
    "LOBES",
    "hilum",
    "insert_atelectasis",
    "insert_consolidation",
    "insert_edema",
]

#: Label ids given to inserted findings (after drr's NODULE_LABEL 201 and EFFUSION_LABEL 202).
CONSOLIDATION_LABEL = 203
ATELECTASIS_LABEL = 204
#: Lobe label id -> (lung side, name).
LOBES = {
    10: ("left", "left upper"),
    11: ("left", "left lower"),
    12: ("right", "right upper"),
    13: ("right", "right middle"),
    14: ("right", "right lower"),
}
_ALL_LUNG = LUNG_LABELS["left"] + LUNG_LABELS["right"]


def hilum(volume: ChestVolume, side: str) -> np.ndarray:
    """World point of a lung's hilum: the mean of the most medial lung voxels (within 8 mm) in
    the slab 20 mm either side of the lung's centroid height."""
    if side not in LUNG_LABELS:
        raise ValueError(f"side must be 'left' or 'right', not {side!r}.")
    key = ("hilum", side)
    if key not in volume._voxel_cache:
        p = volume.voxels(LUNG_LABELS[side])
        zc = p[:, 2].mean()
        slab = p[np.abs(p[:, 2] - zc) <= 20]
        medial = -slab[:, 0] if side == "right" else slab[:, 0]  # +x is the patient's right
        volume._voxel_cache[key] = slab[medial >= medial.max() - 8].mean(0)
    return volume._voxel_cache[key]


def _pick_lobe(volume: ChestVolume, rng: np.random.Generator, weights: dict[int, float] | None = None) -> int:
    lobes = list(LOBES)
    counts = torch.bincount(volume.labels.flatten().long(), minlength=256).numpy()[lobes].astype(np.float64)
    p = counts * np.array([1.0 if weights is None else weights[k] for k in lobes])
    return int(lobes[rng.choice(len(lobes), p=p / p.sum())])


def _smooth(mask: torch.Tensor, sigma_vox: float = 0.8) -> torch.Tensor:
    """A soft (0..1) version of a boolean 3D mask: a small Gaussian blur."""
    from scipy import ndimage

    return torch.from_numpy(ndimage.gaussian_filter(mask.float().numpy(), sigma_vox, mode="nearest")).clamp(0, 1)


def _segments_distance(x, y, z, segments: Sequence[tuple[np.ndarray, np.ndarray, float]]) -> torch.Tensor:
    """For each voxel of the grid ``x, y, z`` (broadcastable world coordinates): max over the
    segments ``(a, b, radius)`` of (radius - distance to the segment), mm (> 0 inside a tube).

    Each segment is evaluated only over its own bounding box (voxels outside every box get -inf).
    """
    x, y, z = (c.float() for c in (x, y, z))
    best = torch.full(torch.broadcast_shapes(x.shape, y.shape, z.shape), float("-inf"))
    for a, b, radius in segments:
        lo, hi = np.minimum(a, b) - radius - 1, np.maximum(a, b) + radius + 1
        index = [
            torch.nonzero((c.flatten() >= lo[d]) & (c.flatten() <= hi[d])).flatten() for d, c in enumerate((x, y, z))
        ]
        if any(len(i) == 0 for i in index):
            continue
        sx, sy, sz = (slice(int(i.min()), int(i.max()) + 1) for i in index)
        px, py, pz = x[:, :, sx], y[:, sy, :], z[sz, :, :]
        ab = b - a
        t = (((px - a[0]) * ab[0] + (py - a[1]) * ab[1] + (pz - a[2]) * ab[2]) / float(ab @ ab)).clamp(0, 1)
        d = torch.sqrt((px - a[0] - t * ab[0]) ** 2 + (py - a[1] - t * ab[1]) ** 2 + (pz - a[2] - t * ab[2]) ** 2)
        best[sz, sy, sx] = torch.maximum(best[sz, sy, sx], radius - d)
    return best


def _bronchial_tree(
    start: np.ndarray, direction: np.ndarray, length: float, radius: float, rng: np.random.Generator, generations: int
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Segments ``(a, b, radius)`` of a dichotomous tree: each branch splits in two, 20-40° off
    its axis, 0.75x as long and 0.8x as wide."""
    segments, stack = [], [(start, direction / np.linalg.norm(direction), length, radius, 0)]
    while stack:
        a, d, length, r, g = stack.pop()
        b = a + d * length
        segments.append((a, b, r))
        if g + 1 >= generations:
            continue
        ortho = np.cross(d, rng.normal(size=3))
        ortho /= np.linalg.norm(ortho)
        for sign in (1, -1):
            angle = np.radians(rng.uniform(20, 40))
            child = np.cos(angle) * d + sign * np.sin(angle) * ortho
            stack.append((b, child / np.linalg.norm(child), 0.75 * length, 0.8 * r, g + 1))
    return segments


def insert_consolidation(
    volume: ChestVolume,
    rng: np.random.Generator,
    lobe: int | None = None,
    lobar: bool | None = None,
    hu: float | None = None,
    angle_deg: float | None = None,
    bronchograms: bool = True,
) -> tuple[ChestVolume, dict]:
    """Air-space opacity in one lobe, with air bronchograms.

    Args:
        volume: not changed; a changed copy is returned.
        rng: draws what is not given.
        lobe: label id of the lobe (:data:`LOBES`; default: by volume).
        lobar: the whole lobe (True) or a segment (False: a cone from the hilum, half-angle
            ``angle_deg``, default uniform 18-30°, around a random point of the lobe, from 30 %
            of the way out); default 35 % lobar.
        hu: density of the filled air spaces (default uniform -100..+30 HU).
        bronchograms: keep a branching airway tree (3 generations, from 3 mm radius) air inside
            the opacity.

    Returns:
        The new volume (opacity labelled :data:`CONSOLIDATION_LABEL`) and ``{"finding":
        "consolidation", "lobe", "lobar", "hu", "volume_ml", "center"}``.
    """
    lobe = _pick_lobe(volume, rng) if lobe is None else int(lobe)
    if lobe not in LOBES:
        raise ValueError(f"lobe must be one of {sorted(LOBES)}, not {lobe}.")
    lobar = bool(rng.random() < 0.35) if lobar is None else bool(lobar)
    density = float(rng.uniform(-100, 30)) if hu is None else float(hu)
    half_angle = float(rng.uniform(18, 30)) if angle_deg is None else float(angle_deg)
    h = hilum(volume, LOBES[lobe][0])
    target = volume.centroid(lobe) if lobar else _inner_point(volume, lobe, 8.0, rng)
    lo, hi = volume.bounds(lobe)
    box = _box(volume, lo - 4, hi + 4)
    x, y, z = _world_grid(volume, box)
    inside = _label_mask(volume.labels[box].contiguous(), lobe)
    region = inside
    axis = target - h
    if not lobar:
        reach = np.linalg.norm(axis)
        v = (x - h[0], y - h[1], z - h[2])
        dist = torch.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2).clamp_min(1e-6)
        cos = (v[0] * axis[0] + v[1] * axis[1] + v[2] * axis[2]) / (dist * reach)
        region = inside & (cos >= np.cos(np.radians(half_angle))) & (dist >= 0.3 * reach)
    occ = _smooth(region) * inside
    if bronchograms:
        tree = _bronchial_tree(h + 0.25 * axis, axis, 0.35 * np.linalg.norm(axis) + 10, 3.0, rng, 3)
        air = (_segments_distance(x, y, z, tree) / min(volume.spacing) + 0.5).clamp(0, 1).float()
        occ = occ * (1 - air)
    out = volume.clone()
    old = out.hu[box]
    out.hu[box] = old + occ * (torch.clamp(torch.full_like(old, density), min=old) - old)
    out.labels[box] = torch.where(region, torch.full_like(out.labels[box], CONSOLIDATION_LABEL), out.labels[box])
    _carry_cache(volume, out, (CONSOLIDATION_LABEL, *_ALL_LUNG), box)
    voxel_ml = float(np.prod(volume.spacing)) / 1000
    return out, {
        "finding": "consolidation",
        "lobe": lobe,
        "lobar": lobar,
        "hu": density,
        "volume_ml": float(region.sum()) * voxel_ml,
        "center": [float(v) for v in target],
    }


def _warp_towards(volume: ChestVolume, anchor: np.ndarray, shift_mm: float, width_mm: float) -> ChestVolume:
    """A copy of ``volume`` contracted towards ``anchor``: structures at distance ``width_mm``
    move ``shift_mm`` towards it, less nearer and further (a smooth Gaussian-weighted field)."""
    box = _box(volume, anchor - 3 * width_mm, anchor + 3 * width_mm)
    x, y, z = (c.float() for c in _world_grid(volume, box))
    dx, dy, dz = x - anchor[0], y - anchor[1], z - anchor[2]
    k = shift_mm * np.exp(0.5) / width_mm * torch.exp(-(dx**2 + dy**2 + dz**2) / (2 * width_mm**2))
    # output(p) = input(p + k (p - a)): content further out moves in, towards the anchor
    src = [w + k * d for w, d in ((x, dx), (y, dy), (z, dz))]
    a = volume.affine
    shape = volume.shape  # (Z, Y, X)
    grid = torch.stack(
        torch.broadcast_tensors(
            *[2 * ((s - a[r, 3]) / a[r, r]) / (n - 1) - 1 for r, (s, n) in enumerate(zip(src, shape[::-1]))]
        ),
        -1,
    ).float()[None]
    out = volume.clone()
    out.hu[box] = F.grid_sample(
        volume.hu[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )[0, 0]
    lab = F.grid_sample(
        volume.labels[None, None].float(), grid, mode="nearest", padding_mode="border", align_corners=True
    )
    out.labels[box] = lab[0, 0].round().to(volume.labels.dtype)
    return out


def insert_atelectasis(
    volume: ChestVolume,
    rng: np.random.Generator,
    lobe: int | None = None,
    collapse: float | None = None,
    shift_mm: float | None = None,
    hu: float | None = None,
) -> tuple[ChestVolume, dict]:
    """Lobar collapse: volume loss, opacity, and a shift of the fissure and mediastinum.

    The chest is first contracted towards the lobe (:func:`_warp_towards`, ``shift_mm`` at 70
    mm, default uniform 5-12 mm: mediastinum, hemidiaphragm, chest wall and fissures move
    towards it). Then the ``1 - collapse`` of the lobe nearest its hilum becomes a dense airless
    wedge (``hu``, default uniform -20..+40 HU); the rest of the lobe is taken over by the
    largest other lobe of the same lung (the fissure moves towards the hilum).

    Args:
        lobe: label id (:data:`LOBES`); default: lower lobes three times as likely as the others.
        collapse: the fraction of the lobe's volume lost (default uniform 0.45-0.75).

    Returns:
        The new volume (the collapsed lobe labelled :data:`ATELECTASIS_LABEL`) and
        ``{"finding": "atelectasis", "lobe", "collapse", "shift_mm", "hu", "volume_ml", "anchor"}``.
    """
    weights = {10: 1.0, 11: 2.0, 12: 1.0, 13: 1.0, 14: 2.0}
    lobe = _pick_lobe(volume, rng, weights) if lobe is None else int(lobe)
    if lobe not in LOBES:
        raise ValueError(f"lobe must be one of {sorted(LOBES)}, not {lobe}.")
    frac = float(rng.uniform(0.45, 0.75)) if collapse is None else float(collapse)
    if not 0 < frac < 1:
        raise ValueError(f"collapse must be in (0, 1), not {frac}.")
    shift = float(rng.uniform(5, 12)) if shift_mm is None else float(shift_mm)
    density = float(rng.uniform(-20, 40)) if hu is None else float(hu)
    side = LOBES[lobe][0]
    h = hilum(volume, side)
    anchor = 0.5 * (h + volume.centroid(lobe))
    out = _warp_towards(volume, anchor, shift, 70.0)
    kji = torch.nonzero(out.mask(lobe)).numpy()
    if len(kji) == 0:
        raise ValueError(f"Lobe {lobe} is not in the volume.")
    pts = out.voxel_to_world(kji[:, ::-1])
    dist = np.linalg.norm(pts - h, axis=1)
    keep = dist <= np.quantile(dist, 1 - frac)
    others = [k for k in LUNG_LABELS[side] if k != lobe]
    sizes = [int(out.mask(k).sum()) for k in others]
    neighbour = others[int(np.argmax(sizes))]
    dense = torch.zeros(out.shape, dtype=torch.bool)
    dense[tuple(torch.from_numpy(kji[keep]).T)] = True
    freed = torch.zeros(out.shape, dtype=torch.bool)
    freed[tuple(torch.from_numpy(kji[~keep]).T)] = True
    occ = _smooth(dense) * (dense | freed)
    out.hu = out.hu + occ * (torch.clamp(torch.full_like(out.hu, density), min=out.hu) - out.hu)
    out.labels[dense] = ATELECTASIS_LABEL
    out.labels[freed] = neighbour
    out._voxel_cache.clear()
    voxel_ml = float(np.prod(volume.spacing)) / 1000
    return out, {
        "finding": "atelectasis",
        "lobe": lobe,
        "collapse": frac,
        "shift_mm": shift,
        "hu": density,
        "volume_ml": float(keep.sum()) * voxel_ml,
        "anchor": [float(v) for v in anchor],
    }


def insert_edema(
    volume: ChestVolume,
    rng: np.random.Generator,
    severity: float | None = None,
    septal_lines: int | None = None,
) -> tuple[ChestVolume, dict]:
    """Pulmonary oedema in both lungs: perihilar haze, upper-zone redistribution, septal lines.

    Lung voxels gain ``severity x 300 HU x exp(-r^2 / 2 (40 mm)^2)`` with ``r`` the distance to
    their lung's hilum (:func:`hilum`): dense round the hila, faint at the periphery; plus
    ``severity x 30 HU`` in the upper half of each lung (vessels redistributed upwards); never
    above -250 HU. ``septal_lines`` thin horizontal plates per lung (+300 HU, one slice thick,
    10-20 mm in from the lateral pleura, 30-50 mm front to back) in its lowest quarter.

    Args:
        severity: 0..1 (default uniform 0.5-1.0).
        septal_lines: per lung (default uniform 3-7).

    Returns:
        The new volume (labels unchanged) and ``{"finding": "edema", "severity", "septal_lines",
        "hila": [[x, y, z], [x, y, z]]}`` (right, left).
    """
    s = float(rng.uniform(0.5, 1.0)) if severity is None else float(severity)
    n_lines = int(rng.integers(3, 8)) if septal_lines is None else int(septal_lines)
    if not 0 <= s <= 1:
        raise ValueError(f"severity must be in [0, 1], not {s}.")
    if n_lines < 0:
        raise ValueError(f"septal_lines must be >= 0, not {n_lines}.")
    out = volume.clone()
    hila, boxes = [], []
    for side in ("right", "left"):
        h = hilum(volume, side)
        hila.append([float(v) for v in h])
        lo, hi = volume.bounds(LUNG_LABELS[side])
        box = _box(volume, lo - 2, hi + 2)
        boxes.append(box)
        x, y, z = _world_grid(volume, box)
        lung = _label_mask(volume.labels[box].contiguous(), LUNG_LABELS[side])
        r2 = (x - h[0]) ** 2 + (y - h[1]) ** 2 + (z - h[2]) ** 2
        upper = torch.sigmoid((z - 0.5 * (lo[2] + hi[2])) / 15.0)
        delta = s * (300.0 * torch.exp(-r2 / (2 * 40.0**2)) + 30.0 * upper)
        # septal lines near the base, at the lateral edge (+x is the patient's right)
        sign = 1.0 if side == "right" else -1.0
        p = volume.voxels(LUNG_LABELS[side])
        base = p[p[:, 2] <= lo[2] + 0.25 * (hi[2] - lo[2])]
        for _ in range(n_lines):
            zl = float(rng.choice(np.unique(base[:, 2])))
            row = base[np.abs(base[:, 2] - zl) < 0.5 * volume.spacing[2]]
            edge = float((sign * row[:, 0]).max())
            yc, depth, half_y = float(rng.choice(row[:, 1])), float(rng.uniform(10, 20)), float(rng.uniform(15, 25))
            plate = (
                (torch.abs(z - zl) < 0.5 * volume.spacing[2])
                & (sign * x >= edge - depth)
                & (torch.abs(y - yc) <= half_y)
            )
            delta = delta + 300.0 * plate
        old = out.hu[box]
        new = torch.minimum(old + delta, torch.maximum(old, torch.full_like(old, -250.0)))
        out.hu[box] = torch.where(lung, new.float(), old)
    union = tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes)) for d in range(3))
    _carry_cache(volume, out, (), union)  # labels unchanged: keep the structure queries
    return out, {"finding": "edema", "severity": s, "septal_lines": n_lines, "hila": hila}
