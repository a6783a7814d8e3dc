"""NIfTI, MetaImage, NRRD and PNG through load_image / LoadImage + StandardizeImageMeta(d)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mimtl.io import (
    STANDARD_META_KEYS,
    ImageReadError,
    SimpleITKReader,
    load_image,
    register_readers,
)
from mimtl.transforms import StandardizeImageMeta, StandardizeImageMetad

pytestmark = pytest.mark.filterwarnings("ignore:.*nvImageCodec")

X, Y, Z = 6, 5, 4


def volume(dtype=np.int16) -> np.ndarray:
    """An [x, y, z] volume whose every voxel is distinct."""
    return (np.arange(X * Y * Z).reshape(X, Y, Z) * 7 - 300).astype(dtype)


def write_sitk(array_xyz: np.ndarray, spacing, path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.T))  # SimpleITK wants [z, y, x]
    image.SetSpacing([float(s) for s in spacing])
    sitk.WriteImage(image, str(path))


def check_standard(img, shape, spacing, known, source) -> None:
    assert set(STANDARD_META_KEYS) <= set(img.meta), set(STANDARD_META_KEYS) - set(img.meta)
    assert tuple(img.shape) == shape
    np.testing.assert_allclose(img.meta["spacing"], spacing, rtol=1e-6)
    np.testing.assert_allclose(img.pixdim, spacing, rtol=1e-6)
    assert img.meta["spacing_known"] is known
    assert img.meta["spacing_source"] == source
    assert np.isnan(img.meta["window"]).all() or img.meta["modality"]


# ------------------------------------------------------------------------------------- volumes


def test_nifti_3d(tmp_path):
    import nibabel as nib

    data = volume()
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.7, 2.0, 1.0])), tmp_path / "v.nii.gz")
    img = load_image(tmp_path / "v.nii.gz")
    check_standard(img, (1, X, Y, Z), (0.5, 0.7, 2.0), True, "affine")
    np.testing.assert_array_equal(img[0].numpy(), data)
    assert img.meta["bits_stored"] == 16 and img.meta["photometric_interpretation"] == "MONOCHROME2"
    assert img.meta["modality"] == "" and "scl_slope" in img.meta["intensity_convention"]


def test_nifti_2d(tmp_path):
    import nibabel as nib

    data = volume()[:, :, 0]
    nib.save(nib.Nifti1Image(data, np.diag([0.3, 0.4, 1.0, 1.0])), tmp_path / "s.nii")
    img = load_image(tmp_path / "s.nii")
    check_standard(img, (1, X, Y), (0.3, 0.4), True, "affine")
    np.testing.assert_array_equal(img[0].numpy(), data)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_metaimage_and_nrrd_3d(tmp_path, suffix):
    data = volume()
    write_sitk(data, (0.5, 0.7, 2.0), tmp_path / f"v{suffix}")
    img = load_image(tmp_path / f"v{suffix}")  # auto-selected SimpleITKReader
    check_standard(img, (1, X, Y, Z), (0.5, 0.7, 2.0), True, "affine")
    np.testing.assert_array_equal(img[0].numpy(), data)
    assert img.meta["bits_stored"] == 16
    # ITK files are LPS; the affine is RAS like NibabelReader's
    np.testing.assert_allclose(img.meta["affine"][:3, :3], np.diag([-0.5, -0.7, 2.0]))


def test_metaimage_2d_float(tmp_path):
    data = volume(np.float32)[:, :, 1]
    write_sitk(data, (0.25, 0.5), tmp_path / "p.mha")
    img = load_image(tmp_path / "p.mha")
    check_standard(img, (1, X, Y), (0.25, 0.5), True, "affine")
    np.testing.assert_array_equal(img[0].numpy(), data)
    assert img.meta["affine"].shape == (4, 4)


def test_simpleitk_and_nibabel_agree_on_nifti(tmp_path):
    import nibabel as nib

    data = volume()
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    affine[:3, 3] = (10.0, -4.0, 3.0)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "v.nii.gz")
    by_nib = load_image(tmp_path / "v.nii.gz")
    by_sitk = load_image(tmp_path / "v.nii.gz", reader="SimpleITKReader")
    np.testing.assert_array_equal(by_sitk.numpy(), by_nib.numpy())
    np.testing.assert_allclose(by_sitk.affine.numpy(), by_nib.affine.numpy(), atol=1e-5)
    np.testing.assert_allclose(by_sitk.meta["spacing"], by_nib.meta["spacing"])


def test_simpleitk_reader_errors(tmp_path):
    reader = SimpleITKReader()
    with pytest.raises(FileNotFoundError, match="missing.mha"):
        reader.read(tmp_path / "missing.mha")
    (tmp_path / "empty.mha").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.mha: file is empty"):
        reader.read(tmp_path / "empty.mha")
    (tmp_path / "bad.nrrd").write_text("garbage")
    with pytest.raises(ImageReadError, match=r"bad\.nrrd: SimpleITK cannot read it"):
        reader.read(tmp_path / "bad.nrrd")


# ----------------------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("dtype, bits", [(np.uint8, 8), (np.uint16, 16)])
def test_png_grayscale(tmp_path, dtype, bits):
    rows, cols = 7, 9
    pixels = (np.arange(rows * cols).reshape(rows, cols) * (2**bits - 1) // (rows * cols - 1)).astype(dtype)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    check_standard(img, (1, cols, rows), (1.0, 1.0), False, "unknown")
    np.testing.assert_array_equal(img[0].numpy(), pixels.T.astype(np.float32))  # 16-bit values kept
    assert float(img.max()) == 2**bits - 1
    assert img.meta["bits_stored"] == bits and img.meta["photometric_interpretation"] == "MONOCHROME2"
    assert f"{bits}-bit" in img.meta["intensity_convention"]


def test_png_rgb(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "c.png")
    img = load_image(tmp_path / "c.png")
    assert tuple(img.shape) == (3, 9, 7)
    np.testing.assert_array_equal(img.numpy(), np.moveaxis(pixels, -1, 0).transpose(0, 2, 1))
    assert img.meta["photometric_interpretation"] == "RGB" and img.meta["spacing_known"] is False


# ----------------------------------------------------------------------- transforms and wiring


def test_loadimaged_with_standardize_dictionary(tmp_path):
    import nibabel as nib
    from monai.transforms import Compose, LoadImaged

    nib.save(nib.Nifti1Image(volume(), np.diag([0.5, 0.7, 2.0, 1.0])), tmp_path / "v.nii.gz")
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(tmp_path / "x.png")
    pipeline = Compose(
        [
            LoadImaged(keys=["image", "extra"], ensure_channel_first=True, allow_missing_keys=True),
            StandardizeImageMetad(keys=["image", "extra"], allow_missing_keys=True),
        ]
    )
    out = pipeline({"image": str(tmp_path / "v.nii.gz")})
    assert out["image"].meta["spacing_source"] == "affine" and out["image"].meta["spacing_known"] is True
    out = pipeline({"image": str(tmp_path / "x.png")})
    assert out["image"].meta["spacing_source"] == "unknown" and out["image"].meta["spacing_known"] is False
    with pytest.raises(KeyError):
        StandardizeImageMetad(keys="image")({"other": 1})


def test_standardize_plain_array_with_meta_dict_and_legacy_layout():
    meta = {"filename_or_obj": "a.png", "format": "PNG", "mode": "L", "width": 9, "height": 7, "spatial_shape": (9, 7)}
    array = np.zeros((1, 9, 7), np.float32)
    StandardizeImageMeta()(array, meta_dict=meta)
    assert meta["spacing_known"] is False and meta["bits_stored"] == 8
    np.testing.assert_allclose(meta["spacing"], (1.0, 1.0))
    d = StandardizeImageMetad(keys="img")({"img": torch.zeros(1, 9, 7), "img_meta_dict": dict(meta)})
    assert d["img_meta_dict"]["spacing_source"] == "unknown"
    with pytest.raises(ValueError, match="MetaTensor"):
        StandardizeImageMeta()(array)


def test_spacing_follows_resampling(tmp_path):
    import nibabel as nib
    from monai.transforms import Spacing

    nib.save(nib.Nifti1Image(volume(), np.diag([0.5, 0.7, 2.0, 1.0])), tmp_path / "v.nii.gz")
    img = Spacing(pixdim=(1.0, 1.0, 1.0))(load_image(tmp_path / "v.nii.gz"))
    img = StandardizeImageMeta()(img)
    np.testing.assert_allclose(img.meta["spacing"], (1.0, 1.0, 1.0))
    assert img.meta["spacing_known"] is True


def test_pruned_meta_collates_across_formats(tmp_path):
    import nibabel as nib
    from monai.data import list_data_collate
    from test_io_dicom import make_ds, write  # the DICOM writer of the sibling test module

    pixels = np.arange(9 * 7, dtype=np.uint8).reshape(7, 9)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    write(make_ds(pixels, 8, PixelSpacing=[0.2, 0.1]), tmp_path / "x.dcm")
    nib.save(nib.Nifti1Image(pixels.T.astype(np.int16), np.eye(4)), tmp_path / "x.nii.gz")
    images = [load_image(tmp_path / f"x.{ext}", prune_meta=True) for ext in ("png", "dcm", "nii.gz")]
    assert len({frozenset(i.meta) for i in images}) == 1  # identical key sets
    batch = list_data_collate([{"image": i} for i in images])
    assert tuple(batch["image"].shape) == (3, 1, 9, 7)
    assert batch["image"].meta["spacing_source"] == ["unknown", "PixelSpacing", "affine"]


def test_import_changes_no_global_reader_table():
    """Importing every mimtl package leaves MONAI's reader table as it was (checked in a fresh process)."""
    code = (
        "from monai.transforms.io.array import SUPPORTED_READERS as R; before = list(R)\n"
        "import mimtl, mimtl.io, mimtl.data, mimtl.data.adapters, mimtl.sim, mimtl.transforms, mimtl.networks, "
        "mimtl.handlers, mimtl.metrics, mimtl.losses, mimtl.engines, mimtl.inferers, mimtl.bundle, mimtl.cli\n"
        "assert list(R) == before, (before, list(R))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registration_order_and_auto_selection(tmp_path, registered_readers):
    from monai.data import NibabelReader, PILReader
    from monai.transforms import LoadImage
    from monai.transforms.io.array import SUPPORTED_READERS

    from mimtl.io import DicomXrayReader, JSRTReader

    register_readers()  # idempotent
    keys = list(SUPPORTED_READERS)
    assert keys[-1] == "dicomxrayreader" and keys.count("simpleitkreader") == 1 and "jsrtreader" in keys
    assert keys.index("simpleitkreader") < keys.index("nibabelreader")  # NIfTI stays with nibabel
    loader = LoadImage()

    def chosen(name):
        return type(next(r for r in loader.readers[::-1] if r.verify_suffix((str(tmp_path / name),))))

    assert chosen("a.dcm") is DicomXrayReader
    assert chosen("a.nii.gz") is NibabelReader
    assert chosen("a.mha") is SimpleITKReader and chosen("a.nrrd") is SimpleITKReader
    assert chosen("a.png") is PILReader
    (tmp_path / "a.img").write_bytes(bytes(2 * 16 * 16))  # a square 16-bit raw file
    assert chosen("a.img") is JSRTReader


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.dcm", "DicomXrayReader"),
        ("a.nii.gz", "NibabelReader"),
        ("a.mha", "SimpleITKReader"),
        ("a.nrrd", "SimpleITKReader"),
        ("a.png", "PILReader"),
        ("a.jpg", "PILReader"),
        ("a.npy", "NumpyReader"),
        ("series_folder", "PydicomReader"),
    ],
)
def test_medical_image_reader_dispatch(tmp_path, name, expected):
    """The reader configs name sends each file to its format's reader, without a global table."""
    from mimtl.io import MedicalImageReader

    assert type(MedicalImageReader().reader_for(str(tmp_path / name))).__name__ == expected


def test_medical_image_reader_keeps_our_error(tmp_path):
    """A file the format reader refuses fails with that reader's reason; MONAI's other readers are not tried."""
    from monai.transforms import LoadImage

    from mimtl.io import MedicalImageReader

    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom file at all")
    with pytest.raises(ImageReadError, match="broken.dcm"):
        LoadImage(reader=MedicalImageReader, image_only=True)(bad)


def test_medical_image_reader_passes_only_named_options(tmp_path):
    """A DICOM option given to the loader does not reach PIL's ``Image.open`` for a PNG."""
    from monai.transforms import LoadImage

    from mimtl.io import MedicalImageReader

    Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5)).save(tmp_path / "a.png")
    img = LoadImage(reader=MedicalImageReader, image_only=True, normalize=False)(tmp_path / "a.png")
    assert tuple(img.shape) == (5, 4)


def test_load_image_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png: file not found"):
        load_image(tmp_path / "nothing.png")
