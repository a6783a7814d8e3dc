"""The radiograph simulator: geometry, consistency of images / masks / points, physics, findings.

Uses the real demo CT (fetched from PyPI on a fresh machine, ~4 s) and small, coarse detectors
so the whole file runs in seconds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mimtl.sim import drr


@pytest.fixture(scope="module")
def volume() -> drr.ChestVolume:
    return drr.load_chest_volume()


def small(volume, **kwargs) -> drr.Geometry:
    """A coarse 96x96 detector (3.5 mm pixels) over the thorax, rendered at its own resolution."""
    args = {"size": (96, 96), "spacing": 3.5, "render_spacing": None, "depth_step": 2.5} | kwargs
    return drr.Geometry(**args).resolved(volume)


def a_pose(seed: int = 3) -> drr.Pose:
    return drr.random_pose(np.random.default_rng(seed), elastic=4.0)


def test_volume_conventions(volume):
    z, y, x = volume.shape
    assert volume.hu.dtype == torch.float32 and volume.labels.dtype == torch.uint8
    assert np.allclose(volume.affine[:3, :3], np.diag(volume.spacing)), "RAS, axis-aligned, positive spacing"
    assert all(1.9 <= s <= 2.6 for s in volume.spacing)
    assert float(volume.hu.min()) >= -1000 and float(volume.hu.max()) <= 3000
    assert float(volume.hu[z // 2, 0, 0]) == -1000, "outside the body (table, air) is air"
    # RAS: the heart is on the patient's left (-x) of the liver, the lung apices above the heart
    assert volume.centroid(51)[0] < volume.centroid(5)[0]
    assert volume.bounds(drr.LUNG_LABELS["left"])[1, 2] > volume.bounds(51)[1, 2]
    # contrast removed: the heart is plain blood, not brighter than bone
    assert 20 < float(volume.hu[volume.mask(51)].mean()) < 70
    assert drr.load_chest_volume() is volume, "cached"


def test_hu_to_mu():
    hu = torch.tensor([-2000.0, -1000.0, 0.0, 1000.0, 5000.0])
    mu = drr.hu_to_mu(hu)
    assert torch.allclose(mu, torch.tensor([0.0, 0.0, drr.MU_WATER, 2 * drr.MU_WATER, 4 * drr.MU_WATER]))
    assert torch.allclose(drr.hu_to_mu(hu, bone_scale=2.0)[:3], mu[:3])
    assert float(drr.hu_to_mu(hu, bone_scale=2.0)[3]) == pytest.approx(3 * drr.MU_WATER)


def test_display_orientation(volume):
    """Patient's right on the image left, head up, bright = dense."""
    g = drr.Geometry().resolved(volume)
    pts = drr.project_points(volume, np.stack([volume.centroid(51), volume.centroid(5), volume.centroid(43)]), g)
    heart, liver, t1 = pts
    assert heart[0] > g.size[1] / 2 > liver[0], "heart (patient's left) on the image right"
    assert t1[1] < heart[1] < liver[1] + 40, "T1 above the heart"
    film = drr.simulate(volume, np.random.default_rng(0), small(volume), drr.Pose(), drr.Exposure(photons=None))
    lengths = drr.project_labels(volume, {"lung": (10, 11, 12, 13, 14), "spine": tuple(range(25, 51))}, small(volume))
    lung_only = (lengths["lung"].numpy() > 100) & (lengths["spine"].numpy() == 0)
    spine = lengths["spine"].numpy() > 30
    assert film.image[spine].mean() > film.image[lung_only].mean() + 0.3, "dense spine bright, aerated lung dark"


