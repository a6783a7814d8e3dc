"""The corruption suite (mimtl.transforms.corruptions): each corruption does what it says, the same
seed gives the same bytes, masks follow geometric corruptions, and the calibration table is current."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import SSIMMetric
from scipy import ndimage

from mimtl.transforms import CORRUPTIONS, GEOMETRIC_CORRUPTIONS, Corrupt, Corruptd, corruption_rng
from mimtl.transforms.corruptions import SEVERITY_PARAMS

NOISE = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "poisson_noise")
BLUR = ("gaussian_blur", "glass_blur", "defocus_blur", "motion_blur", "zoom_blur")
PHOTOMETRIC = tuple(c for c in CORRUPTIONS if c not in GEOMETRIC_CORRUPTIONS)


def film(size: int = 128, seed: int = 0) -> np.ndarray:
    """A radiograph-like (1, H, W) float32 image in [0, 1]: a bright body and spine, two dark lungs
    with ribs, and fine texture (a fixed pattern, so the film is the same for a seed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = 0.5 + 0.45 * np.exp(-(((xx - 0.5) / 0.08) ** 2))
    lungs = sum(np.exp(-((((xx - cx) / 0.12) ** 2 + ((yy - 0.5) / 0.25) ** 2) ** 2)) for cx in (0.3, 0.7))
    ribs = 0.08 * np.sin(2 * np.pi * 9 * (yy + 0.1 * xx + 0.05 * rng.standard_normal()))
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5) * 0.15
    x = body - 0.35 * lungs + (ribs + texture) * lungs
    return np.clip(x, 0, 1).astype(np.float32)[None]


def hf_energy(x: np.ndarray) -> float:
    """Mean squared Laplacian: the image's high-frequency energy."""
    return float(np.mean(ndimage.laplace(np.asarray(x, dtype=np.float64)[0]) ** 2))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    metric = SSIMMetric(spatial_dims=2, data_range=1.0)
    return float(metric(torch.as_tensor(a)[None].float(), torch.as_tensor(b)[None].float()))


