"""EnsureGrayscale(d): a 2D radiograph comes out as one channel, anything else stops with the file named."""

import logging
import pickle

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged

from mimtl.io import ImageReadError
from mimtl.transforms import EnsureGrayscale, EnsureGrayscaled, ImageFormatError

NAME = "/data/films/patient7.png"


def meta_image(array, name=NAME, **meta) -> MetaTensor:
    return MetaTensor(torch.as_tensor(array), meta={"filename_or_obj": name, **meta})


def gray(h=6, w=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w)).astype(np.float32)


def test_one_channel_passes_through_unchanged():
    img = meta_image(gray()[None], spatial_shape=np.array([6, 5]))
    out = EnsureGrayscale()(img)
    assert out is img  # nothing to do: not even a copy


@pytest.mark.parametrize("channels", [3, 4])
def test_gray_stored_as_rgb_keeps_one_channel_and_warns_once(channels, caplog):
    g = gray()
    planes = [g, g, g] + ([np.full_like(g, 255)] if channels == 4 else [])
    img = meta_image(np.stack(planes), mode="RGBA" if channels == 4 else "RGB")
    t = EnsureGrayscale()
    with caplog.at_level(logging.WARNING, logger="mimtl.transforms.image"):
        out = t(img)
        t(img.clone())
    assert out.shape == (1, 6, 5)
    np.testing.assert_array_equal(out[0].numpy(), g)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == NAME and out.meta["mode"] in ("RGB", "RGBA")
    warnings = [r for r in caplog.records if NAME in r.getMessage()]
    assert len(warnings) == 1 and "grayscale image stored as RGB" in warnings[0].getMessage()


def test_small_jpeg_like_channel_differences_still_count_as_gray():
    g = gray()
    rgb = np.stack([g, np.clip(g + 1, 0, 255), g])  # 1 level of 255: JPEG chroma noise
    assert EnsureGrayscale()(meta_image(rgb)).shape == (1, 6, 5)
    with pytest.raises(ImageFormatError, match="colour"):
        EnsureGrayscale(tolerance=0.0)(meta_image(rgb))


def test_colour_image_raises_naming_the_file_and_what_was_expected():
    g = gray()
    colour = np.stack([g, 255 - g, g / 2])
    with pytest.raises(ImageFormatError) as err:
        EnsureGrayscale()(meta_image(colour))
    msg = str(err.value)
    assert NAME in msg and "colour image" in msg and "grayscale radiograph" in msg and "luminance" in msg
    assert isinstance(err.value, ImageReadError) and isinstance(err.value, ValueError)
    assert err.value.filename == NAME


def test_colour_to_luminance_bt601():
    r, g, b = gray(seed=1), gray(seed=2), gray(seed=3)
    expected = 0.299 * r + 0.587 * g + 0.114 * b
    out = EnsureGrayscale(color="luminance")(meta_image(np.stack([r, g, b, np.full_like(r, 255)])))
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == NAME
    np.testing.assert_allclose(out.numpy()[0], expected, rtol=1e-5)
    # numpy in, numpy out; integer pixels give float luminance
    out_np = EnsureGrayscale(color="luminance")(np.stack([r, g, b]).astype(np.uint8))
    assert isinstance(out_np, np.ndarray) and out_np.shape == (1, 6, 5) and out_np.dtype == np.float32
    np.testing.assert_allclose(out_np[0], expected, rtol=1e-5, atol=1e-3)


def test_gray_plus_alpha_read_by_pil():
    g = gray()
    out = EnsureGrayscale()(meta_image(np.stack([g, np.full_like(g, 255)]), mode="LA"))
    np.testing.assert_array_equal(out.numpy(), g[None])
    with pytest.raises(ImageFormatError, match="has 2 channels"):  # two channels of unknown meaning
        EnsureGrayscale()(meta_image(np.stack([g, g])))


def test_trailing_singleton_depth_is_squeezed_and_spatial_shape_follows():
    img = meta_image(gray()[None, ..., None], name="slice.nii.gz", spatial_shape=np.array([6, 5, 1]))
    out = EnsureGrayscale()(img)
    assert out.shape == (1, 6, 5) and isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == "slice.nii.gz"
    np.testing.assert_array_equal(out.meta["spatial_shape"], [6, 5])


