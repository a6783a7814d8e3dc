"""Landmarks stay with their image through MONAI's spatial transforms, and come back to the film."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import (
    ApplyTransformToPointsd,
    Compose,
    RandAffined,
    RandFlipd,
    RandRotate90d,
    RandRotated,
    RandZoomd,
    Resized,
)

from mimtl.data.validate import DataValidationError
from mimtl.losses import HeatmapLoss, render_heatmaps
from mimtl.transforms import DecodeLandmarksd, LandmarksToWorldd, SetPixelSpacingd, as_points

POINTS = [[12.0, 40.0], [50.0, 9.0], [33.0, 33.0], [70.0, 50.0]]


def _film(shape=(80, 64), affine=None, name="film.png") -> MetaTensor:
    """A dark image with a bright 3x3 mark centred on each landmark of POINTS (zooms < 1 keep some of it)."""
    image = torch.zeros(1, *shape)
    for x, y in POINTS:
        image[0, int(x) - 1 : int(x) + 2, int(y) - 1 : int(y) + 2] = 1.0
    affine = torch.eye(4, dtype=torch.float64) if affine is None else affine
    return MetaTensor(image, affine=affine, meta={"filename_or_obj": name})


SPATIAL = {
    "flip": [RandFlipd("image", prob=1.0, spatial_axis=0), RandFlipd("image", prob=0.5, spatial_axis=1)],
    "rot90": [RandRotate90d("image", prob=1.0)],
    "rotate": [RandRotated("image", range_x=0.5, prob=1.0, mode="nearest", padding_mode="zeros")],
    "zoom": [RandZoomd("image", prob=1.0, min_zoom=0.8, max_zoom=1.25, mode="nearest")],
    "affine": [RandAffined("image", prob=1.0, rotate_range=0.3, scale_range=0.15, translate_range=6, mode="nearest")],
    "resize": [Resized("image", spatial_size=(160, 128), mode="nearest")],
}


@pytest.mark.parametrize("name", sorted(SPATIAL))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_stays_on_its_bright_pixel(name, seed):
    affine = torch.diag(torch.tensor([0.3, 0.5, 1.0, 1.0], dtype=torch.float64))
    affine[0, 3], affine[1, 3] = 12.0, -4.0  # a film with spacing and origin: world != pixels
    chain = Compose(
        [
            LandmarksToWorldd("landmarks"),
            *SPATIAL[name],
            ApplyTransformToPointsd("landmarks", refer_keys="image", invert_affine=True),
        ]
    )
    chain.set_random_state(seed)
    out = chain({"image": _film(affine=affine), "landmarks": POINTS + [[math.nan, math.nan]]})
    points, image = out["landmarks"][0], out["image"][0]
    assert torch.isnan(points[-1]).all(), "a missing landmark must stay missing"
    size = torch.as_tensor(image.shape, dtype=torch.float64)
    for p in points[:-1]:
        inside = ((p >= 0) & (p <= size - 1)).all()
        if not inside:
            continue
        i, j = (int(v) for v in p.round())
        assert image[i, j] > 0.5, f"{name}: no bright pixel under point {p.tolist()}"


def test_outside_points_raise_or_are_marked_missing(caplog):
    data = {"image": _film(name="/data/ceph/007.bmp"), "landmarks": [*POINTS, [90.0, 5.0]]}
    with pytest.raises(DataValidationError, match=r"007\.bmp.*#4.*outside the 80x64 image"):
        LandmarksToWorldd("landmarks")(data)
    out = LandmarksToWorldd("landmarks", outside="missing")(data)
    assert torch.isnan(out["landmarks"][0, 4]).all() and torch.isfinite(out["landmarks"][0, :4]).all()
    assert "marked missing" in caplog.text


def test_wrong_landmark_count_names_the_file():
    with pytest.raises(DataValidationError, match="film.png: 4 landmarks.*expects 19"):
        LandmarksToWorldd("landmarks", num_landmarks=19)({"image": _film(), "landmarks": POINTS})
    with pytest.raises(DataValidationError, match="film.png"):
        LandmarksToWorldd("landmarks")({"image": _film(), "landmarks": [[1.0, 2.0, 3.0]]})


def test_none_in_json_is_missing():
    assert torch.isnan(as_points([[1.0, 2.0], [None, None]])[1]).all()


def test_spacing_from_datalist_or_unknown():
    image = _film()
    image.meta.update(spacing=np.array([1.0, 1.0]), spacing_known=False, spacing_source="unknown")
    out = SetPixelSpacingd("image")({"image": image, "spacing": [0.1, 0.2]})
    assert out["image"].meta["spacing_known"] and np.allclose(out["image"].meta["spacing"], [0.1, 0.2])
    image2 = _film()
    image2.meta.update(spacing=np.array([1.0, 1.0]), spacing_known=False, spacing_source="unknown")
    out = SetPixelSpacingd("image")({"image": image2, "spacing": [math.nan, math.nan]})
    assert not out["image"].meta["spacing_known"]


def test_default_spacing_only_where_the_film_and_datalist_give_none():
    def film(known):
        image = _film()
        image.meta.update(
            spacing=np.array([0.2, 0.2]), spacing_known=known, spacing_source="file" if known else "unknown"
        )
        return image

    set_default = SetPixelSpacingd("image", default=0.1)
    out = set_default({"image": film(False)})["image"].meta
    assert out["spacing_known"] and np.allclose(out["spacing"], [0.1, 0.1]) and "default" in out["spacing_source"]
    assert np.allclose(set_default({"image": film(True)})["image"].meta["spacing"], [0.2, 0.2])  # the file's own
    out = set_default({"image": film(False), "spacing": [0.3, 0.4]})["image"].meta
    assert np.allclose(out["spacing"], [0.3, 0.4]) and out["spacing_source"] == "datalist 'spacing'"
    assert np.allclose(
        SetPixelSpacingd("image", default=[0.1, 0.3])({"image": film(False)})["image"].meta["spacing"], [0.1, 0.3]
    )
    with pytest.raises(ValueError, match="3 values"):
        SetPixelSpacingd("image", default=[0.1, 0.1, 0.1])({"image": film(False)})
    with pytest.raises(ValueError, match="positive"):
        SetPixelSpacingd("image", default=0.0)


def test_decode_maps_back_to_the_original_film_and_mm():
    """Predictions made on a resized grid land on the original pixels, and in mm with the spacing."""
    image = _film(shape=(200, 100))
    image.meta.update(original_affine=image.affine.clone(), spacing=np.array([0.1, 0.2]), spacing_known=True)
    truth = torch.tensor([[30.0, 70.0], [151.5, 20.25]], dtype=torch.float64)
    data = Compose(
        [
            LandmarksToWorldd("label"),
            Resized("image", spatial_size=(64, 64)),
            ApplyTransformToPointsd("label", refer_keys="image", invert_affine=True),
        ]
    )({"image": image, "label": truth.tolist()})
    grid = data["label"][0].float()
    data["pred"] = render_heatmaps(grid[None], (64, 64), 2.0)[0]
    out = DecodeLandmarksd("pred", sigma=2.0)(data)
    assert torch.allclose(out["pred_points"], truth, atol=0.15)
    assert torch.allclose(out["label_points"], truth, atol=1e-6)
    assert torch.allclose(out["pred_coords"], truth * torch.tensor([0.1, 0.2], dtype=torch.float64), atol=0.02)
    assert out["unit"] == "mm" and (out["pred_confidence"] > 0.9).all()
    # unknown spacing: px, said so
    data["image"].meta["spacing_known"] = False
    out = DecodeLandmarksd("pred", sigma=2.0)(data)
    assert out["unit"] == "px" and torch.allclose(out["pred_coords"], out["pred_points"])


@pytest.mark.parametrize("kind", ["mse", "adaptive_wing", "disc_ce"])
def test_losses_prefer_the_right_heatmap_and_skip_missing(kind):
    points = torch.tensor([[[10.3, 20.7], [30.0, 5.5], [math.nan, math.nan]]])
    loss = HeatmapLoss(kind, sigma=2.0)
    target = render_heatmaps(points, (40, 32), 2.0)
    right = (target - 0.5) * 20 if kind == "disc_ce" else target
    shifted = torch.roll(right, shifts=3, dims=-1)
    assert loss(right, points) < loss(shifted, points)
    # the missing landmark's channel does not count
    noisy = right.clone()
    noisy[0, 2] = torch.randn(40, 32) * 5
    assert torch.isclose(loss(noisy, points), loss(right, points))
    assert loss(right, torch.full_like(points, math.nan)) == 0


def test_learned_sigma_gets_gradients_and_mse_only():
    loss = HeatmapLoss("mse", sigma=3.0, learn_sigma=True, num_landmarks=2)
    pred = torch.zeros(2, 2, 24, 24, requires_grad=True)
    points = torch.tensor([[[5.0, 6.0], [12.0, 12.0]], [[8.0, 8.0], [20.0, 3.0]]])
    loss(pred, points).backward()
    assert loss.log_sigma.grad is not None and loss.log_sigma.grad.abs().sum() > 0
    assert loss.sigma.shape == (2,)
    with pytest.raises(ValueError, match="learn_sigma needs kind='mse'"):
        HeatmapLoss("adaptive_wing", learn_sigma=True, num_landmarks=2)


def test_rendered_heatmaps_are_subpixel_exact():
    points = torch.tensor([[[10.25, 7.75]]])
    maps = render_heatmaps(points, (24, 16), 2.0)[0, 0]
    grid = torch.stack(torch.meshgrid(torch.arange(24.0), torch.arange(16.0), indexing="ij"), -1)
    centroid = (maps[..., None] * grid).sum((0, 1)) / maps.sum()
    assert torch.allclose(centroid, points[0, 0], atol=1e-3)
