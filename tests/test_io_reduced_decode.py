"""Decoding full-size films at reduced size (``target_size``) keeps the file's geometry.

Films are simulated here at the sizes real radiographs come in: a 2048 px JPEG 2000 DICOM, the
same film uncompressed, a 1500 px JPEG. A bright blob sits at a known, non-integer position
(file pixels); the landmark bundle's own preprocessing (``load`` + ``intensity`` of its
``common.yaml``, inference's ``decode_size``) brings each film to the 256 px network grid, the
bundle's decoder reads the blob back as a landmark, and the point must land on the blob in the
file's pixels and in mm, whether the film was decoded whole or reduced.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features
from pydicom import uid
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.pixels import get_decoder, get_encoder

from mimtl.io import DicomXrayReader, MedicalImageReader
from mimtl.io.dicom import reduced_grid_affine

pytestmark = pytest.mark.filterwarnings("ignore:.*nvImageCodec")

BUNDLE = "xray_landmark_detection"
SPACING_MM = 0.15  # a 2048 px detector at 0.15 mm: a 307 mm field
BLOB = (1013.3, 700.7)  # (x, y) in file pixels of a 2048 x 1792 (columns x rows) film
BLOB_SIGMA = 48.0  # file pixels: 6 px in the 256 px grid, about the bundle's heatmap sigma

needs_j2k = pytest.mark.skipif(
    not (features.check("jpg_2000") and get_encoder(uid.JPEG2000Lossless).is_available),
    reason="JPEG 2000 needs Pillow built with OpenJPEG (reduced decode) and pylibjpeg-openjpeg (encoder)",
)
needs_jpeg = pytest.mark.skipif(not features.check("jpg"), reason="Pillow was built without libjpeg")


def blob_film(rows: int, cols: int, centre: tuple[float, float], sigma: float, peak: float) -> np.ndarray:
    """(rows, cols) film: a Gaussian blob of ``peak`` at ``centre`` = (x, y) on a faint ramp."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    blob = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2))
    return peak * blob


