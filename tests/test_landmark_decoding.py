"""Heatmap -> landmark decoding: sub-pixel round trips, missing channels, confidence."""

import pytest
import torch

from mimtl.transforms import LandmarkDecoder, decode_heatmaps

# analytic (not rounded) Gaussian centres: off the pixel grid on purpose
CENTRES = [(37.3, 20.8), (12.6, 50.45), (50.1, 33.7)]
TOLERANCE = {"soft_argmax": 0.05, "argmax": 0.71, "blob": 0.1}


def gaussian(shape, centre, sigma, peak=1.0):
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    d2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return (peak * torch.exp(-d2 / (2 * sigma**2))).float()


@pytest.mark.parametrize("method", ["soft_argmax", "argmax", "blob"])
@pytest.mark.parametrize("sigma", [3.0, 4.0, 5.0])
def test_round_trip_batch_of_landmarks(method, sigma):
    shape = (64, 72)
    heatmaps = torch.stack([torch.stack([gaussian(shape, c, sigma) for c in CENTRES])] * 2)  # (2, 3, H, W)
    points, confidence = decode_heatmaps(heatmaps, method=method, sigma=sigma)
    assert points.shape == (2, 3, 2) and points.dtype == torch.float32
    assert confidence.shape == (2, 3)
    errors = (points.double() - torch.tensor(CENTRES, dtype=torch.float64)).norm(dim=-1)
    assert errors.max() < TOLERANCE[method], errors
    if method == "argmax":  # integer peak
        assert torch.equal(points, points.round())
        assert torch.equal(points[0, 0], torch.tensor([37.0, 21.0]))
    # confidence is the peak sample, just under 1 for an off-grid centre
    assert torch.all(confidence > 0.9) and torch.all(confidence <= 1.0)


def test_soft_argmax_3d_and_custom_window():
    heatmaps = gaussian((40, 36, 44), (20.3, 15.7, 22.45), 3.0)[None, None]
    points, _ = decode_heatmaps(heatmaps, "soft_argmax", sigma=3.0)
    assert (points[0, 0] - torch.tensor([20.3, 15.7, 22.45])).norm() < 0.05
    blob, _ = decode_heatmaps(heatmaps, "blob")
    assert (blob[0, 0] - torch.tensor([20.3, 15.7, 22.45])).norm() < 0.1
    # a window of 0 is the argmax itself
    points, _ = decode_heatmaps(heatmaps, "soft_argmax", window=0)
    assert torch.equal(points[0, 0], torch.tensor([20.0, 16.0, 22.0]))


def test_soft_argmax_near_the_border_stays_close():
    # the window shrinks to stay symmetric about the peak instead of being cut on one side
    heatmaps = gaussian((64, 64), (6.3, 57.7), 3.0)[None, None]
    points, _ = decode_heatmaps(heatmaps, "soft_argmax", sigma=3.0)
    assert (points[0, 0] - torch.tensor([6.3, 57.7])).norm() < 0.15
    corner, _ = decode_heatmaps(gaussian((64, 64), (0.0, 63.0), 3.0)[None, None], "soft_argmax", sigma=3.0)
    assert corner[0, 0].tolist() == [0.0, 63.0]


def test_missing_and_flat_channels_give_nan_and_zero_confidence():
    shape = (32, 32)
    good = gaussian(shape, (10.4, 20.6), 3.0, peak=0.8)
    with_nan = good.clone()
    with_nan[0, 0] = float("nan")
    with_inf = good.clone()
    with_inf[31, 0] = float("inf")
    with_minus_inf = good.clone()  # a -inf pixel is no evidence for a landmark, nor against it
    with_minus_inf[11, 20] = float("-inf")
    channels = [good, with_minus_inf, torch.zeros(shape), -torch.ones(shape), with_nan, with_inf]
    heatmaps = torch.stack(channels)[None]
    for method in ("soft_argmax", "argmax", "blob"):
        points, confidence = decode_heatmaps(heatmaps, method=method)
        assert torch.isfinite(points[0, :2]).all()
        assert torch.isnan(points[0, 2:]).all(), method
        assert confidence[0, 0] == pytest.approx(good.max().item()) and confidence[0, 1] == confidence[0, 0]
        assert torch.equal(confidence[0, 2:], torch.zeros(4))
        assert (points[0, 1] - points[0, 0]).norm() < 0.2, method


def test_confidence_is_clamped_peak():
    shape = (24, 24)
    heatmaps = torch.stack([gaussian(shape, (8, 8), 2.0, peak=p) for p in (1.7, 0.3, 1e-3)])[None]
    _, confidence = decode_heatmaps(heatmaps, "argmax")
    assert confidence[0].tolist() == pytest.approx([1.0, 0.3, 1e-3], rel=1e-5)


def test_blob_keeps_largest_component():
    shape = (64, 64)
    # a narrow, slightly higher spike and a broad true response: the broad blob is larger
    heatmap = gaussian(shape, (15.0, 15.0), 1.0, peak=1.0) + gaussian(shape, (45.2, 40.7), 5.0, peak=0.95)
    points, confidence = decode_heatmaps(heatmap[None, None], "blob")
    assert (points[0, 0] - torch.tensor([45.2, 40.7])).norm() < 0.1
    assert confidence[0, 0] == pytest.approx(1.0, abs=1e-6)  # confidence is still the global peak
    argmax, _ = decode_heatmaps(heatmap[None, None], "argmax")
    assert torch.equal(argmax[0, 0], torch.tensor([15.0, 15.0]))


def test_soft_argmax_is_vectorised_and_keeps_device_and_grad_free():
    heatmaps = torch.rand(4, 19, 64, 64, requires_grad=True)
    points, confidence = decode_heatmaps(heatmaps, "soft_argmax")
    assert points.shape == (4, 19, 2) and not points.requires_grad
    assert torch.all((points >= 0) & (points <= 63))
    assert confidence.device == heatmaps.device


def test_array_transform_and_numpy_input():
    heatmap = torch.stack([gaussian((48, 40), c, 4.0) for c in [(20.25, 10.5), (30.9, 33.1)]])
    decoder = LandmarkDecoder(method="soft_argmax", sigma=4.0)
    points, confidence = decoder(heatmap.numpy())
    assert isinstance(points, torch.Tensor) and points.shape == (2, 2) and confidence.shape == (2,)
    assert torch.allclose(points, torch.tensor([[20.25, 10.5], [30.9, 33.1]]), atol=0.05)
    with pytest.raises(ValueError, match="method"):
        LandmarkDecoder(method="centroid")
    with pytest.raises(ValueError, match="threshold"):
        LandmarkDecoder(method="blob", threshold=1.0)
    with pytest.raises(ValueError, match="spatial"):
        decoder(torch.zeros(5))


def test_half_precision_heatmap_keeps_sub_pixel_accuracy():
    heatmaps = gaussian((64, 64), (37.3, 20.8), 5.0)[None, None].to(torch.bfloat16)
    points, _ = decode_heatmaps(heatmaps, "soft_argmax", sigma=5.0)
    assert points.dtype == torch.float32
    assert (points[0, 0] - torch.tensor([37.3, 20.8])).norm() < 0.1  # bf16 rounds the samples themselves


def test_integer_heatmap_is_accepted():
    heatmap = torch.zeros(1, 1, 9, 9, dtype=torch.uint8)
    heatmap[0, 0, 4, 6] = 1
    for method in ("soft_argmax", "argmax", "blob"):
        points, confidence = decode_heatmaps(heatmap, method)
        assert points[0, 0].tolist() == [4.0, 6.0] and confidence.item() == 1.0