def test_volume_raises_naming_file_and_shape():
    with pytest.raises(ImageFormatError) as err:
        EnsureGrayscale()(meta_image(np.zeros((1, 20, 24, 8), np.float32), name="ct.nii.gz"))
    msg = str(err.value)
    assert "ct.nii.gz" in msg and "(20, 24, 8)" in msg and "3D volume" in msg and "2D radiographs" in msg
    assert "single slice or projection" in msg


@pytest.mark.parametrize("value,word", [(np.nan, "1 NaN"), (np.inf, "1 Inf")])
def test_non_finite_values_raise(value, word):
    a = gray()[None]
    a[0, 2, 3] = value
    with pytest.raises(ImageFormatError, match=word) as err:
        EnsureGrayscale()(meta_image(a))
    assert NAME in str(err.value)
    assert EnsureGrayscale(check_finite=False)(meta_image(a)).shape == (1, 6, 5)


@pytest.mark.parametrize("shape", [(5, 6, 5), (6, 5), (1, 2, 3, 4, 5)])
def test_other_shapes_raise(shape):
    with pytest.raises(ImageFormatError, match=r"channels|shape"):
        EnsureGrayscale()(np.zeros(shape, np.float32), filename="odd.png")


def test_array_variant_takes_a_filename_for_messages():
    colour = np.stack([gray(seed=1), gray(seed=2), gray(seed=3)])
    with pytest.raises(ImageFormatError, match="given.png"):
        EnsureGrayscale()(torch.as_tensor(colour), filename="given.png")
    with pytest.raises(ImageFormatError, match="<image>"):
        EnsureGrayscale()(colour)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="color"):
        EnsureGrayscale(color="rgb")
    with pytest.raises(ValueError, match="tolerance"):
        EnsureGrayscale(tolerance=1.5)


def test_error_survives_pickling_as_in_dataloader_workers():
    err = ImageFormatError("a.png", "is a colour image")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ImageFormatError and back.filename == "a.png" and str(back) == "a.png: is a colour image"


def test_dictionary_variant(tmp_path):
    g = gray()
    data = {"image": meta_image(np.stack([g, g, g])), "label": [0, 1]}
    out = EnsureGrayscaled("image")(data)
    assert out["image"].shape == (1, 6, 5) and out["label"] == [0, 1]
    assert data["image"].shape == (3, 6, 5)  # the input dict is not modified
    with pytest.raises(KeyError):
        EnsureGrayscaled(["image", "mask"])(data)
    assert EnsureGrayscaled(["image", "mask"], allow_missing_keys=True)(data)["image"].shape == (1, 6, 5)
    # legacy layout: plain array + "<key>_meta_dict" names the file
    colour = np.stack([gray(seed=1), gray(seed=2), gray(seed=3)])
    with pytest.raises(ImageFormatError, match="legacy.png"):
        EnsureGrayscaled("image")({"image": colour, "image_meta_dict": {"filename_or_obj": "legacy.png"}})
    out = EnsureGrayscaled("image", color="luminance")({"image": colour})
    assert out["image"].shape == (1, 6, 5)


def test_with_load_image_on_real_files(tmp_path):
    import nibabel as nib
    from PIL import Image

    g = (gray(40, 48) % 256).astype(np.uint8)
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "rgb_gray.png")
    Image.fromarray(np.stack([g, 255 - g, g], -1)).save(tmp_path / "colour.png")
    Image.fromarray(g).convert("LA").save(tmp_path / "gray_alpha.png")
    nib.save(nib.Nifti1Image(g[..., None].astype(np.float32), np.eye(4)), tmp_path / "slice.nii.gz")
    load = Compose([LoadImaged("image", ensure_channel_first=True), EnsureGrayscaled("image")])
    for name in ("rgb_gray.png", "gray_alpha.png"):
        out = load({"image": str(tmp_path / name)})["image"]
        assert out.shape == (1, 48, 40), name  # PIL gives (W, H)
        np.testing.assert_array_equal(out[0].numpy(), g.T)
    assert load({"image": str(tmp_path / "slice.nii.gz")})["image"].shape == (1, 40, 48)
    with pytest.raises(RuntimeError) as err:  # MONAI's Compose wraps the error; the cause is ours
        load({"image": str(tmp_path / "colour.png")})
    assert isinstance(err.value.__cause__, ImageFormatError) and "colour.png" in str(err.value.__cause__)