def square_pair(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A bright square (image) and its mask, off-centre."""
    mask = np.zeros((1, size, size), dtype=np.uint8)
    mask[:, 30:80, 40:100] = 1
    return (0.15 + 0.7 * mask).astype(np.float32), mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_type_dtype_shape_and_range_are_kept(name):
    x = film()
    for img in (x, torch.from_numpy(x), (x * 255).astype(np.uint8), (x * 4095).astype(np.uint16)):
        out = Corrupt(name, 3)(img, image_id="a")
        assert type(out) is type(img) and out.dtype == img.dtype and out.shape == img.shape
        hi = 1.0 if img.dtype in (np.float32, torch.float32) else np.iinfo(np.asarray(img).dtype).max
        assert float(out.min()) >= 0 and float(out.max()) <= hi
        assert not np.array_equal(np.asarray(out), np.asarray(img)), f"{name} left the image unchanged"
    meta = MetaTensor(torch.from_numpy(x), meta={"filename_or_obj": "/data/a/film1.png", "spacing": 0.7})
    out = Corrupt(name, 2)(meta)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "/data/a/film1.png"


def test_value_range_maps_other_intensity_scales():
    x = film()
    unit = Corrupt("gaussian_noise", 2)(x, image_id="a")
    scaled = Corrupt("gaussian_noise", 2, value_range=(-1000, 3000))(x * 4000 - 1000, image_id="a")
    np.testing.assert_allclose((scaled + 1000) / 4000, unit, atol=1e-5)


@pytest.mark.parametrize("name", NOISE)
def test_noise_raises_high_frequency_energy(name):
    x = film()
    energies = [hf_energy(Corrupt(name, s)(x, image_id="a")) for s in (1, 5)]
    assert hf_energy(x) < energies[0] < energies[1]


@pytest.mark.parametrize("name", BLUR)
def test_blur_lowers_high_frequency_energy(name):
    x = film()
    x = np.clip(x + np.random.default_rng(1).normal(0, 0.02, x.shape), 0, 1).astype(np.float32)  # fine texture
    energies = [hf_energy(Corrupt(name, s)(x, image_id="a")) for s in (1, 5)]
    assert energies[1] < energies[0] < hf_energy(x)


def test_photometric_corruptions_change_what_they_say():
    x = film()
    assert Corrupt("brightness", 3)(x, "a").mean() > x.mean() + 0.2
    assert Corrupt("contrast", 3)(x, "a").std() < 0.5 * x.std()
    fog = Corrupt("fog", 3)(x, "a")
    assert fog.std() < x.std() and abs(float(fog.mean()) - float(x.mean())) < 0.2
    # dropout: about the calibrated fraction of pixels set exactly to zero (none were before)
    p = SEVERITY_PARAMS["pixel_dropout"][3]
    zeros = float((Corrupt("pixel_dropout", 4)(x, "a") == 0).mean())
    assert (x == 0).mean() == 0 and 0.7 * p < zeros < 1.3 * p
    # saturation: bright structures clip at white, more with severity; dark pixels stay dark
    clipped = [float((Corrupt("saturate", s)(x, "a") >= 1.0).mean()) for s in (1, 3, 5)]
    assert (x >= 1.0).mean() == 0 and 0 < clipped[0] < clipped[1] < clipped[2]
    dark = x < 0.2
    assert np.all(Corrupt("saturate", 5)(x, "a")[dark] < 0.2 * SEVERITY_PARAMS["saturate"][4] + 1e-6)


def test_impulse_noise_sets_pixels_to_black_and_white():
    x = film()
    out = Corrupt("impulse_noise", 5)(x, "a")
    p = SEVERITY_PARAMS["impulse_noise"][4]
    assert 0.35 * p < (out == 0).mean() < 0.65 * p and 0.35 * p < (out == 1).mean() < 0.65 * p


def test_poisson_noise_is_largest_in_dense_regions_and_shot_noise_in_bright_ones_alike():
    flat = np.concatenate([np.full((1, 64, 128), 0.2), np.full((1, 64, 128), 0.8)], axis=1).astype(np.float32)
    residual = Corrupt("poisson_noise", 3)(flat, "a") - flat
    # quantum noise: dense (bright) tissue stops most photons, so its pixels are the noisiest
    assert residual[:, 64:].std() > 2 * residual[:, :64].std()


def test_jpeg_introduces_8x8_block_artefacts():
    x = film(128)
    residual = Corrupt("jpeg_compression", 5)(x, "a").astype(np.float64)[0]
    jumps = np.abs(np.diff(residual, axis=1)).mean(axis=0)  # jump between columns j and j+1
    at_block_edges = jumps[7::8].mean()  # columns 7|8, 15|16, ...
    inside = np.delete(jumps, np.s_[7::8]).mean()
    assert at_block_edges > 1.5 * inside


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_ssim_falls_with_severity(name):
    x = film(256)
    values = [
        np.mean([ssim(Corrupt(name, s)(film(256, k), f"f{k}"), film(256, k)) for k in range(2)]) for s in range(6)
    ]
    assert values[0] == pytest.approx(1.0)
    assert all(a > b for a, b in itertools.pairwise(values)), values
    assert x.shape == (1, 256, 256)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_same_seed_same_bytes_other_image_or_seed_other_output(name):
    x = film()
    a = Corrupt(name, 4)(x, image_id="CHNCXR_0001_0.png")
    assert Corrupt(name, 4)(x.copy(), image_id="CHNCXR_0001_0.png").tobytes() == a.tobytes()
    deterministic = name in (
        "gaussian_blur",
        "defocus_blur",
        "zoom_blur",
        "contrast",
        "brightness",
        "saturate",
        "jpeg_compression",
    )
    if not deterministic:
        assert not np.array_equal(Corrupt(name, 4)(x, image_id="CHNCXR_0002_0.png"), a)
        assert not np.array_equal(Corrupt(name, 4, seed=1)(x, image_id="CHNCXR_0001_0.png"), a)


def test_image_id_is_the_file_name_of_a_metatensor():
    x = torch.from_numpy(film())
    one = MetaTensor(x, meta={"filename_or_obj": "/site_a/films/CHNCXR_0001_0.png"})
    moved = MetaTensor(x, meta={"filename_or_obj": "/elsewhere/CHNCXR_0001_0.png"})
    other = MetaTensor(x, meta={"filename_or_obj": "/site_a/films/CHNCXR_0002_0.png"})
    a = Corrupt("gaussian_noise", 3)(one)
    assert torch.equal(a, Corrupt("gaussian_noise", 3)(moved))
    assert torch.equal(a, Corrupt("gaussian_noise", 3)(x, image_id="CHNCXR_0001_0.png"))
    assert not torch.equal(a, Corrupt("gaussian_noise", 3)(other))
    # without any id, the pixels seed it: same pixels, same output
    assert np.array_equal(Corrupt("shot_noise", 2)(film()), Corrupt("shot_noise", 2)(film()))


def test_seed_derivation_is_documented_one():
    rng = corruption_rng("film.png", "fog", 2, seed=7)
    import hashlib

    h = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in ("film.png", "fog")]
    expected = np.random.default_rng(np.random.SeedSequence([7, h[0], h[1], 2]))
    assert rng.random() == expected.random()


@pytest.mark.parametrize("name", sorted(GEOMETRIC_CORRUPTIONS))
def test_mask_follows_geometric_corruptions(name):
    image, mask = square_pair()
    d = Corruptd(keys="image", mask_keys="mask", name=name, severity=5, id_key="id")(
        {"image": image, "mask": mask, "id": "case1"}
    )
    moved = d["mask"]
    assert moved.dtype == mask.dtype and set(np.unique(moved)) <= {0, 1}
    assert not np.array_equal(moved, mask), "the corruption did not move the mask"
    bright = d["image"] > 0.5
    if name == "elastic_transform":  # a smooth displacement: the square moved, and the mask with it
        assert dice(bright, moved) > 0.95 and dice(bright, moved) > dice(bright, mask) + 0.05
    else:  # glass: pixels shuffled locally (the film blurred after), so only pixels near the edge change
        assert dice(bright, moved) > 0.8
        near_edge = ndimage.binary_dilation(mask[0], iterations=20) & ~ndimage.binary_erosion(mask[0], iterations=20)
        assert np.all(moved[0][~near_edge] == mask[0][~near_edge]) and np.any(moved[0][near_edge] != mask[0][near_edge])
    # and it is the same warp as the array transform's
    img, warp = Corrupt(name, 5).corrupt(image, "case1")
    np.testing.assert_array_equal(img, d["image"])
    np.testing.assert_array_equal(warp(mask), moved)
    t = warp(torch.from_numpy(mask.astype(np.int64)))
    assert t.dtype == torch.int64 and np.array_equal(t.numpy(), moved)


@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_mask_is_untouched_by_photometric_corruptions(name):
    image, mask = square_pair()
    d = Corruptd(keys="image", mask_keys=["mask"], name=name, severity=5)({"image": image, "mask": mask.copy()})
    np.testing.assert_array_equal(d["mask"], mask)
    assert not np.array_equal(d["image"], image)


def test_dictionary_transform_matches_array_transform():
    x = MetaTensor(torch.from_numpy(film()), meta={"filename_or_obj": "dir/f1.png"})
    d = Corruptd(keys="image", name="speckle_noise", severity=2)({"image": x})
    assert torch.equal(d["image"], Corrupt("speckle_noise", 2)(x))


def test_severity_zero_is_the_clean_image():
    x = film()
    assert Corrupt("fog", 0)(x) is x


@pytest.mark.parametrize(
    ("kwargs", "img", "match"),
    [
        ({"name": "frost", "severity": 1}, None, "name must be one of"),
        ({"name": "fog", "severity": 6}, None, "severity must be an integer from 0"),
        ({"name": "fog", "severity": 2.5}, None, "severity must be an integer"),
        ({"name": "fog", "severity": 1, "value_range": (1, 0)}, None, "value_range must be"),
        ({"name": "fog", "severity": 1}, np.full((1, 8, 8), 200.0, dtype=np.float32), "outside value_range"),
        ({"name": "fog", "severity": 1}, np.zeros((8, 8), dtype=np.float32), r"channel-first 2D image \(C, H, W\)"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, img, match):
    with pytest.raises(ValueError, match=match):
        Corrupt(**kwargs)(img if img is not None else film())


def test_dictionary_transform_names_missing_keys():
    image, mask = square_pair()
    with pytest.raises(KeyError, match="mask key 'label'"):
        Corruptd(keys="image", mask_keys="label", name="glass_blur", severity=1)({"image": image})
    with pytest.raises(KeyError, match="id_key 'case'"):
        Corruptd(keys="image", id_key="case", name="glass_blur", severity=1)({"image": image})
    with pytest.raises(ValueError, match=r"mask must be \(C, 128, 128\)"):
        Corruptd(keys="image", mask_keys="m", name="glass_blur", severity=1)({"image": image, "m": mask[:, :64]})


@pytest.mark.slow
def test_calibration_table_is_current():
    """Recompute three cells of docs/corruptions.md on the demo films (built on first use)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import corruption_calibration as cc

    table = cc.parse_table(cc.DOC.read_text())
    assert list(table) == list(CORRUPTIONS)
    for name in CORRUPTIONS:
        assert [r["parameter"] for r in table[name]] == pytest.approx(SEVERITY_PARAMS[name]), name
        assert all(a["ssim"] > b["ssim"] for a, b in itertools.pairwise(table[name])), name
    films = cc.load_films("test")
    for name, severity in (("shot_noise", 2), ("glass_blur", 4), ("elastic_transform", 5)):
        q = cc.quality(films, name, severity)
        assert q["ssim"] == pytest.approx(table[name][severity - 1]["ssim"], abs=1e-3), (name, severity)
        assert q["psnr"] == pytest.approx(table[name][severity - 1]["psnr"], abs=0.1), (name, severity)