@pytest.mark.parametrize("beam", ["parallel", "cone"])
def test_bead_projects_where_predicted(volume, beam):
    """A small dense bead in the lung shows up exactly at project_points' pixel, pose and all."""
    bead = volume.voxels(12)[len(volume.voxels(12)) // 2]  # a voxel in the right upper lobe
    with_bead = volume.clone()
    k, j, i = np.round(volume.world_to_voxel(bead[None])[0][::-1]).astype(int)
    with_bead.hu[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2] = 3000.0
    centre = volume.voxel_to_world(np.array([[i, j, k]]))[0]
    g = small(volume, beam=beam, spacing=2.0, size=(160, 160))
    pose = a_pose()
    diff = (drr.project(with_bead, g, pose) - drr.project(volume, g, pose)).numpy()
    assert diff.min() > -1e-4, "the bead only adds attenuation"
    predicted = drr.project_points(volume, centre[None], g, pose)[0]
    rows, cols = np.nonzero(diff > 0.25 * diff.max())
    w = diff[rows, cols]
    seen = np.array([(cols * w).sum() / w.sum(), (rows * w).sum() / w.sum()])
    assert np.abs(seen - predicted).max() < 0.5, (seen, predicted)
    brightest = np.array(np.unravel_index(diff.argmax(), diff.shape))[::-1]
    assert np.abs(brightest - predicted).max() <= 1.0, (brightest, predicted)


def test_points_land_in_their_structures(volume):
    """Points inside a structure project into that structure's 2D mask, with the same pose."""
    g, pose = small(volume), a_pose(7)
    structures = {"heart": 51, "T8": 36, "liver": 5, "aorta": 52}
    lengths = drr.project_labels(volume, structures, g, pose)
    rng = np.random.default_rng(0)
    for name, ids in structures.items():
        inside = volume.voxels(ids)[rng.integers(len(volume.voxels(ids)), size=20)]
        px = drr.project_points(volume, np.vstack([volume.centroid(ids)[None], inside]), g, pose)
        cols, rows = np.round(px).astype(int).T
        assert (lengths[name].numpy()[rows, cols] > 0).all(), name
        assert lengths[name].numpy()[rows[0], cols[0]] > 5, f"{name} centroid ray crosses it"


def test_elastic_inverse_is_exact(volume):
    """project_points solves the elastic map: mapping its answer back gives the original point."""
    g, pose = small(volume), a_pose(11)
    assert pose.elastic_rms == pytest.approx(4.0)
    c = np.asarray(g.center)
    p = volume.voxels(51)[::500]
    a, b = drr._inverse_affine(pose, c)
    q = (p - c) @ pose.matrix.T + c + np.asarray(pose.shift)
    for _ in range(100):
        q = (p - pose.displacement(q, c) - c) @ pose.matrix.T + c + np.asarray(pose.shift)
    back = q @ a.T + b + pose.displacement(q, c)
    assert np.abs(back - p).max() < 1e-6


def test_parallel_pa_equals_ap_and_cone_magnifies(volume):
    pa = drr.project(volume, small(volume, view="PA"))
    ap = drr.project(volume, small(volume, view="AP"))
    assert torch.allclose(pa, ap, atol=1e-4)
    cone = small(volume, beam="cone", view="PA", source_to_detector=1000.0, isocenter_to_detector=150.0)
    assert cone.magnification == pytest.approx(1000 / 850)
    c = np.asarray(cone.center)
    off = np.array([[c[0] + 50, c[1], c[2]]])  # 50 mm to the patient's right, at the isocentre
    px = drr.project_points(volume, np.vstack([c[None], off]), cone)
    assert px[0] == pytest.approx([47.5, 47.5])
    assert (px[0, 0] - px[1, 0]) * cone.spacing == pytest.approx(50 * cone.magnification)


def test_same_seed_same_bytes(volume):
    def film(seed):
        return drr.simulate(volume, np.random.default_rng(seed), small(volume), bone_scale=1.5)

    a, b, c = film(5), film(5), film(6)
    assert drr.to_uint8(a.image).tobytes() == drr.to_uint8(b.image).tobytes()
    assert np.array_equal(a.line_integral, b.line_integral)
    assert not np.array_equal(drr.to_uint8(a.image), drr.to_uint8(c.image))


def high_pass(image: np.ndarray) -> float:
    return float(np.abs(np.diff(image, axis=0)).mean() + np.abs(np.diff(image, axis=1)).mean())


def test_noise_blur_exposure(volume):
    g = small(volume)
    lines = drr.project(volume, g, drr.Pose(), bone_scale=1.5)
    base = drr.Exposure(photons=None, sharpen=0.0, scatter=0.0, blur_mm=0.0)

    def show(**kw):
        return drr.expose(lines, replace(base, **kw), np.random.default_rng(0), g.spacing)

    clean = show()
    assert clean.dtype == np.float32 and 0 <= clean.min() and clean.max() <= 1
    low_dose, high_dose = show(photons=3e3), show(photons=3e5)
    assert np.abs(low_dose - clean).std() > 2 * np.abs(high_dose - clean).std(), "quantum noise falls with dose"
    assert high_pass(show(blur_mm=6.0)) < 0.8 * high_pass(clean), "detector blur removes detail"
    assert high_pass(show(sharpen=1.5)) > high_pass(clean), "edge enhancement adds detail"
    assert show(gamma=1.5).mean() < clean.mean() < show(gamma=0.7).mean()
    lines_np = lines.numpy()
    dense, clear = lines_np > np.percentile(lines_np, 90), (lines_np > 0.5) & (lines_np < np.percentile(lines_np, 30))
    raw = replace(base, compression=0.0, window=(0.0, 100.0), contrast=0.0)
    contrast = [np.log(1 / drr.expose(lines, replace(raw, scatter=s), None, g.spacing).clip(1e-3)) for s in (0.0, 0.5)]
    spread = [c[clear].mean() - c[dense].mean() for c in contrast]
    assert spread[1] < spread[0], "scatter veils the film: less contrast between dense and clear areas"
    with pytest.raises(ValueError):
        drr.expose(lines, drr.Exposure(photons=1e4), None)


def test_effusion_brightens_the_lung_base(volume):
    rng = np.random.default_rng(1)
    volume.mu(1.5)  # cached on the volume: the copy's is updated where the finding changed it
    wet, info = drr.insert_effusion(volume, rng, side="right", level=0.2)
    assert torch.equal(wet.mu(1.5), drr.hu_to_mu(wet.hu, bone_scale=1.5))
    assert info["volume_ml"] > 50 and info["side"] == "right"
    assert float(volume.mask(drr.EFFUSION_LABEL).sum()) == 0, "the input volume is untouched"
    g = small(volume)
    fluid = drr.project_labels(wet, {"fluid": drr.EFFUSION_LABEL}, g)["fluid"].numpy()
    before, after = drr.project(volume, g).numpy(), drr.project(wet, g).numpy()
    base = fluid > 20
    assert base.any() and (after - before)[base].mean() > 0.25, "fluid replaces aerated lung: denser"
    top = np.nonzero(fluid > 0)[0].min()
    assert np.abs(after - before)[: top - 3].max() < 1e-3, "nothing changes above the fluid"
    assert np.abs(after - before)[:, g.size[1] // 2 + 3 :].max() < 1e-3, "nor on the left side"
    cols = np.nonzero(base)[1]
    assert cols.max() < g.size[1] / 2, "right effusion on the image left"
    rows = np.nonzero(base)[0]
    apex = drr.project_points(volume, volume.bounds(drr.LUNG_LABELS["right"])[1][None], g)[0]
    assert rows.min() > apex[1] + 30, "at the lung base, not the apex"
    ex = drr.Exposure(photons=None, compression=0.0, window=(0.0, 100.0), contrast=0.0)
    img_before, img_after = (drr.expose(p, ex, None, g.spacing) for p in (before, after))
    assert img_after[base].mean() > img_before[base].mean() + 0.03, "brighter lower lung field"


def test_nodule_and_cardiomegaly(volume):
    g = small(volume, spacing=2.0, size=(160, 160))
    rng = np.random.default_rng(2)
    volume.mu(1.5)
    nod, info = drr.insert_nodule(volume, rng, diameter=16.0, hu=80.0)
    assert info["lobe"] in (10, 11, 12, 13, 14) and float(nod.mask(drr.NODULE_LABEL).sum()) > 0
    x, y = np.round(drr.project_points(volume, np.array([info["center"]]), g)[0]).astype(int)
    diff = (drr.project(nod, g) - drr.project(volume, g)).numpy()
    assert diff[y, x] > 0.02 * 0.6 * 16 * 0.7, "about mu_water x 0.9 x diameter denser at the centre"
    assert np.unravel_index(diff.argmax(), diff.shape) in {(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}

    assert torch.equal(nod.mu(1.5), drr.hu_to_mu(nod.hu, bone_scale=1.5))
    big, info = drr.enlarge_heart(nod, rng, factor=1.3)
    assert torch.equal(big.mu(1.5), drr.hu_to_mu(big.hu, bone_scale=1.5))
    assert float(big.mask(drr.NODULE_LABEL).sum()) > 0, "findings combine"
    assert info["heart_ml_after"] > 1.3 * info["heart_ml_before"]
    masks = [drr.project_labels(v, {"heart": 51}, g)["heart"].numpy() >= 5 for v in (volume, big)]
    assert masks[1].sum() > 1.15 * masks[0].sum(), "a larger cardiac silhouette"
    width = [np.ptp(np.nonzero(m)[1]) for m in masks]
    assert width[1] > width[0] * 1.1, "wider: the cardiothoracic ratio grows"


def test_simulate_structures_on_a_coarser_grid(volume):
    """Path lengths for masks may be computed on a coarser grid: the masks barely change."""
    g, pose = small(volume, spacing=2.0, size=(160, 160)), a_pose(5)
    structures = {"heart": 51, "lungs": (10, 11, 12, 13, 14)}
    exposure = drr.Exposure(photons=None)
    fine = drr.simulate(volume, np.random.default_rng(0), g, pose, exposure, structures=structures)
    coarse = drr.simulate(
        volume, np.random.default_rng(0), g, pose, exposure, structures=structures, label_sampling=((4.0, 4.0), 4.0)
    )
    assert np.array_equal(fine.image, coarse.image)
    for name in structures:
        a, b = fine.lengths[name] >= 5, coarse.lengths[name] >= 5
        assert a.shape == b.shape == g.size and (a != b).sum() < 0.05 * a.sum(), name