def write_dicom(pixels: np.ndarray, path: Path, bits: int = 12, tsyntax=None, spacing: float = SPACING_MM) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelSpacing = [spacing, spacing]
    ds.PixelData = np.round(pixels).astype(np.uint16).tobytes()
    if tsyntax is not None:
        ds.compress(tsyntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_jpeg_dicom(pixels: np.ndarray, path: Path) -> Path:
    """A baseline (8-bit lossy) JPEG DICOM; pydicom has no encoder for it, so Pillow's codestream is wrapped."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    ds = dcmread(write_dicom(np.zeros((2, 2)), path, bits=8))
    buffer = io.BytesIO()
    Image.fromarray(np.round(pixels).astype(np.uint8)).save(buffer, format="JPEG", quality=95)
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8
    ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_jpeg(pixels: np.ndarray, path: Path) -> Path:
    Image.fromarray(np.round(pixels).astype(np.uint8)).save(path, format="JPEG", quality=95)
    return path


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> dict[str, tuple[Path, tuple[float, float], float | None]]:
    """name -> (file, blob centre (x, y) in file px, spacing in mm or None)."""
    folder = tmp_path_factory.mktemp("full_size")
    out = {}
    film = blob_film(1792, 2048, BLOB, BLOB_SIGMA, 4000.0) + 50.0
    out["dicom_raw_2048"] = (write_dicom(film, folder / "raw.dcm"), BLOB, SPACING_MM)
    if features.check("jpg_2000") and get_encoder(uid.JPEG2000Lossless).is_available:
        out["dicom_j2k_2048"] = (write_dicom(film, folder / "j2k.dcm", tsyntax=uid.JPEG2000Lossless), BLOB, SPACING_MM)
    scale = 1500 / 2048
    centre = ((BLOB[0] + 0.5) * scale - 0.5, (BLOB[1] + 0.5) * scale - 0.5)
    small = blob_film(1313, 1500, centre, BLOB_SIGMA * scale, 240.0) + 8.0
    out["jpeg_1500"] = (write_jpeg(small, folder / "film.jpg"), centre, 0.2)
    out["dicom_jpeg_1500"] = (write_jpeg_dicom(small, folder / "jpeg.dcm"), centre, SPACING_MM)
    return out


def landmark_chain(decode_size):
    """The landmark bundle's inference preprocessing (load, overlay copy, intensity) and its decoder."""
    import mimtl

    bundle = mimtl.load_bundle(BUNDLE)
    parser = bundle.parser("inference", decode_size=decode_size)
    return parser.get_parsed_content("preprocessing"), parser.get_parsed_content("decode")


def decode_blob(path: Path, spacing: float | None, decode_size) -> dict:
    preprocessing, decode = landmark_chain(decode_size)
    item = {"image": str(path)}
    if spacing is not None and path.suffix == ".jpg":
        item["spacing"] = [spacing, spacing]  # a JPEG carries none: the datalist gives it
    out = preprocessing(item)
    image = out["image"]
    heatmap = image.as_tensor().clone()  # the blob itself, as the heatmap of one landmark
    return decode({"image": image, "pred": heatmap}) | {"_image": image, "_overlay": out["overlay_image"]}


@pytest.mark.parametrize(
    "name", ["dicom_raw_2048", pytest.param("dicom_j2k_2048", marks=needs_j2k), "jpeg_1500", "dicom_jpeg_1500"]
)
@pytest.mark.parametrize("decode_size", [None, [256, 256]], ids=["whole", "reduced"])
def test_points_come_back_in_file_pixels_and_mm(films, name, decode_size):
    path, centre, spacing = films[name]
    out = decode_blob(path, spacing, decode_size)
    assert tuple(out["_image"].shape) == (1, 256, 256)
    point = out["pred_points"][0].numpy()
    np.testing.assert_allclose(point, centre, atol=0.5)  # file pixels, (x, y)
    assert out["unit"] == "mm"
    np.testing.assert_allclose(out["pred_coords"][0].numpy(), np.asarray(centre) * spacing, atol=0.5 * spacing)
    # the overlay copy keeps the file's size, so LandmarkWriter scales the points onto it
    file_size = Image.open(path).size if path.suffix == ".jpg" else None
    shape = [int(v) for v in np.asarray(out["_overlay"].meta["spatial_shape"]).ravel()]
    if file_size is not None:
        assert shape == list(file_size)
    else:
        assert shape == ([2048, 1792] if "2048" in name else [1500, 1313])


@pytest.mark.parametrize(
    "name, scale",
    [
        pytest.param("dicom_j2k_2048", 4, marks=needs_j2k),
        ("jpeg_1500", 4),
        ("dicom_jpeg_1500", 4),
        ("dicom_raw_2048", 7),  # 1792 // 256: whole decode, then 7 x 7 block means
    ],
)
def test_reduced_decode_is_smaller_and_says_so(films, name, scale):
    """JPEG 2000 levels and JPEG DCT scaling decode the smallest size >= 256 px; uncompressed decodes
    whole and averages the largest blocks that keep 256 px."""
    path, _, _ = films[name]
    reader = MedicalImageReader(target_size=256)
    array, meta = reader.get_data(reader.read(path))
    whole_reader = MedicalImageReader()
    whole, whole_meta = whole_reader.get_data(whole_reader.read(path))
    assert array.shape == tuple(-(-s // scale) for s in whole.shape)
    assert min(array.shape) >= 256
    np.testing.assert_array_equal(meta["spatial_shape"], whole_meta["spatial_shape"])
    np.testing.assert_array_equal(meta["decode_scale"], [scale, scale])
    np.testing.assert_allclose(meta["original_affine"], whole_meta.get("original_affine", np.eye(4)))
    # the reduced film is the whole one, low-passed: block means of the whole decode agree
    n0, n1 = whole.shape[0] // scale, whole.shape[1] // scale  # whole blocks only
    blocks = whole[: n0 * scale, : n1 * scale].reshape(n0, scale, n1, scale).mean(axis=(1, 3))
    value_range = float(whole.max() - whole.min())
    assert np.abs(array[:n0, :n1].astype(np.float64) - blocks).mean() < 0.01 * value_range


@needs_j2k
def test_j2k_levels_stop_at_the_target_size(films):
    path, _, _ = films["dicom_j2k_2048"]
    # [x, y] targets on a 2048 x 1792 film: a side may not drop below its target
    cases = [
        (256, (512, 448)),
        (200, (256, 224)),
        ([1024, 896], (1024, 896)),
        (1024, (2048, 1792)),
        (1500, (2048, 1792)),
    ]
    for target, expected in cases:
        array, meta = DicomXrayReader(target_size=target).get_data(DicomXrayReader().read(path))
        assert array.shape == expected, target
        reduced = 2048 // expected[0]
        if reduced > 1:
            expected_affine = reduced_grid_affine(np.diag([SPACING_MM, SPACING_MM, 1, 1]), [reduced] * 2, [0, 0])
            np.testing.assert_allclose(meta["affine"], expected_affine)
            np.testing.assert_allclose(meta["spacing"], [SPACING_MM, SPACING_MM])
        else:
            assert "decode_scale" not in meta


@needs_j2k
def test_j2k_without_pillow_codec_decodes_whole_and_says_so(films, monkeypatch, caplog):
    """Pillow without OpenJPEG: the film decodes whole through pydicom's plugins, said once in the log."""
    import mimtl.io.dicom as dicom_module

    path, _, _ = films["dicom_j2k_2048"]
    monkeypatch.setattr(features, "check", lambda name: name != "jpg_2000")
    monkeypatch.setattr(dicom_module, "_REDUCED_WARNED", set())
    reader = DicomXrayReader(target_size=256)
    with caplog.at_level(logging.WARNING, logger="mimtl.io.dicom"):
        array, meta = reader.get_data(reader.read(path))
        reader.get_data(reader.read(path))
    assert array.shape == (293, 256)  # decoded whole by pydicom's plugins, then 7 x 7 block means
    np.testing.assert_array_equal(meta["decode_scale"], [7, 7])
    said = [r.getMessage() for r in caplog.records if "decoded whole" in r.getMessage()]
    assert len(said) == 1 and "JPEG 2000" in said[0] and "OpenJPEG" in said[0]


def test_missing_decoder_still_names_the_file(films, monkeypatch):
    """Where no plugin decodes the file at all, the reduced path gives way to the usual clear error."""
    from mimtl.io import MissingDecoderError

    if "dicom_j2k_2048" not in films:
        pytest.skip("no JPEG 2000 encoder to write the film")
    path, _, _ = films["dicom_j2k_2048"]
    decoder = get_decoder(uid.JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg-openjpeg>=2.0",)})
    monkeypatch.setattr(features, "check", lambda name: name != "jpg_2000")
    with pytest.raises(MissingDecoderError, match=str(path.name)):
        DicomXrayReader(target_size=256).get_data(DicomXrayReader().read(path))


def test_small_or_uncompressed_files_are_untouched(tmp_path):
    """A film already near the target size and a PNG: the reduced reader gives what the whole one does."""
    png = tmp_path / "small.png"
    Image.fromarray((np.arange(300 * 320) % 251).astype(np.uint8).reshape(300, 320)).save(png)
    jpg = write_jpeg(blob_film(400, 420, (200.0, 190.0), 30.0, 250.0), tmp_path / "small.jpg")
    for path in (png, jpg):
        a, ma = MedicalImageReader(target_size=256).get_data(MedicalImageReader().read(path))
        b, _mb = MedicalImageReader().get_data(MedicalImageReader().read(path))
        np.testing.assert_array_equal(a, b)
        assert "decode_scale" not in ma


def test_reduced_grid_affine_maps_block_centres():
    affine = np.diag([0.2, 0.3, 1.0, 1.0])
    grid = reduced_grid_affine(affine, [4, 4], [1.5, 1.5])
    # reduced pixel (0, 0) covers file pixels 0..3: its centre is file pixel 1.5
    np.testing.assert_allclose(grid @ [0, 0, 0, 1], affine @ [1.5, 1.5, 0, 1])
    np.testing.assert_allclose(grid @ [2, 1, 0, 1], affine @ [9.5, 5.5, 0, 1])
    assert torch.is_tensor(torch.as_tensor(grid))


def test_block_means_commute_with_rescale_and_polarity(tmp_path):
    """Signed, rescaled MONOCHROME1 data averaged before the LUTs equals the whole film's block means after them."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(-2000, 2000, size=(600, 520)).astype(np.int16)
    path = write_dicom(np.zeros((2, 2)), tmp_path / "signed.dcm")
    from pydicom import dcmread

    ds = dcmread(path)
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    whole, _ = DicomXrayReader().get_data(DicomXrayReader().read(path))  # [x, y] = (520, 600)
    reduced, meta = DicomXrayReader(target_size=[130, 150]).get_data(DicomXrayReader().read(path))
    assert reduced.shape == (130, 150)
    np.testing.assert_array_equal(meta["decode_scale"], [4, 4])
    blocks = whole.reshape(130, 4, 150, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(reduced, blocks, atol=1e-5)
    # block n is centred on file pixel 4n + 1.5, in mm through the file's spacing
    np.testing.assert_allclose(meta["affine"] @ [1, 2, 0, 1], meta["original_affine"] @ [5.5, 9.5, 0, 1])


def test_a_modality_lut_table_keeps_the_whole_decode(tmp_path):
    """A Modality LUT table maps stored integers: no block means before it, the film decodes whole."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset

    path = write_dicom(np.arange(600 * 520).reshape(600, 520) % 4096, tmp_path / "lut.dcm")
    ds = dcmread(path)
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.ModalityLUTType = "US"
    lut.LUTData = (np.arange(4096, dtype=np.uint16) * 16).tobytes()
    ds.ModalityLUTSequence = [lut]
    ds.save_as(path, enforce_file_format=True)
    array, meta = DicomXrayReader(target_size=128).get_data(DicomXrayReader().read(path))
    assert array.shape == (520, 600) and "decode_scale" not in meta
