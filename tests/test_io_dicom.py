"""DicomXrayReader: intensities, geometry, compression, errors and MONAI registration.

Every DICOM here is written by the test with pydicom, so expected values are known exactly.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder

from mimtl.io import (
    STANDARD_META_KEYS,
    DicomXrayReader,
    ImageNotFoundError,
    ImageReadError,
    MedicalImageReader,
    MissingDecoderError,
    load_image,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*nvImageCodec")

ROWS, COLS = 40, 48  # non-square so that a transposition shows; >= 32 for the JPEG 2000 encoder


def gradient(bits: int = 12, signed: bool = False, rows: int = ROWS, cols: int = COLS, seed: int = 0) -> np.ndarray:
    """Pixels spanning the full stored range (both ends included), in a dtype pydicom writes."""
    rng = np.random.default_rng(seed)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    values = rng.integers(lo, hi + 1, size=(rows, cols))
    values[0, 0], values[-1, -1] = lo, hi
    dtype = (np.int8 if signed else np.uint8) if bits <= 8 else (np.int16 if signed else np.uint16)
    return values.astype(dtype)


def make_ds(
    pixels: np.ndarray | None,
    bits_stored: int = 12,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    modality: str = "DX",
    sop_class: str = uid.DigitalXRayImageStorageForPresentation,
    **attrs,
) -> FileDataset:
    """A minimal Part 10 data set; ``pixels`` is (Rows, Columns), or None for no Pixel Data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset("test", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 8 if bits_stored <= 8 else 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = int(signed)
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def read(path: Path, **kwargs) -> tuple[np.ndarray, dict]:
    reader = DicomXrayReader(**kwargs)
    return reader.get_data(reader.read(path))


def stored_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, as a fraction of the output range."""
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


# ---------------------------------------------------------------------------------- intensities


@pytest.mark.parametrize("bits", [8, 10, 12, 14, 16])
@pytest.mark.parametrize("signed", [False, True])
def test_bits_stored_values_exact(tmp_path, bits, signed):
    pixels = gradient(bits, signed)
    path = write(make_ds(pixels, bits, signed), tmp_path / "x.dcm")
    raw, meta = read(path, normalize=False)
    assert raw.dtype == np.float32 and raw.shape == (COLS, ROWS)
    np.testing.assert_array_equal(raw, pixels.T.astype(np.float32))
    lo, hi = stored_range(bits, signed)
    norm, meta = read(path)
    np.testing.assert_allclose(norm, ((pixels.astype(np.float64) - lo) / (hi - lo)).T, atol=1e-6)
    assert norm.min() == 0.0 and norm.max() == 1.0  # the full stored range is present
    assert meta["bits_stored"] == bits
    assert meta["intensity_convention"] == "bright=dense, [0,1] over the Bits Stored range"


def test_signed_12_bit_without_sign_extension(tmp_path):
    # Signed 12-bit values stored as raw 12-bit two's complement in 16-bit words (high bits zero).
    values = np.array([[-2048, -1, 0, 1, 2047]], dtype=np.int16)
    stored = (values.view(np.uint16) & 0x0FFF).astype(np.uint16)
    path = write(make_ds(stored, 12, signed=True), tmp_path / "s.dcm")
    raw, _ = read(path, normalize=False)
    np.testing.assert_array_equal(raw[:, 0], values[0])


def test_normalization_uses_bit_depth_not_image_range(tmp_path):
    pixels = np.full((ROWS, COLS), 1000, dtype=np.uint16)
    pixels[:, :10] = 3000
    out, _ = read(write(make_ds(pixels, 12), tmp_path / "x.dcm"))
    np.testing.assert_allclose(np.unique(out), [1000 / 4095, 3000 / 4095], rtol=1e-6)


@pytest.mark.parametrize("with_window", [False, True])
def test_monochrome1_matches_monochrome2(tmp_path, with_window):
    anatomy = gradient(12)
    mono2 = make_ds(anatomy, 12, photometric="MONOCHROME2")
    mono1 = make_ds((4095 - anatomy).astype(np.uint16), 12, photometric="MONOCHROME1")
    if with_window:
        # LINEAR_EXACT mirrors exactly: centre c on MONOCHROME2 is 4095 - c on MONOCHROME1
        mono2.WindowCenter, mono2.WindowWidth, mono2.VOILUTFunction = 1500, 2000, "LINEAR_EXACT"
        mono1.WindowCenter, mono1.WindowWidth, mono1.VOILUTFunction = 4095 - 1500, 2000, "LINEAR_EXACT"
    p2, p1 = write(mono2, tmp_path / "m2.dcm"), write(mono1, tmp_path / "m1.dcm")
    for normalize in (True, False):
        a2, meta2 = read(p2, normalize=normalize)
        a1, meta1 = read(p1, normalize=normalize)
        np.testing.assert_allclose(a1, a2, atol=1e-4 if normalize else 1e-2)
    assert meta1["photometric_interpretation"] == "MONOCHROME1"  # as stored; output is inverted
    assert meta1["intensity_convention"].startswith("bright=dense")
    # bright = dense: the densest anatomy (highest MONOCHROME2 value) is the brightest output
    a1, _ = read(p1)
    assert a1.T[anatomy == anatomy.max()].min() == a1.max()
    # opting out keeps the stored polarity
    kept, meta = read(p1, invert_monochrome1=False, apply_voi=False)
    np.testing.assert_allclose(kept, (4095 - anatomy.T) / 4095, atol=1e-6)
    assert "MONOCHROME1, not inverted" in meta["intensity_convention"]


def test_rescale_slope_intercept(tmp_path):
    pixels = gradient(12)
    path = write(make_ds(pixels, 12, RescaleSlope=2, RescaleIntercept=-1024), tmp_path / "r.dcm")
    raw, _ = read(path, normalize=False)
    np.testing.assert_array_equal(raw, (pixels.T.astype(np.float64) * 2 - 1024).astype(np.float32))
    norm, meta = read(path)
    np.testing.assert_allclose(norm, pixels.T / 4095, atol=1e-6)  # the rescaled Bits Stored range
    assert "Rescale" in meta["intensity_convention"]


def test_window_center_width(tmp_path):
    pixels = gradient(12)
    ds = make_ds(pixels, 12, WindowCenter=[1800, 600], WindowWidth=[1200, 400])  # two windows: first wins
    path = write(ds, tmp_path / "w.dcm")
    out, meta = read(path)
    np.testing.assert_allclose(out, linear_window(pixels.T.astype(np.float64), 1800, 1200), atol=1e-6)
    np.testing.assert_array_equal(meta["window"], [1800, 1200])
    assert meta["intensity_convention"] == "bright=dense, [0,1] over the VOI window"
    raw, _ = read(path, normalize=False)  # pydicom maps the window onto the stored range
    np.testing.assert_allclose(raw, linear_window(pixels.T.astype(np.float64), 1800, 1200) * 4095, atol=2e-3)
    # apply_voi=False ignores the window
    plain, meta = read(path, apply_voi=False)
    np.testing.assert_allclose(plain, pixels.T / 4095, atol=1e-6)
    assert np.isnan(meta["window"]).all()


def test_window_after_rescale(tmp_path):
    pixels = gradient(12)
    ds = make_ds(pixels, 12, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    out, _ = read(write(ds, tmp_path / "w.dcm"))
    np.testing.assert_allclose(out, linear_window(pixels.T - 1024.0, 40, 400), atol=1e-6)


def test_invalid_window_is_ignored_with_warning(tmp_path):
    pixels = gradient(12)
    path = write(make_ds(pixels, 12, WindowCenter=100, WindowWidth=0), tmp_path / "w.dcm")
    with pytest.warns(UserWarning, match="Window Width"):
        out, meta = read(path)
    np.testing.assert_allclose(out, pixels.T / 4095, atol=1e-6)
    assert np.isnan(meta["window"]).all()


@pytest.mark.parametrize("lut_vr", ["US", "OW"])
def test_voi_lut_sequence(tmp_path, lut_vr):
    pixels = gradient(12)
    # 8-bit LUT with 3000 entries starting at 500 (pydicom 3.0's own lookup overflows for this)
    table = np.clip(np.arange(3000) // 10, 0, 255).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [3000, 500, 8]
    if lut_vr == "US":
        item.add_new(0x00283006, "US", [int(v) for v in table])
    else:
        item.add_new(0x00283006, "OW", table.astype("<u2").tobytes())
    path = write(make_ds(pixels, 12, VOILUTSequence=[item], WindowCenter=1, WindowWidth=2), tmp_path / "v.dcm")
    expected = table[np.clip(pixels.T.astype(np.int64) - 500, 0, 2999)]
    raw, meta = read(path, normalize=False)
    np.testing.assert_array_equal(raw, expected)
    out, meta = read(path)  # the LUT wins over the window; [0, 1] over the LUT's output range
    np.testing.assert_allclose(out, (expected - table.min()) / (table.max() - table.min()), atol=1e-6)
    assert meta["intensity_convention"] == "bright=dense, [0,1] over the VOI LUT output range"
    assert np.isnan(meta["window"]).all()


def test_modality_lut_sequence(tmp_path):
    pixels = gradient(10)
    table = (1023 - np.arange(1024)) * 4  # 12-bit entries (pydicom 3.0 cannot build a uint12 dtype)
    item = Dataset()
    item.LUTDescriptor = [1024, 0, 12]
    item.add_new(0x00283006, "US", [int(v) for v in table])
    item.ModalityLUTType = "OD"
    path = write(make_ds(pixels, 10, ModalityLUTSequence=[item]), tmp_path / "m.dcm")
    raw, _ = read(path, normalize=False)
    np.testing.assert_array_equal(raw, table[pixels.T])
    out, _ = read(path)
    np.testing.assert_allclose(out, table[pixels.T] / 4095, atol=1e-6)


# ------------------------------------------------------------------------------------- geometry


def test_axis_order_matches_png(tmp_path):
    pixels = gradient(8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    write(make_ds(pixels, 8), tmp_path / "x.dcm")
    from monai.transforms import LoadImage

    png = LoadImage(image_only=True)(tmp_path / "x.png")
    dcm = LoadImage(image_only=True, reader="mimtl.io.DicomXrayReader", normalize=False)(tmp_path / "x.dcm")
    assert tuple(dcm.shape) == tuple(png.shape) == (COLS, ROWS)
    np.testing.assert_array_equal(dcm.numpy(), png.numpy())
    np.testing.assert_array_equal(dcm.meta["spatial_shape"], png.meta["spatial_shape"])


@pytest.mark.parametrize(
    "attrs, spacing, source",
    [
        ({"PixelSpacing": [0.2, 0.1]}, (0.1, 0.2), "PixelSpacing"),
        ({"PixelSpacing": [0.2, 0.1], "ImagerPixelSpacing": [0.5, 0.5]}, (0.1, 0.2), "PixelSpacing"),
        ({"ImagerPixelSpacing": [0.3, 0.15]}, (0.15, 0.3), "ImagerPixelSpacing"),
        (
            {"ImagerPixelSpacing": [0.3, 0.15], "EstimatedRadiographicMagnificationFactor": 1.5},
            (0.1, 0.2),
            "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
        ),
        (
            {"ImagerPixelSpacing": [0.3, 0.15], "EstimatedRadiographicMagnificationFactor": 0},
            (0.15, 0.3),
            "ImagerPixelSpacing",
        ),
        ({"NominalScannedPixelSpacing": [0.25, 0.05]}, (0.05, 0.25), "NominalScannedPixelSpacing"),
        ({"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.3, 0.15]}, (0.15, 0.3), "ImagerPixelSpacing"),
        (
            {"PixelSpacing": [-0.1, 0.1], "NominalScannedPixelSpacing": [0.2, 0.2]},
            (0.2, 0.2),
            "NominalScannedPixelSpacing",
        ),
        ({"PixelSpacing": [0, 0]}, (1.0, 1.0), "unknown"),
        ({}, (1.0, 1.0), "unknown"),
    ],
)
def test_spacing_rules(tmp_path, attrs, spacing, source):
    path = write(make_ds(gradient(12), 12, **attrs), tmp_path / "s.dcm")
    img = load_image(path)
    assert tuple(img.shape) == (1, COLS, ROWS)
    np.testing.assert_allclose(img.meta["spacing"], spacing)
    np.testing.assert_allclose(img.pixdim, spacing)  # the affine carries it, in array axis order
    assert img.meta["spacing_source"] == source
    assert img.meta["spacing_known"] is (source != "unknown")


def test_garbage_pixel_spacing_counts_as_absent(tmp_path):
    ds = make_ds(gradient(12), 12, PixelSpacing=[9.87, 9.87], ImagerPixelSpacing=[0.3, 0.15])
    path = write(ds, tmp_path / "g.dcm")
    data = path.read_bytes()
    assert data.count(b"9.87\\9.87") == 1
    path.write_bytes(data.replace(b"9.87\\9.87", b"ab.c\\d.ef"))  # still VR DS, now unparseable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid DS
        _, meta = read(path)
    assert meta["spacing_source"] == "ImagerPixelSpacing"
    np.testing.assert_allclose(meta["spacing"], (0.15, 0.3))


def test_reverse_indexing_false_gives_row_major(tmp_path):
    pixels = gradient(12)
    raw, meta = read(
        write(make_ds(pixels, 12, PixelSpacing=[0.2, 0.1]), tmp_path / "x.dcm"), normalize=False, reverse_indexing=False
    )
    np.testing.assert_array_equal(raw, pixels)
    np.testing.assert_allclose(meta["spacing"], (0.2, 0.1))


def test_metadata_keys_and_types(tmp_path):
    ds = make_ds(gradient(12), 12, PixelSpacing=[0.2, 0.1], WindowCenter=2000, WindowWidth=1000)
    path = write(ds, tmp_path / "x.dcm")
    _, meta = read(path)
    assert set(STANDARD_META_KEYS) <= set(meta)
    assert meta["filename_or_obj"] == str(path)
    assert np.isnan(meta["original_channel_dim"])
    np.testing.assert_array_equal(meta["spatial_shape"], (COLS, ROWS))
    np.testing.assert_allclose(meta["affine"], np.diag([0.1, 0.2, 1, 1]))
    assert meta["modality"] == "DX" and meta["photometric_interpretation"] == "MONOCHROME2"
    assert type(meta["spacing_known"]) is bool and type(meta["bits_stored"]) is int


# ---------------------------------------------------------------------------------- compression


def _jpeg_lossless_sv1(pixels: np.ndarray, precision: int) -> bytes:
    """A minimal JPEG lossless encoder (ITU T.81 process 14, predictor 1, one Huffman table)."""
    x = pixels.astype(np.int64) & ((1 << precision) - 1)  # signed data: its two's complement bits
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = (x - pred) % 65536
    diff[diff > 32768] -= 65536  # T.81 H.1.2: differences are taken modulo 2**16
    bits = []
    for d in diff.reshape(-1).tolist():
        ssss = abs(d).bit_length() if d != 32768 else 16
        bits.append(format(ssss, "05b"))  # 17 categories, all with 5-bit codes
        if 0 < ssss < 16:
            bits.append(format(d if d > 0 else (d - 1) & ((1 << ssss) - 1), f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    scan = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        scan.append(byte)
        if byte == 0xFF:
            scan.append(0x00)  # byte stuffing
    rows, cols = pixels.shape
    sof = bytes([0xFF, 0xC3, 0, 11, precision, rows >> 8, rows & 255, cols >> 8, cols & 255, 1, 1, 0x11, 0])
    counts = [0] * 16
    counts[4] = 17
    dht = bytes([0xFF, 0xC4, 0, 36, 0x00, *counts, *range(17)])
    sos = bytes([0xFF, 0xDA, 0, 8, 1, 1, 0x00, 1, 0, 0])
    return b"\xff\xd8" + sof + dht + sos + bytes(scan) + b"\xff\xd9"


def _encapsulated(
    pixels: np.ndarray, codestream: bytes, tsyntax: str, bits: int, signed: bool = False, **attrs
) -> FileDataset:
    """A data set whose single frame is ``codestream``; ``pixels`` only sets Rows/Columns."""
    ds = make_ds(pixels, bits, signed, **attrs)
    ds.file_meta.TransferSyntaxUID = tsyntax
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    return ds


@pytest.mark.parametrize("bits, signed", [(8, False), (12, False), (16, False), (16, True)])
def test_rle_lossless(tmp_path, bits, signed):
    pixels = gradient(bits, signed)
    ds = make_ds(pixels, bits, signed)
    ds.compress(uid.RLELossless)
    path = write(ds, tmp_path / "rle.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == uid.RLELossless
    raw, _ = read(path, normalize=False)
    np.testing.assert_array_equal(raw, pixels.T)


@pytest.mark.parametrize("bits, signed", [(8, False), (12, False), (16, True)])
def test_jpeg2000_lossless(tmp_path, bits, signed):
    pixels = gradient(bits, signed)
    ds = make_ds(pixels, bits, signed)
    ds.compress(uid.JPEG2000Lossless)  # encoder from pylibjpeg-openjpeg
    raw, _ = read(write(ds, tmp_path / "j2k.dcm"), normalize=False)
    np.testing.assert_array_equal(raw, pixels.T)


@pytest.mark.parametrize("bits, signed", [(8, False), (12, False), (14, False), (16, False), (12, True)])
def test_jpeg_lossless_sv1(tmp_path, bits, signed):
    pixels = gradient(bits, signed)
    stream = _jpeg_lossless_sv1(pixels, bits)
    path = write(_encapsulated(pixels, stream, uid.JPEGLosslessSV1, bits, signed), tmp_path / "jll.dcm")
    raw, _ = read(path, normalize=False)  # decoded by pylibjpeg-libjpeg
    np.testing.assert_array_equal(raw, pixels.T)


def test_jpeg_ls_lossless(tmp_path):
    # No JPEG-LS encoder is installed: re-wrap the codestream of pydicom's own JPEG-LS test file
    # (a signed 16-bit MR slice) in our X-ray data set; its uncompressed twin is the reference.
    from pydicom.data import get_testdata_file

    source = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    reference = get_testdata_file("MR_small.dcm")
    if source is None or reference is None:
        pytest.skip("pydicom's bundled JPEG-LS test file is not installed")
    jls, ref = pydicom.dcmread(source), pydicom.dcmread(reference)
    assert jls.file_meta.TransferSyntaxUID == uid.JPEGLSLossless
    pixels = ref.pixel_array
    stream = next(generate_frames(jls.PixelData, number_of_frames=1))
    ds = _encapsulated(pixels, stream, uid.JPEGLSLossless, int(jls.BitsStored), bool(jls.PixelRepresentation))
    raw, _ = read(write(ds, tmp_path / "jls.dcm"), normalize=False)
    np.testing.assert_array_equal(raw, pixels.T)


def test_jpeg_baseline_lossy(tmp_path):
    import io

    pixels = np.tile(np.linspace(0, 255, COLS), (ROWS, 1)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    ds = _encapsulated(pixels, buffer.getvalue(), uid.JPEGBaseline8Bit, 8, PhotometricInterpretation="MONOCHROME2")
    raw, meta = read(write(ds, tmp_path / "jpg.dcm"), normalize=False)
    decoded = np.asarray(Image.open(buffer)).T.astype(np.float32)
    np.testing.assert_allclose(raw, decoded, atol=2)  # two decoders may differ by rounding
    np.testing.assert_allclose(raw, pixels.T, atol=8)  # lossy, but close


@pytest.mark.parametrize(
    "tsyntax, package",
    [(uid.JPEG2000Lossless, "pylibjpeg-openjpeg"), (uid.JPEGLosslessSV1, "pylibjpeg-libjpeg")],
)
def test_missing_decoder_names_package(tmp_path, monkeypatch, tsyntax, package):
    pixels = gradient(12)
    path = write(_encapsulated(pixels, b"\xff\xd8\xff\xd9", tsyntax, 12), tmp_path / "c.dcm")
    decoder = get_decoder(tsyntax)
    monkeypatch.setattr(decoder, "_available", {})  # as if no plugin's dependencies were installed
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", f"{package}>=2.0")})
    with pytest.raises(MissingDecoderError) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message and tsyntax.name in message and str(tsyntax) in message
    assert f"pip install pylibjpeg {package}" in message and "mimtl[dicom]" in message


def test_corrupt_codestream_is_a_clear_error(tmp_path):
    path = write(_encapsulated(gradient(12), b"\xff\xd8garbage\xff\xd9", uid.JPEGLosslessSV1, 12), tmp_path / "bad.dcm")
    with pytest.raises(ImageReadError, match="cannot decode the pixel data 'JPEG Lossless"):
        read(path)


# --------------------------------------------------------------------------------------- errors


def test_multi_frame_is_rejected(tmp_path):
    frames = np.stack([gradient(12), gradient(12, seed=1)])
    path = write(make_ds(frames, 12, NumberOfFrames=2), tmp_path / "mf.dcm")
    with pytest.raises(ImageReadError, match=r"mf\.dcm: is a multi-frame image \(2 frames\)"):
        read(path)


@pytest.mark.parametrize(
    "sop_class, modality, name",
    [
        (uid.BasicTextSRStorage, "SR", "Basic Text SR Storage"),
        (uid.RTStructureSetStorage, "RTSTRUCT", "RT Structure Set Storage"),
    ],
)
def test_non_image_is_rejected(tmp_path, sop_class, modality, name):
    path = write(make_ds(None, sop_class=sop_class, modality=modality), tmp_path / "doc.dcm")
    with pytest.raises(ImageReadError, match=f"doc.dcm: has no Pixel Data .*'{name}'"):
        read(path)


def test_colour_is_rejected(tmp_path):
    rgb = np.zeros((ROWS, COLS, 3), dtype=np.uint8)
    ds = make_ds(rgb[..., 0], 8, photometric="RGB")
    ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PixelData = 3, 0, rgb.tobytes()
    with pytest.raises(ImageReadError, match=r"rgb\.dcm: is a colour image \(Photometric Interpretation 'RGB'"):
        read(write(ds, tmp_path / "rgb.dcm"))


def test_truncated_pixel_data(tmp_path):
    path = write(make_ds(gradient(12), 12), tmp_path / "t.dcm")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ImageReadError, match=r"t\.dcm: pixel data is truncated"):
        read(path)


def test_truncated_header(tmp_path):
    path = write(make_ds(gradient(12), 12), tmp_path / "h.dcm")
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ImageReadError, match=r"h\.dcm: .*(truncated|corrupt)"):
        read(path)


def test_empty_missing_and_not_dicom(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.dcm: file is empty"):
        read(tmp_path / "empty.dcm")
    with pytest.raises(ImageNotFoundError, match=r"nope\.dcm: file not found") as info:
        read(tmp_path / "nope.dcm")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    (tmp_path / "text.dcm").write_text("this is not a DICOM file\n" * 20)
    with pytest.raises(ImageReadError, match=r"text\.dcm: not a DICOM file"):
        read(tmp_path / "text.dcm")
    with pytest.raises(ImageReadError, match="is a folder"):
        read(tmp_path)


def test_errors_survive_pickling():
    error = pickle.loads(pickle.dumps(MissingDecoderError("a.dcm", "why")))
    assert isinstance(error, MissingDecoderError) and str(error) == "a.dcm: why" and error.filename == "a.dcm"
    # one argument = a whole message, as torch's DataLoader re-raises a worker's exception
    assert str(ImageReadError("Caught ImageReadError in worker 0")) == "Caught ImageReadError in worker 0"


def test_load_image_surfaces_the_reason(tmp_path):
    (tmp_path / "text.dcm").write_text("not DICOM\n" * 20)
    for reader in (None, "mimtl.io.DicomXrayReader"):  # auto-selection, and LoadImage's "try every reader" path
        with pytest.raises(ImageReadError, match="not a DICOM file"):
            load_image(tmp_path / "text.dcm", reader=reader)
    with pytest.raises(ImageNotFoundError):
        load_image(tmp_path / "missing.dcm")


# --------------------------------------------------------------------------------- MONAI wiring


def test_loadimage_by_name_dotted_path_and_auto(tmp_path):
    from monai.transforms import LoadImage

    pixels = gradient(12)
    path = write(make_ds(pixels, 12, PixelSpacing=[0.2, 0.1]), tmp_path / "x.dcm")
    no_suffix = tmp_path / "IM0001"
    no_suffix.write_bytes(path.read_bytes())
    expected = pixels.T / 4095
    cases = [
        ("mimtl.io.DicomXrayReader", path),
        (DicomXrayReader, path),
        (MedicalImageReader, path),
        (MedicalImageReader, no_suffix),  # found by its 'DICM' marker
    ]
    for reader, file in cases:
        img = LoadImage(reader=reader, ensure_channel_first=True)(file)
        assert tuple(img.shape) == (1, COLS, ROWS), reader
        np.testing.assert_allclose(img[0].numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(img.pixdim, (0.1, 0.2))
        assert img.meta["spacing_source"] == "PixelSpacing"
    plain = LoadImage(reader="mimtl.io.DicomXrayReader")(path)  # no channel added without ensure_channel_first
    assert tuple(plain.shape) == (COLS, ROWS)
    raw = LoadImage(reader=MedicalImageReader, normalize=False)(path)  # kwargs reach the format's reader
    np.testing.assert_array_equal(raw.numpy(), pixels.T)


def test_auto_selection_prefers_dicom_reader(tmp_path, registered_readers):
    """After the opt-in ``register_readers()``, a bare ``LoadImage()`` picks DicomXrayReader."""
    from monai.transforms import LoadImage

    path = write(make_ds(gradient(12), 12), tmp_path / "x.dcm")
    loader = LoadImage()
    chosen = next(r for r in loader.readers[::-1] if r.verify_suffix((str(path),)))
    assert isinstance(chosen, DicomXrayReader)
    reader = DicomXrayReader()
    Image.fromarray(gradient(8)).save(tmp_path / "x.png")
    assert not reader.verify_suffix(str(tmp_path / "x.png"))
    assert not reader.verify_suffix(str(tmp_path))  # series folders go to MONAI's DICOM readers
    assert reader.verify_suffix(str(tmp_path / "not_yet_written.dcm"))


def test_loadimaged_dictionary_and_stacking(tmp_path):
    from monai.transforms import Compose, EnsureTyped, LoadImaged

    from mimtl.transforms import StandardizeImageMetad

    a, b = gradient(12), gradient(12, seed=3)
    pa = write(make_ds(a, 12, PixelSpacing=[0.2, 0.1]), tmp_path / "a.dcm")
    pb = write(make_ds(b, 12, PixelSpacing=[0.2, 0.1]), tmp_path / "b.dcm")
    pipeline = Compose(
        [
            LoadImaged(keys="image", reader="mimtl.io.DicomXrayReader", ensure_channel_first=True),
            StandardizeImageMetad(keys="image"),
            EnsureTyped(keys="image"),
        ]
    )
    out = pipeline({"image": str(pa), "label": 1})
    assert tuple(out["image"].shape) == (1, COLS, ROWS) and out["label"] == 1
    assert out["image"].meta["spacing_source"] == "PixelSpacing"
    stacked = LoadImaged(keys="image", reader="mimtl.io.DicomXrayReader")({"image": [str(pa), str(pb)]})["image"]
    assert tuple(stacked.shape) == (2, COLS, ROWS)
    np.testing.assert_allclose(stacked[1].numpy(), b.T / 4095, atol=1e-6)
