"""Simulated chest radiographs (digitally reconstructed radiographs, DRRs) from a real chest CT.

The CT and its label map (see :mod:`mimtl.sim.sources`) are loaded once, downsampled to about
2 mm voxels and kept in memory (:func:`load_chest_volume`). Every radiograph is the line
integral of the linear attenuation through that volume after a random 3D pose and a smooth
elastic deformation (:func:`project`), followed by the physics and processing of a digital
detector (:func:`expose`: exposure, scatter, quantum noise, blur, log transform, dynamic-range
compression, window, gamma, S-shaped display curve, edge enhancement). The same geometry projects the label map
(:func:`project_labels`: the path length of each ray through a structure, so a 2D mask is
"where the ray crosses at least so many mm of it") and 3D points (:func:`project_points`), so
images, masks and landmarks agree exactly. Findings are inserted in 3D before projection
(:func:`insert_nodule`, :func:`insert_effusion`, :func:`enlarge_heart`).

Coordinate conventions
----------------------
* **World** coordinates are RAS+ millimetres, as in NIfTI: +x towards the patient's Right,
  +y Anterior, +z Superior. :class:`ChestVolume` stores its arrays in torch order
  ``[k, j, i]`` = ``[z, y, x]`` (shape ``(Z, Y, X)``) and ``affine`` maps ``(i, j, k, 1)`` to
  world, so ``world = affine @ (i, j, k, 1)``.
* **Beam**: along the anterior-posterior axis (world y). ``view="PA"``: the source is behind the
  patient and the beam travels towards +y; ``view="AP"``: the source is in front. With the
  default parallel beam both give the same picture; with ``beam="cone"`` they differ in
  magnification (the heart is magnified more on an AP film), as on real films.
* **Pose** (:class:`Pose`) maps the patient (world point ``p``) to the posed patient ``q`` that
  the beam sees: ``q = c + t + s R (p - c)`` up to the elastic field, with ``c`` the geometry's
  isocentre. Images are sampled with the inverse map ``p = M(q) = c + R^T (q - c - t) / s + D(q)``
  whose displacement ``D`` is a smooth (low-frequency cosine) random field; points are mapped
  forwards by solving ``M(q) = p`` (fixed-point iteration to < 1e-6 mm), so they are exactly
  consistent with the image.
* **Image**: display orientation of a chest film, MONOCHROME2 (bright = dense): rows ``y`` go from
  head (row 0) to feet, columns ``x`` from the patient's right (column 0) to the patient's
  left. Pixel ``(x, y)`` (column, row, 0-based, pixel centres) lies at detector offset
  ``((x - (W-1)/2) * spacing, (y - (H-1)/2) * spacing)`` mm from the detector centre, which is
  on the central ray through the isocentre. ``spacing`` is the pixel spacing at the detector
  (DICOM ImagerPixelSpacing); for a parallel beam it equals the spacing in the patient, for a
  cone beam the patient is magnified by :attr:`Geometry.magnification` at the isocentre.

Everything is deterministic: randomness comes only from the ``numpy.random.Generator`` passed in,
and the torch operations used (``grid_sample`` forward, sums, a matmul) are deterministic on CPU.
The depth planes are sampled in a fixed number of batches, so ``grid_sample`` runs in parallel
yet the bytes do not depend on the number of torch threads (checked: 1 and 2 threads agree).
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BONE_LABELS",
    "CARDIOVASCULAR_LABELS",
    "EFFUSION_LABEL",
    "LUNG_LABELS",
    "MU_WATER",
    "NODULE_LABEL",
    "ChestVolume",
    "Exposure",
    "Geometry",
    "Pose",
    "Radiograph",
    "enlarge_heart",
    "expose",
    "hu_to_mu",
    "insert_effusion",
    "insert_nodule",
    "label_channels",
    "load_chest_volume",
    "project",
    "project_channels",
    "project_labels",
    "project_points",
    "random_exposure",
    "random_pose",
    "rotation_matrix",
    "simulate",
    "to_uint8",
]

#: Linear attenuation of water at diagnostic energies (about 60 keV effective), per mm.
MU_WATER = 0.02
#: TotalSegmentator-style label ids of the lung lobes (left upper/lower, right upper/middle/lower).
LUNG_LABELS = {"left": (10, 11), "right": (12, 13, 14)}
#: Heart, great vessels and veins: contrast-enhanced in the source CT, made plain (about +40 HU) on loading.
CARDIOVASCULAR_LABELS = tuple(range(51, 69))
#: Bones (vertebrae, humeri, scapulae, clavicles, femora, hips, skull, ribs, sternum, costal cartilage).
BONE_LABELS = tuple(range(25, 51)) + tuple(range(69, 79)) + (91,) + tuple(range(92, 117)) + (118,)
#: Label ids given to inserted findings (not in the source label table).
NODULE_LABEL = 201
EFFUSION_LABEL = 202

_HU_MIN, _HU_MAX = -1000.0, 3000.0
_EXTEND_MM = (40.0, 60.0)  # the volume is extended by this much below / above the scan
_CHUNKS = 4  # depth planes are sampled in this many batches (see _render_grid)


# ----------------------------------------------------------------------------------------------
# The volume
# ----------------------------------------------------------------------------------------------
@dataclass
class ChestVolume:
    """A CT in HU and its label map, on the same voxel grid, in memory.

    Treat an instance as read-only (structure queries are cached): change a :meth:`clone`.

    Attributes:
        hu: float32 tensor ``(Z, Y, X)`` of Hounsfield units (index ``[k, j, i]``).
        labels: uint8 tensor ``(Z, Y, X)`` of label ids (0 = unlabelled; see ``names``).
        affine: ``(4, 4)`` voxel ``(i, j, k)`` -> RAS+ world mm.
        names: structure name -> label id (``structures.csv``).
        body_bounds: ``(2, 3)`` world RAS bounding box ``[min, max]`` of the patient's body.
    """

    hu: torch.Tensor
    labels: torch.Tensor
    affine: np.ndarray
    names: dict[str, int]
    body_bounds: np.ndarray
    _voxel_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (x, y, z)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def clone(self) -> ChestVolume:
        """A copy whose ``hu`` and ``labels`` can be changed without touching this one."""
        return replace(self, hu=self.hu.clone(), labels=self.labels.clone(), names=dict(self.names), _voxel_cache={})

    def mu(self, bone_scale: float = 1.0) -> torch.Tensor:
        """:func:`hu_to_mu` of this volume (cached; a finding's copy updates only what it changed)."""
        key = ("mu", float(bone_scale))
        if key not in self._voxel_cache:
            self._voxel_cache[key] = hu_to_mu(self.hu, bone_scale=bone_scale)
        return self._voxel_cache[key]

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """``(N, 3)`` voxel indices ``(i, j, k)`` -> ``(N, 3)`` world RAS mm."""
        ijk = np.asarray(ijk, dtype=np.float64).reshape(-1, 3)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """``(N, 3)`` world RAS mm -> ``(N, 3)`` (fractional) voxel indices ``(i, j, k)``."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        inv = np.linalg.inv(self.affine)
        return xyz @ inv[:3, :3].T + inv[:3, 3]

    def mask(self, ids: int | Sequence[int]) -> torch.Tensor:
        """Boolean ``(Z, Y, X)`` mask of the voxels whose label is in ``ids``."""
        return _label_mask(self.labels, ids)

    def voxels(self, ids: int | Sequence[int]) -> np.ndarray:
        """World RAS coordinates ``(N, 3)`` of the voxel centres whose label is in ``ids`` (cached)."""
        key = (ids,) if isinstance(ids, int) else tuple(sorted(ids))
        if key not in self._voxel_cache:
            kji = torch.nonzero(self.mask(key)).numpy()
            self._voxel_cache[key] = self.voxel_to_world(kji[:, ::-1])
        return self._voxel_cache[key]

    def bounds(self, ids: int | Sequence[int]) -> np.ndarray:
        """World RAS bounding box ``[[min x, y, z], [max x, y, z]]`` of a structure's voxel centres (cached)."""
        key = ("bounds", (ids,) if isinstance(ids, int) else tuple(sorted(ids)))
        if key not in self._voxel_cache:
            pts = self.voxels(ids)
            if len(pts) == 0:
                raise ValueError(f"No voxel has label {ids}.")
            self._voxel_cache[key] = np.stack([pts.min(0), pts.max(0)])
        return self._voxel_cache[key]

    def centroid(self, ids: int | Sequence[int]) -> np.ndarray:
        """World RAS centroid of a structure (mm, cached)."""
        key = ("centroid", (ids,) if isinstance(ids, int) else tuple(sorted(ids)))
        if key not in self._voxel_cache:
            pts = self.voxels(ids)
            if len(pts) == 0:
                raise ValueError(f"No voxel has label {ids}.")
            self._voxel_cache[key] = pts.mean(0)
        return self._voxel_cache[key]

    @property
    def thorax_center(self) -> np.ndarray:
        """Centre of the lungs' bounding box (world RAS mm)."""
        return self.bounds(LUNG_LABELS["left"] + LUNG_LABELS["right"]).mean(0)

    @property
    def film_center(self) -> np.ndarray:
        """The default isocentre: :attr:`thorax_center`, 12 mm lower (world RAS mm).

        The demo CT ends 20 mm above the lung apices; centring a little low keeps the top of a
        320 mm film close to the top of the scan (beyond it the last slice is repeated).
        """
        return self.thorax_center - np.array([0.0, 0.0, 12.0])


def _carry_cache(src: ChestVolume, dst: ChestVolume, changed: Sequence[int], box: tuple[slice, ...] | None) -> None:
    """Copy ``src``'s cached queries to ``dst``, except those touching ``changed`` labels; cached
    attenuation is copied with the ``box`` (where ``dst.hu`` differs) recomputed."""
    changed_set = set(changed)
    for key, value in src._voxel_cache.items():
        if key[0] == "mu":
            mu = value.clone()
            if box is not None:
                mu[box] = hu_to_mu(dst.hu[box], bone_scale=key[1])
            dst._voxel_cache[key] = mu
            continue
        ids = key[1] if isinstance(key[0], str) else key
        ids = (ids,) if isinstance(ids, int) else ids
        if not changed_set.intersection(ids):
            dst._voxel_cache[key] = value


def _label_mask(labels: torch.Tensor, ids: int | Sequence[int]) -> torch.Tensor:
    """Boolean mask of ``labels`` (uint8) in ``ids``, by a lookup table."""
    lut = np.zeros(256, dtype=bool)
    lut[[ids] if isinstance(ids, int) else list(ids)] = True
    return torch.from_numpy(lut[labels.numpy()])


def _read_names(path: Path) -> dict[str, int]:
    with Path(path).open(newline="") as f:
        return {row["structure"]: int(row["id"]) for row in csv.DictReader(f)}


def _body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient's body: the largest connected component above -500 HU, holes filled per slice."""
    from scipy import ndimage

    comp, n = ndimage.label(hu > -500)
    if n == 0:
        return np.zeros_like(hu, dtype=bool)
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    body = comp == int(np.argmax(sizes))
    for k in range(body.shape[0]):  # axial slices: the lungs are holes inside each slice
        body[k] = ndimage.binary_fill_holes(body[k])
    return ndimage.binary_dilation(body, iterations=1)


@functools.lru_cache(maxsize=2)
def load_chest_volume(voxel_mm: float = 2.0) -> ChestVolume:
    """The demo chest CT and label map, downsampled to about ``voxel_mm``, cached in memory.

    Steps (once per process and ``voxel_mm``): fetch the sources (:func:`mimtl.sim.sources.fetch`),
    reorient to RAS, replace the iodine contrast of the heart and vessels by plain blood
    (about +40 HU, so the heart is not whiter than bone on a film), average blocks of voxels
    to about ``voxel_mm`` (labels: the block's centre voxel), and remove everything outside the
    body (CT table, mattress, blanket, cables) by setting it to air. The scan covers 20 mm above
    the lung apices and 50 mm below the lung bases; it is extended by 60 mm above and 40 mm
    below with its end slices, smoothed in-plane (5 mm), unlabelled. Returns a shared object:
    do not change it in place (the finding functions and :meth:`ChestVolume.clone` copy).
    """
    import nibabel as nib

    from mimtl.sim.sources import fetch

    ct = nib.as_closest_canonical(nib.load(str(fetch("chest_ct"))))
    lab_img = nib.as_closest_canonical(nib.load(str(fetch("chest_labels"))))
    names = _read_names(fetch("chest_structures"))
    hu = np.clip(np.asarray(ct.dataobj, dtype=np.float32), _HU_MIN, _HU_MAX)
    labels = np.asarray(lab_img.dataobj).astype(np.uint8)
    if hu.shape != labels.shape:
        raise ValueError(f"CT {hu.shape} and label map {labels.shape} differ in shape.")
    cardio = np.isin(labels, CARDIOVASCULAR_LABELS) & (hu > 40)
    hu[cardio] = 40 + 0.03 * (hu[cardio] - 40)
    spacing = np.linalg.norm(ct.affine[:3, :3], axis=0)
    factor = np.maximum(1, np.round(voxel_mm / spacing)).astype(int)
    n_blocks = np.array(hu.shape) // factor
    start = (np.array(hu.shape) - n_blocks * factor) // 2
    crop = tuple(slice(s, s + b * f) for s, b, f in zip(start, n_blocks, factor))
    # nibabel arrays are (i, j, k) = (x, y, z); torch order is (z, y, x)
    hu_t = torch.from_numpy(np.ascontiguousarray(hu[crop].transpose(2, 1, 0)))
    hu_t = F.avg_pool3d(hu_t[None, None], kernel_size=tuple(factor[::-1].tolist()))[0, 0]
    centre = tuple(slice(s + f // 2, s + b * f, f) for s, b, f in zip(start, n_blocks, factor))
    lab_t = torch.from_numpy(np.ascontiguousarray(labels[centre].transpose(2, 1, 0)))
    affine = ct.affine.astype(np.float64) @ np.diag([*factor, 1]).astype(np.float64)
    affine[:3, 3] = ct.affine[:3, :3] @ (start + (factor - 1) / 2) + ct.affine[:3, 3]
    body = _body_mask(hu_t.numpy())
    hu_t[torch.from_numpy(~body)] = _HU_MIN
    lab_t[torch.from_numpy(~body)] = 0
    # the body goes on above and below the scan: extend it by its end slices, smoothed in-plane
    # so that their fine detail does not turn into streaks (projections repeat the new end slices)
    dz = float(np.linalg.norm(affine[:3, 2]))
    n_top, n_bottom = round(_EXTEND_MM[1] / dz), round(_EXTEND_MM[0] / dz)
    sigma = 5.0 / np.linalg.norm(affine[:3, :2], axis=0)[::-1]  # 5 mm in (y, x) voxels
    from scipy import ndimage

    ends = [torch.from_numpy(ndimage.gaussian_filter(hu_t[k].numpy(), sigma, mode="nearest")) for k in (0, -1)]
    hu_t = torch.cat([ends[0].expand(n_bottom, -1, -1), hu_t, ends[1].expand(n_top, -1, -1)])
    lab_t = torch.cat(
        [
            torch.zeros((n_bottom, *lab_t.shape[1:]), dtype=lab_t.dtype),
            lab_t,
            torch.zeros((n_top, *lab_t.shape[1:]), dtype=lab_t.dtype),
        ]
    )
    body = np.concatenate([np.repeat(body[:1], n_bottom, 0), body, np.repeat(body[-1:], n_top, 0)])
    affine[:3, 3] -= n_bottom * affine[:3, 2]
    kji = np.argwhere(body)
    ijk_bounds = np.stack([kji.min(0), kji.max(0)])[:, ::-1].astype(np.float64)
    corners = ijk_bounds @ affine[:3, :3].T + affine[:3, 3]
    bounds = np.stack([corners.min(0), corners.max(0)])
    return ChestVolume(hu=hu_t.contiguous(), labels=lab_t.contiguous(), affine=affine, names=names, body_bounds=bounds)


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER, bone_scale: float = 1.0) -> torch.Tensor:
    """Linear attenuation (per mm) from Hounsfield units.

    ``mu = mu_water * (1 + HU / 1000)`` (air 0, water ``mu_water``) after clipping HU to
    [-1000, 3000]; above 0 HU the slope is multiplied by ``bone_scale`` (> 1 makes bone
    relatively denser, as at lower tube voltage).
    """
    hu = hu.clamp(_HU_MIN, _HU_MAX)
    if bone_scale != 1.0:
        hu = hu + (bone_scale - 1.0) * hu.clamp_min(0.0)
    return (hu + 1000.0) * (mu_water / 1000.0)


# ----------------------------------------------------------------------------------------------
# Geometry and pose
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """Where the source and detector are and how the detector is sampled.

    Args:
        size: image ``(rows, columns)``.
        spacing: detector pixel spacing in mm (square pixels).
        center: isocentre, world RAS mm; the central ray passes through it and the pose
            rotates about it. ``None``: the volume's :attr:`ChestVolume.film_center`.
        beam: ``"parallel"`` or ``"cone"`` (point source).
        view: ``"PA"`` (source behind the patient) or ``"AP"`` (source in front).
        source_to_detector: cone beam only, mm.
        isocenter_to_detector: cone beam only, mm (the detector is this far beyond the isocentre).
        depth_step: sampling step along the beam axis, mm.
        render_spacing: the line integrals are computed on a detector grid of about this spacing
            (mm, ``(rows, columns)`` or one number; never finer than ``spacing``) and resampled to
            ``spacing``. The default volume has 2.5 mm slices and 2.1 mm voxels in-plane, so
            ``(2.5, 2.0)`` saves time without losing detail. ``None``: compute at ``spacing``.
    """

    size: tuple[int, int] = (256, 256)
    spacing: float = 1.25
    center: tuple[float, float, float] | None = None
    beam: str = "parallel"
    view: str = "PA"
    source_to_detector: float = 1800.0
    isocenter_to_detector: float = 200.0
    depth_step: float = 3.0
    render_spacing: float | tuple[float, float] | None = (2.5, 2.0)

    def __post_init__(self) -> None:
        if self.beam not in ("parallel", "cone"):
            raise ValueError(f"beam must be 'parallel' or 'cone', not {self.beam!r}.")
        if self.view not in ("PA", "AP"):
            raise ValueError(f"view must be 'PA' or 'AP', not {self.view!r}.")
        if self.beam == "cone" and not 0 < self.isocenter_to_detector < self.source_to_detector:
            raise ValueError("Need 0 < isocenter_to_detector < source_to_detector.")

    @property
    def magnification(self) -> float:
        """Detector size of an object at the isocentre over its true size (1 for a parallel beam)."""
        if self.beam == "parallel":
            return 1.0
        return self.source_to_detector / (self.source_to_detector - self.isocenter_to_detector)

    @property
    def direction(self) -> float:
        """World-y direction of the beam: +1 (PA) or -1 (AP)."""
        return 1.0 if self.view == "PA" else -1.0

    def resolved(self, volume: ChestVolume) -> Geometry:
        """This geometry with ``center`` filled in from ``volume`` when it is ``None``."""
        if self.center is not None:
            return self
        return replace(self, center=tuple(float(v) for v in volume.film_center))


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """``Rz @ Ry @ Rx`` for rotations (degrees) about world x (R-L), y (A-P) and z (S-I)."""
    ax, ay, az = (math.radians(float(a)) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Pose:
    """Patient pose and shape for one radiograph.

    Args:
        rotation: degrees about world x (R-L axis: lordotic tilt), y (A-P axis: in-plane roll),
            z (S-I axis: patient turned, clavicles asymmetric), applied as ``Rz @ Ry @ Rx``.
        scale: isotropic size factor of the patient (> 1: larger patient, thicker too).
        shift: translation in mm (world RAS), after rotation and scale.
        elastic: ``(3, K, K, K)`` coefficients (mm) of the displacement field (in patient space,
            added to the sampling point) ``D_r(q) = sum_abc elastic[r, a, b, c] cos(pi a u)
            cos(pi b v) cos(pi c w)``, ``(u, v, w) = (q - isocentre) / elastic_extent + 0.5``;
            ``None``: rigid.
        elastic_extent: side (mm) of the cube over which the cosine basis spans half a period
            per frequency step.
    """

    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    elastic: np.ndarray | None = field(default=None, repr=False)
    elastic_extent: float = 400.0

    @property
    def matrix(self) -> np.ndarray:
        """``s R``: the forward linear part (patient -> posed)."""
        return self.scale * rotation_matrix(self.rotation)

    @property
    def elastic_rms(self) -> float:
        """Root-mean-square displacement (mm, per component) of the elastic field over its cube."""
        if self.elastic is None:
            return 0.0
        k = self.elastic.shape[1]
        e = np.where(np.arange(k) == 0, 1.0, 0.5)
        w = e[:, None, None] * e[None, :, None] * e[None, None, :]
        return float(np.sqrt((self.elastic**2 * w).sum() / 3))

    def displacement(self, q: np.ndarray, center: Sequence[float]) -> np.ndarray:
        """Elastic displacement ``D(q)`` (mm) at posed points ``q`` ``(N, 3)``."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, 3)
        if self.elastic is None:
            return np.zeros_like(q)
        k = self.elastic.shape[1]
        u = (q - np.asarray(center, dtype=np.float64)) / self.elastic_extent + 0.5
        b = np.cos(np.pi * u[:, :, None] * np.arange(k))  # (N, 3 axes, K)
        return np.einsum("cabd,na,nb,nd->nc", self.elastic, b[:, 0], b[:, 1], b[:, 2])


def random_pose(
    rng: np.random.Generator,
    rotation: Sequence[float] = (5.0, 3.0, 5.0),
    scale: tuple[float, float] = (0.93, 1.07),
    shift: float = 8.0,
    elastic: float = 3.0,
    frequencies: int = 3,
    elastic_extent: float = 400.0,
) -> Pose:
    """A random :class:`Pose`: uniform rotations within ``±rotation`` degrees, scale, shift
    within ``±shift`` mm per axis, and an elastic field of ``frequencies`` cosine terms per axis
    (constant term left out) with root-mean-square displacement ``elastic`` mm."""
    angles = tuple(float(v) for v in rng.uniform(-1, 1, 3) * np.asarray(rotation, dtype=np.float64))
    s = float(rng.uniform(*scale))
    t = tuple(float(v) for v in rng.uniform(-shift, shift, 3))
    coef = None
    if elastic > 0 and frequencies > 1:
        f = np.arange(frequencies)
        order = f[:, None, None] + f[None, :, None] + f[None, None, :]
        weight = np.where(order == 0, 0.0, 1.0 / np.maximum(order, 1))
        coef = rng.standard_normal((3, frequencies, frequencies, frequencies)) * weight
        pose = Pose(elastic=coef, elastic_extent=elastic_extent)
        coef = coef * (elastic / max(pose.elastic_rms, 1e-12))
    return Pose(rotation=angles, scale=s, shift=t, elastic=coef, elastic_extent=elastic_extent)


# ----------------------------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------------------------
def _inverse_affine(pose: Pose, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``p = A q + b`` (+ elastic): the linear part of the sampling map."""
    a = rotation_matrix(pose.rotation).T / pose.scale
    b = center - a @ (center + np.asarray(pose.shift, dtype=np.float64))
    return a, b


def _detector_offsets(n: int, spacing: float) -> np.ndarray:
    """Pixel-centre offsets (mm) from the detector centre along one axis."""
    return (np.arange(n) - (n - 1) / 2) * spacing


def _depth_planes(volume: ChestVolume, geometry: Geometry, pose: Pose) -> np.ndarray:
    """World-y positions (posed space) of the sampling planes that cover the body."""
    c = np.asarray(geometry.center, dtype=np.float64)
    lo, hi = volume.body_bounds
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    posed = (corners - c) @ pose.matrix.T + c + np.asarray(pose.shift)
    margin = 3 * pose.elastic_rms * pose.scale + geometry.depth_step
    y0, y1 = posed[:, 1].min() - margin, posed[:, 1].max() + margin
    n = -(-(math.ceil((y1 - y0) / geometry.depth_step) + 1) // _CHUNKS) * _CHUNKS
    return y0 + (np.arange(n) + 0.5) * (y1 - y0) / n


def _render_grid(
    volume: ChestVolume, geometry: Geometry, pose: Pose
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Sampling grid ``(chunks, J / chunks, V, U, 3)`` (grid_sample units) and step length ``(V, U)`` mm."""
    c = np.asarray(geometry.center, dtype=np.float64)
    h, w = geometry.size
    rs = geometry.render_spacing or geometry.spacing
    rs_v, rs_u = (max(float(r), geometry.spacing) for r in ((rs, rs) if np.isscalar(rs) else rs))
    vr, ur = max(2, round(h * geometry.spacing / rs_v)), max(2, round(w * geometry.spacing / rs_u))
    au = _detector_offsets(ur, w * geometry.spacing / ur)  # detector offsets of the render pixels
    av = _detector_offsets(vr, h * geometry.spacing / vr)
    ys = _depth_planes(volume, geometry, pose)
    step = (ys[-1] - ys[0]) / max(len(ys) - 1, 1) if len(ys) > 1 else geometry.depth_step
    if geometry.beam == "parallel":
        lam = np.ones_like(ys)
        path = np.full((vr, ur), step)
    else:
        d = geometry.direction
        source_y = c[1] - d * (geometry.source_to_detector - geometry.isocenter_to_detector)
        lam = (ys - source_y) / (geometry.source_to_detector * d)  # fraction of the way to the detector
        sdd = geometry.source_to_detector
        path = step * np.sqrt(au[None, :] ** 2 + av[:, None] ** 2 + sdd**2) / sdd
    # posed points: qx = cx - lam * au (columns run to the patient's left), qz = cz - lam * av (rows run down)
    qx = c[0] - lam[:, None] * au[None, :]  # (J, U)
    qz = c[2] - lam[:, None] * av[None, :]  # (J, V)
    a, b = _inverse_affine(pose, c)
    inv = np.linalg.inv(volume.affine)
    zyx = np.array(volume.shape, dtype=np.float64)
    norm = 2.0 / (zyx[::-1] - 1)  # voxel index -> [-1, 1] (align_corners=True), x y z order
    gm = norm[:, None] * inv[:3, :3]  # world mm -> grid units (linear part)
    m = gm @ a  # grid coordinate = m @ q + o (+ gm @ elastic displacement)
    o = norm * (inv[:3, :3] @ b + inv[:3, 3]) - 1.0
    # grid[r, j, v, u] = sum_n T[r, j, v, n] X[j, u, n]: one matmul builds the whole grid, with
    # X = (cosine terms of qx..., 1, qx) and T = (elastic terms, the rest of the affine map, m[r, 0])
    k = pose.elastic.shape[1] if pose.elastic is not None else 0
    xb = np.empty((len(ys), ur, k + 2))
    tb = np.empty((3, len(ys), vr, k + 2))
    if k:
        f = np.arange(k) * np.pi
        e = pose.elastic_extent
        xb[..., :k] = np.cos(((qx[..., None] - c[0]) / e + 0.5) * f)
        by = np.cos(((ys[:, None] - c[1]) / e + 0.5) * f)  # (J, K)
        bz = np.cos(((qz[..., None] - c[2]) / e + 0.5) * f)  # (J, V, K)
        coef = np.einsum("rc,cabd->rabd", gm, pose.elastic)  # displacement in grid units
        tb[..., :k] = np.einsum("rabd,jb,jvd->rjva", coef, by, bz, optimize=True)
    xb[..., k] = 1.0
    xb[..., k + 1] = qx
    tb[..., k] = m[:, 1, None, None] * ys[None, :, None] + m[:, 2, None, None] * qz[None] + o[:, None, None]
    tb[..., k + 1] = m[:, 0, None, None]
    comps = torch.matmul(torch.from_numpy(tb).float(), torch.from_numpy(xb).float().transpose(1, 2))  # (3, J, V, U)
    # (chunks, J / chunks, V, U, 3): grid_sample runs its batch in parallel; a fixed chunk count keeps
    # the result independent of the number of threads
    grid = comps.view(3, _CHUNKS, len(ys) // _CHUNKS, vr, ur).permute(1, 2, 3, 4, 0)
    return grid, torch.from_numpy(path).float(), (vr, ur)


def _integrate(channels: torch.Tensor, grid: torch.Tensor, path: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Line integrals ``(C, H, W)`` of ``channels`` ``(C, Z, Y, X)`` along the grid's rays."""
    chunks = grid.shape[0]
    samples = F.grid_sample(
        channels[None].expand(chunks, -1, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )  # (chunks, C, J / chunks, V, U)
    lines = samples.sum(2).sum(0) * path  # (C, V, U)
    if tuple(lines.shape[-2:]) != tuple(geometry.size):
        lines = F.interpolate(lines[None], size=geometry.size, mode="bilinear", align_corners=False)[0]
    return lines


def project_channels(
    volume: ChestVolume,
    channels: torch.Tensor,
    geometry: Geometry = Geometry(),
    pose: Pose | None = None,
) -> torch.Tensor:
    """Line integrals ``(C, H, W)`` (value x mm) of any ``(C, Z, Y, X)`` volumes on ``volume``'s grid.

    The workhorse of :func:`project` and :func:`project_labels`: one sampling grid for all
    channels. Beyond the first and last axial slice the channels are extended by repeating
    those slices (the body goes on above and below; :func:`load_chest_volume` already adds
    smoothed slices there); beyond the other faces they are 0.
    """
    geometry, pose = geometry.resolved(volume), pose or Pose()
    if channels.dim() != 4 or tuple(channels.shape[1:]) != volume.shape:
        raise ValueError(f"channels must be (C, {', '.join(map(str, volume.shape))}), not {tuple(channels.shape)}.")
    grid, path, _ = _render_grid(volume, geometry, pose)
    grid[..., 2].clamp_(-1.0, 1.0)  # repeat the end slices along z
    return _integrate(channels.float(), grid, path, geometry)


def project(
    volume: ChestVolume,
    geometry: Geometry = Geometry(),
    pose: Pose | None = None,
    mu: torch.Tensor | None = None,
    bone_scale: float = 1.0,
) -> torch.Tensor:
    """Line integral of the attenuation, ``∫ mu ds`` (dimensionless), as a ``(H, W)`` image.

    Display orientation (see the module notes); 0 where the ray misses the body.

    Args:
        volume: the CT (:func:`load_chest_volume`, possibly with findings).
        geometry: detector and beam.
        pose: patient pose; ``None`` = as scanned.
        mu: the attenuation to project instead of ``volume.mu(bone_scale)``.
        bone_scale: see :func:`hu_to_mu`.
    """
    mu = volume.mu(bone_scale) if mu is None else mu
    return project_channels(volume, mu[None], geometry, pose)[0]


def label_channels(volume: ChestVolume, structures: Mapping[str, int | Sequence[int]]) -> torch.Tensor:
    """``(len(structures), Z, Y, X)`` float indicator volumes, one per named structure (a label id or ids)."""
    return torch.stack([volume.mask(ids).float() for ids in structures.values()])


def project_labels(
    volume: ChestVolume,
    structures: Mapping[str, int | Sequence[int]],
    geometry: Geometry = Geometry(),
    pose: Pose | None = None,
) -> dict[str, torch.Tensor]:
    """Path length (mm) of every ray through each structure, ``{name: (H, W)}``.

    ``structures`` maps a name to a label id or a list of ids (their union). A 2D mask is a
    threshold on the path length, e.g. ``lengths["heart"] >= 5``: the pixel shows the structure
    if its ray crosses at least 5 mm of it. Same geometry and pose as :func:`project`.
    """
    lines = project_channels(volume, label_channels(volume, structures), geometry, pose)
    return {n: lines[i] for i, n in enumerate(structures)}


def project_points(
    volume: ChestVolume,
    points: np.ndarray,
    geometry: Geometry = Geometry(),
    pose: Pose | None = None,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> np.ndarray:
    """Detector pixel coordinates ``(N, 2)`` = ``(x, y)`` (column, row) of world points ``(N, 3)``.

    Exactly the geometry of :func:`project`: the elastic field is inverted by fixed-point
    iteration to ``tol`` mm. ``volume`` only supplies the default isocentre.
    """
    geometry, pose = geometry.resolved(volume), pose or Pose()
    c = np.asarray(geometry.center, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    fwd, t = pose.matrix, np.asarray(pose.shift, dtype=np.float64)
    q = (p - c) @ fwd.T + c + t
    if pose.elastic is not None:
        for _ in range(max_iter):
            q_new = (p - pose.displacement(q, c) - c) @ fwd.T + c + t
            done = np.abs(q_new - q).max() < tol
            q = q_new
            if done:
                break
    h, w = geometry.size
    if geometry.beam == "parallel":
        lam = np.ones(len(q))
    else:
        d = geometry.direction
        source_y = c[1] - d * (geometry.source_to_detector - geometry.isocenter_to_detector)
        lam = (q[:, 1] - source_y) / (geometry.source_to_detector * d)
    au, av = (c[0] - q[:, 0]) / lam, (c[2] - q[:, 2]) / lam
    return np.stack([au / geometry.spacing + (w - 1) / 2, av / geometry.spacing + (h - 1) / 2], axis=1)


# ----------------------------------------------------------------------------------------------
# Detector physics and processing
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exposure:
    """Detector physics and image processing, applied to a line-integral image by :func:`expose`.

    Args:
        photons: unattenuated quanta per pixel (dose); ``None``: noise-free.
        scatter: scatter-to-primary ratio of the open field; scatter is a wide blur (``scatter_mm``)
            of the primary, so it fills dense areas and lowers their contrast.
        scatter_mm: width (Gaussian sigma) of the scatter, mm.
        blur_mm: detector blur (Gaussian sigma, mm at the detector), applied to the quanta.
        compression: dynamic-range compression, 0..1: the fraction of the low-pass
            (``compression_mm``) log signal removed, so lungs and mediastinum both show.
        compression_mm: width of that low-pass, mm.
        window: percentiles (lo, hi) of the processed log signal inside the patient (pixels whose
            rays are attenuated by more than 0.3) mapped to black and white.
        gamma: ``x ** gamma`` after windowing (< 1 brightens).
        contrast: slope of the S-shaped tone curve (a logistic through ``midpoint``, rescaled to
            [0, 1]) that follows, like a detector's display LUT; 0: none.
        midpoint: centre of the tone curve on the windowed scale.
        sharpen: unsharp-mask amount (edge enhancement) with sigma ``sharpen_mm``.
        sharpen_mm: width of the unsharp mask, mm.
    """

    photons: float | None = 5e4
    scatter: float = 0.1
    scatter_mm: float = 40.0
    blur_mm: float = 0.5
    compression: float = 0.3
    compression_mm: float = 50.0
    window: tuple[float, float] = (2.0, 99.6)
    gamma: float = 1.0
    contrast: float = 5.0
    midpoint: float = 0.4
    sharpen: float = 0.8
    sharpen_mm: float = 2.5


def random_exposure(rng: np.random.Generator) -> Exposure:
    """A random :class:`Exposure` over the range of ordinary chest films."""
    return Exposure(
        photons=float(10 ** rng.uniform(4.3, 5.3)),
        scatter=float(rng.uniform(0.05, 0.2)),
        blur_mm=float(rng.uniform(0.3, 0.8)),
        compression=float(rng.uniform(0.2, 0.4)),
        compression_mm=float(rng.uniform(35, 70)),
        window=(float(rng.uniform(0.5, 3.0)), float(rng.uniform(99.3, 99.9))),
        gamma=float(rng.uniform(0.9, 1.15)),
        contrast=float(rng.uniform(3.5, 7.0)),
        midpoint=float(rng.uniform(0.33, 0.48)),
        sharpen=float(rng.uniform(0.5, 1.2)),
    )


def _gaussian(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur of a 2D float array with edge replication (wide ones on a coarser grid)."""
    from scipy import ndimage

    if sigma_px <= 0.05:
        return image
    if sigma_px <= 4:
        return ndimage.gaussian_filter(image, sigma_px, mode="nearest", truncate=3.0)
    f = int(sigma_px // 2)  # a wide low-pass: blur block means, interpolate back
    h, w = image.shape
    padded = np.pad(image, ((0, -h % f), (0, -w % f)), mode="edge")
    small = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma_px / f, mode="nearest", truncate=3.0)
    return ndimage.zoom(small, f, order=1, mode="nearest", grid_mode=True)[:h, :w]


def _logistic(t: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-t))


def expose(
    line_integral: torch.Tensor | np.ndarray,
    exposure: Exposure = Exposure(),
    rng: np.random.Generator | None = None,
    spacing: float = 1.25,
) -> np.ndarray:
    """Detector image, display-ready: float32 ``(H, W)`` in [0, 1], bright = dense (MONOCHROME2).

    Primary ``I = N exp(-∫mu)`` plus scatter, Poisson quanta (``exposure.photons`` = N per pixel),
    detector blur, log transform ``-ln(I / I_open)``, dynamic-range compression, percentile
    window, gamma, S-shaped tone curve and unsharp masking. ``spacing`` (mm per pixel) converts the mm widths to pixels.
    """
    if isinstance(line_integral, torch.Tensor):
        line_integral = line_integral.detach().numpy()
    p = np.asarray(line_integral, dtype=np.float64)
    p = np.round(p * 1e5) / 1e5  # independent of float summation order in the last bits
    primary = np.exp(-p)
    signal = primary
    if exposure.scatter:
        signal = primary + exposure.scatter * _gaussian(primary, exposure.scatter_mm / spacing)
    open_field = 1.0 + exposure.scatter
    if exposure.photons is not None:
        if rng is None:
            raise ValueError("A random generator is needed for quantum noise (or set photons=None).")
        signal = rng.poisson(signal * exposure.photons) / exposure.photons
    signal = _gaussian(signal, exposure.blur_mm / spacing)
    floor = 0.5 / exposure.photons if exposure.photons else 1e-12
    logs = raw_logs = -np.log(np.maximum(signal, floor) / open_field)
    if exposure.compression:
        logs = logs - exposure.compression * _gaussian(logs, exposure.compression_mm / spacing)
    body = logs[raw_logs > 0.3]  # the window is set on the patient, not on the open field around
    lo, hi = np.percentile(body if body.size > 16 else logs, exposure.window)
    x = np.clip((logs - lo) / max(hi - lo, 1e-6), 0, 1) ** exposure.gamma
    if exposure.contrast:
        k, m = exposure.contrast, exposure.midpoint
        x = (_logistic(k * (x - m)) - _logistic(-k * m)) / (_logistic(k * (1 - m)) - _logistic(-k * m))
    if exposure.sharpen:
        x = x + exposure.sharpen * (x - _gaussian(x, exposure.sharpen_mm / spacing))
    return np.clip(x, 0, 1).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A [0, 1] image as uint8 (round half to even, deterministic)."""
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


@dataclass
class Radiograph:
    """One simulated film: image, its geometry, and whatever was projected with it."""

    image: np.ndarray  # float32 (H, W) in [0, 1], display orientation, bright = dense
    line_integral: np.ndarray  # float32 (H, W), ∫ mu ds
    geometry: Geometry
    pose: Pose
    exposure: Exposure
    lengths: dict[str, np.ndarray] = field(default_factory=dict)  # path length (mm) per structure
    points: np.ndarray | None = None  # (N, 2) pixel (x, y) of the given world points

    @property
    def spacing(self) -> tuple[float, float]:
        """Pixel spacing (x, y) in mm at the detector."""
        return (self.geometry.spacing, self.geometry.spacing)


def simulate(
    volume: ChestVolume,
    rng: np.random.Generator,
    geometry: Geometry = Geometry(),
    pose: Pose | None = None,
    exposure: Exposure | None = None,
    structures: Mapping[str, int | Sequence[int]] | None = None,
    points: np.ndarray | None = None,
    bone_scale: float = 1.0,
    mu: torch.Tensor | None = None,
    channels: torch.Tensor | None = None,
    label_sampling: tuple[float | tuple[float, float], float] | None = None,
) -> Radiograph:
    """Project, expose and (optionally) project structures and points, all with one geometry.

    ``pose`` / ``exposure`` default to :func:`random_pose` / :func:`random_exposure` drawn from
    ``rng`` (in that order, before the quantum noise), so one generator fixes the whole film.
    ``channels`` (= ``label_channels(volume, structures)``) may be passed precomputed when many
    films are made of one volume; ``mu`` replaces ``volume.mu(bone_scale)`` (which is cached).
    ``label_sampling = (render_spacing, depth_step)`` computes the structures' path lengths on a
    coarser grid than the image (same geometry and pose otherwise): masks that are thresholds
    of path lengths need less detail, and several structures cost several channels.
    """
    geometry = geometry.resolved(volume)
    pose = random_pose(rng) if pose is None else pose
    exposure = random_exposure(rng) if exposure is None else exposure
    mu = volume.mu(bone_scale) if mu is None else mu
    stack = mu[None]
    if structures:
        channels = label_channels(volume, structures) if channels is None else channels
        if label_sampling is None:
            stack = torch.cat([stack, channels])
        else:
            coarse = replace(geometry, render_spacing=label_sampling[0], depth_step=label_sampling[1])
            paths = project_channels(volume, channels, coarse, pose)
    lines = project_channels(volume, stack, geometry, pose)
    if structures and label_sampling is None:
        lines, paths = lines[:1], lines[1:]
    image = expose(lines[0], exposure, rng, geometry.spacing)
    lengths = {k: paths[i].numpy() for i, k in enumerate(structures)} if structures else {}
    pts = project_points(volume, points, geometry, pose) if points is not None else None
    return Radiograph(image, lines[0].numpy(), geometry, pose, exposure, lengths, pts)


# ----------------------------------------------------------------------------------------------
# Findings, inserted in 3D before projection
# ----------------------------------------------------------------------------------------------
def _world_grid(volume: ChestVolume, box: tuple[slice, slice, slice]) -> tuple[torch.Tensor, ...]:
    """World x, y, z (float64, broadcastable ``(z, y, x)``) of the voxel centres in ``box`` (z, y, x slices)."""
    ks, js, is_ = (torch.arange(s.start, s.stop, dtype=torch.float64) for s in box)
    a = torch.from_numpy(volume.affine)
    if np.count_nonzero(volume.affine[:3, :3] - np.diag(np.diag(volume.affine[:3, :3]))):
        raise ValueError("Findings need an axis-aligned volume (load_chest_volume gives one).")
    x = a[0, 0] * is_ + a[0, 3]
    y = a[1, 1] * js + a[1, 3]
    z = a[2, 2] * ks + a[2, 3]
    return x[None, None, :], y[None, :, None], z[:, None, None]


def _box(volume: ChestVolume, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice]:
    """Voxel slices ``(z, y, x)`` covering the world box ``[lo, hi]``, clipped to the volume."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = volume.world_to_voxel(corners)
    a, b = np.floor(ijk.min(0)).astype(int), np.ceil(ijk.max(0)).astype(int) + 1
    shape = volume.shape[::-1]
    return tuple(slice(max(0, a[d]), min(shape[d], b[d])) for d in (2, 1, 0))  # type: ignore[return-value]


def _inner_point(
    volume: ChestVolume, label: int, depth: float, rng: np.random.Generator, tries: int = 200
) -> np.ndarray:
    """A random voxel centre of ``label`` whose ball of radius ``depth`` mm lies inside it (if one is found)."""
    kji = np.round(volume.world_to_voxel(volume.voxels(label))).astype(int)[:, ::-1]
    if len(kji) == 0:
        raise ValueError(f"No voxel has label {label}.")
    labels = volume.labels.numpy()
    reach = np.ceil(depth / np.asarray(volume.spacing[::-1])).astype(int)  # (z, y, x) voxels
    offs = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij"), -1).reshape(-1, 3)
    offs = offs[(((offs * np.asarray(volume.spacing[::-1])) ** 2).sum(1) <= depth**2)]
    shape = np.asarray(volume.shape)
    pick = kji[rng.integers(len(kji))]
    for _ in range(tries):
        pts = pick + offs
        if ((pts >= 0) & (pts < shape)).all() and bool((labels[pts[:, 0], pts[:, 1], pts[:, 2]] == label).all()):
            break
        pick = kji[rng.integers(len(kji))]
    return volume.voxel_to_world(pick[::-1][None])[0]


def insert_nodule(
    volume: ChestVolume,
    rng: np.random.Generator,
    diameter: float | None = None,
    hu: float | None = None,
    lobe: int | None = None,
    center: Sequence[float] | None = None,
) -> tuple[ChestVolume, dict]:
    """A solid lung nodule: a soft-tissue ellipsoid inside a lung lobe.

    Args:
        volume: not changed; a changed copy is returned.
        rng: draws what is not given.
        diameter: mean diameter, mm (default uniform 5-20); the three semi-axes vary ±15 %.
        hu: density (default uniform +40..+100 HU).
        lobe: label id of the lobe (default: by volume, among 10-14).
        center: world RAS centre (default: a random voxel of the lobe at least a radius from its edge
            where possible).

    Returns:
        The new volume (nodule voxels labelled :data:`NODULE_LABEL`) and a description
        ``{"finding": "nodule", "center": [x, y, z], "diameter_mm", "hu", "lobe"}``.
    """
    d = float(rng.uniform(5, 20)) if diameter is None else float(diameter)
    density = float(rng.uniform(40, 100)) if hu is None else float(hu)
    radii = d / 2 * rng.uniform(0.85, 1.15, 3)
    lobes = LUNG_LABELS["left"] + LUNG_LABELS["right"]
    if lobe is None:
        counts = torch.bincount(volume.labels.flatten().long(), minlength=256).numpy()
        sizes = counts[list(lobes)].astype(np.float64)
        lobe = int(lobes[rng.choice(len(lobes), p=sizes / sizes.sum())])
    if center is None:
        center = _inner_point(volume, lobe, d / 2, rng)
    c = np.asarray(center, dtype=np.float64)
    box = _box(volume, c - radii - 4, c + radii + 4)
    x, y, z = _world_grid(volume, box)
    r = torch.sqrt(((x - c[0]) / radii[0]) ** 2 + ((y - c[1]) / radii[1]) ** 2 + ((z - c[2]) / radii[2]) ** 2)
    edge = min(volume.spacing) / float(radii.mean())  # soft edge about one voxel wide
    occ = ((1 - r) / edge + 0.5).clamp(0, 1).float()
    out = volume.clone()
    region = out.hu[box]
    bone = _label_mask(out.labels[box].contiguous(), BONE_LABELS)
    occ = torch.where(bone | (region > density), torch.zeros_like(occ), occ)
    out.hu[box] = region + occ * (density - region)
    out.labels[box] = torch.where(occ > 0.5, torch.full_like(out.labels[box], NODULE_LABEL), out.labels[box])
    _carry_cache(volume, out, (NODULE_LABEL, *LUNG_LABELS["left"], *LUNG_LABELS["right"]), box)
    centre = [float(v) for v in c]
    return out, {"finding": "nodule", "center": centre, "diameter_mm": d, "hu": density, "lobe": int(lobe)}


def insert_effusion(
    volume: ChestVolume,
    rng: np.random.Generator,
    side: str | None = None,
    level: float | None = None,
    hu: float | None = None,
    meniscus_mm: float | None = None,
) -> tuple[ChestVolume, dict]:
    """A pleural effusion: fluid replaces the dependent lung base of one or both sides.

    Below ``level`` the lung is replaced by fluid; above it the fluid surface climbs towards the
    posterior and, more, the lateral chest wall (up to ``meniscus_mm`` higher), so the fluid
    layer thins upwards. On a frontal film this blunts the costophrenic angle, with a
    meniscus concave upwards and a density that fades towards its top.

    Args:
        volume: not changed; a changed copy is returned.
        rng: draws what is not given.
        side: ``"left"``, ``"right"`` or ``"both"`` (default: 40/40/20 %).
        level: height of the fluid surface at the front of the lung above its lowest voxel, as a
            fraction of the lung's height (default uniform 0.04-0.2).
        hu: fluid density (default uniform +10..+20 HU).
        meniscus_mm: rise of the surface at the lateral-posterior edge (default uniform 40-80 mm).

    Returns:
        The new volume (fluid labelled :data:`EFFUSION_LABEL`) and a description
        ``{"finding": "effusion", "side", "level", "hu", "meniscus_mm", "volume_ml"}``.
    """
    side = str(rng.choice(["left", "right", "both"], p=[0.4, 0.4, 0.2])) if side is None else side
    if side not in ("left", "right", "both"):
        raise ValueError(f"side must be 'left', 'right' or 'both', not {side!r}.")
    frac = float(rng.uniform(0.04, 0.2)) if level is None else float(level)
    density = float(rng.uniform(10, 20)) if hu is None else float(hu)
    rise = float(rng.uniform(40, 80)) if meniscus_mm is None else float(meniscus_mm)
    out = volume.clone()
    fluid_ml = 0.0
    voxel_ml = float(np.prod(volume.spacing)) / 1000
    boxes = []
    for s in ("left", "right") if side == "both" else (side,):
        lo, hi = volume.bounds(LUNG_LABELS[s])
        height = hi[2] - lo[2]
        z0 = lo[2] + frac * height
        box = _box(volume, lo, np.array([hi[0], hi[1], z0 + rise + 5]))
        boxes.append(box)
        x, y, z = _world_grid(volume, box)
        lung = _label_mask(out.labels[box].contiguous(), LUNG_LABELS[s])
        # the fluid follows the chest wall: positions relative to this lung's own extent along
        # each antero-posterior line (post: 0 front .. 1 back) and each transverse line (lat: 0
        # medial .. 1 lateral; +x is the patient's right)
        inf = torch.tensor(float("inf"), dtype=torch.float64)
        y_front = torch.where(lung, y, -inf).amax(1, keepdim=True)
        y_back = torch.where(lung, y, inf).amin(1, keepdim=True)
        post = ((y_front - y) / (y_front - y_back).clamp_min(volume.spacing[1])).clamp(0, 1)
        xs = torch.where(lung, x, inf).amin(2, keepdim=True), torch.where(lung, x, -inf).amax(2, keepdim=True)
        medial, lateral = xs if s == "right" else xs[::-1]
        sign = 1 if s == "right" else -1
        lat = (sign * (x - medial) / (lateral - medial).abs().clamp_min(volume.spacing[0])).clamp(0, 1)
        post, lat = torch.nan_to_num(post), torch.nan_to_num(lat)
        surface = z0 + rise * (0.15 + 0.85 * lat**1.5) * post**0.7
        occ = ((surface - z) / volume.spacing[2] + 0.5).clamp(0, 1).float()
        occ = torch.where(lung, occ, torch.zeros_like(occ))
        region = out.hu[box]
        out.hu[box] = region + occ * (density - region)
        out.labels[box] = torch.where(occ > 0.5, torch.full_like(out.labels[box], EFFUSION_LABEL), out.labels[box])
        fluid_ml += float(occ.sum()) * voxel_ml
    union = tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes)) for d in range(3))
    _carry_cache(volume, out, (EFFUSION_LABEL, *LUNG_LABELS["left"], *LUNG_LABELS["right"]), union)
    info = {"finding": "effusion", "side": side, "level": frac, "hu": density, "meniscus_mm": rise}
    return out, info | {"volume_ml": fluid_ml}


def enlarge_heart(
    volume: ChestVolume,
    rng: np.random.Generator,
    factor: float | None = None,
) -> tuple[ChestVolume, dict]:
    """Cardiomegaly: the heart label scaled up about a point low in the heart.

    The transverse size grows by ``factor`` (default uniform 1.15-1.35), the antero-posterior
    size by 60 % and the height by 40 % of that growth, about the heart's centroid in x/y and a
    point a quarter of its height above its base in z (the heart rests on the diaphragm). The
    new heart voxels take the heart's mean HU and replace lung, fat and unlabelled soft tissue
    (never bone, airway, liver or other organs).

    Returns:
        The new volume and ``{"finding": "cardiomegaly", "factor", "scale": [sx, sy, sz],
        "heart_ml_before", "heart_ml_after"}``.
    """
    f = float(rng.uniform(1.15, 1.35)) if factor is None else float(factor)
    heart = volume.names.get("heart", 51)
    scale = np.array([f, 1 + 0.6 * (f - 1), 1 + 0.4 * (f - 1)])
    lo, hi = volume.bounds(heart)
    anchor = np.array([*volume.centroid(heart)[:2], lo[2] + 0.25 * (hi[2] - lo[2])])
    new_lo, new_hi = anchor + (lo - anchor) * scale - 3, anchor + (hi - anchor) * scale + 3
    box = _box(volume, new_lo, new_hi)
    x, y, z = _world_grid(volume, box)
    # nearest voxel (i, j, k) of each voxel's source point, anchor + (point - anchor) / scale
    index = []
    for d, (w, n) in enumerate(zip((x, y, z), volume.shape[::-1])):
        source = anchor[d] + (w - anchor[d]) / scale[d]
        index.append(torch.round((source - volume.affine[d, 3]) / volume.affine[d, d]).long().clamp(0, n - 1))
    ii, jj, kk = torch.broadcast_tensors(*index)
    src_lab = volume.labels[kk, jj, ii]
    key = ("mean_hu", heart)
    if key not in volume._voxel_cache:
        volume._voxel_cache[key] = float(volume.hu[volume.mask(heart)].mean())
    heart_hu = volume._voxel_cache[key]
    out = volume.clone()
    lab, region = out.labels[box], out.hu[box]
    replaceable = _label_mask(lab.contiguous(), (0, 53, 61, *LUNG_LABELS["left"], *LUNG_LABELS["right"]))
    grow = (src_lab == heart) & (lab != heart) & replaceable & (region < 150)
    out.hu[box] = torch.where(grow, torch.full_like(region, heart_hu), region)
    out.labels[box] = torch.where(grow, torch.full_like(lab, heart), lab)
    voxel_ml = float(np.prod(volume.spacing)) / 1000
    before = len(volume.voxels(heart)) * voxel_ml
    _carry_cache(volume, out, (heart, 0, 53, 61, *LUNG_LABELS["left"], *LUNG_LABELS["right"]), box)
    return out, {
        "finding": "cardiomegaly",
        "factor": f,
        "scale": [float(v) for v in scale],
        "heart_ml_before": before,
        "heart_ml_after": before + float(grow.sum()) * voxel_ml,
    }
