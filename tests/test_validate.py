"""Bad input is refused up front with one message that names every bad file and why."""

import json

import numpy as np
import pytest
from PIL import Image

from mimtl.data.validate import DataValidationError, check_image_file, validate_datalist


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(good)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    wrong = tmp_path / "text.png"
    wrong.write_text("this is not an image\n" * 10)
    import nibabel as nib

    nan = tmp_path / "nan.nii.gz"
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), nan)
    return {
        "good": good,
        "empty": empty,
        "truncated": truncated,
        "wrong": wrong,
        "nan": nan,
        "missing": tmp_path / "missing.png",
    }


@pytest.mark.parametrize(
    "name,reason,deep",
    [
        ("missing", "does not exist", False),
        ("empty", "empty", False),
        ("truncated", "cannot be read", False),
        ("wrong", "cannot be read", False),
        ("nan", "NaN", True),
        ("truncated", "cannot be read", True),
    ],
)
def test_check_image_file_reasons(files, name, reason, deep):
    assert reason in check_image_file(files[name], deep=deep)


def test_good_file_passes(files):
    assert check_image_file(files["good"]) is None


def test_validate_datalist_lists_every_problem(files):
    items = [{"image": str(files[k])} for k in ("good", "missing", "empty", "nan")] + [{"label": 1}]
    with pytest.raises(DataValidationError) as err:
        validate_datalist(items, source="my_list.json", deep=True, progress=False)
    msg = str(err.value)
    assert msg.startswith("4 problem(s) in my_list.json")
    for k in ("missing", "empty", "nan"):
        assert str(files[k]) in msg
    assert "entry 4: no 'image' key" in msg
    with pytest.raises(DataValidationError, match=r"^3 problem\(s\)") as err:  # headers only: the NaN is not seen
        validate_datalist(items, source="my_list.json", progress=False)
    assert str(files["nan"]) not in str(err.value)


def test_header_check_reads_no_pixels(files, monkeypatch):
    """The default check opens headers only: with every pixel decoder broken, good files still pass."""
    import nibabel as nib
    from PIL import ImageFile

    import mimtl.io

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(mimtl.io, "load_image", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", no_decoding)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "get_unscaled", no_decoding)
    assert check_image_file(files["good"]) is None
    assert check_image_file(files["nan"]) is None  # its header is fine; only a decode finds the NaN
    assert "cannot be read" in check_image_file(files["truncated"])  # the PNG's chunks end early
    assert "pixels were decoded" in check_image_file(files["nan"], deep=True)


def _dicom(path, rows=6, columns=5, pixels=True, cut=0, **drop):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "DX", "MONOCHROME2", 1
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels:
        ds.PixelData = np.arange(rows * columns, dtype=np.uint16).tobytes()
    for keyword in drop:
        delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    if cut:
        path.write_bytes(path.read_bytes()[:-cut])
    return path


def test_dicom_header_check(tmp_path, monkeypatch):
    import pydicom

    good = _dicom(tmp_path / "good.dcm")
    truncated = _dicom(tmp_path / "truncated.dcm", cut=20)
    no_rows = _dicom(tmp_path / "no_rows.dcm", Rows=True)
    no_pixels = _dicom(tmp_path / "no_pixels.dcm", pixels=False)
    header_only = tmp_path / "header_only.dcm"
    header_only.write_bytes(good.read_bytes()[:140])  # preamble, 'DICM' and a few bytes
    read = pydicom.dcmread
    calls = []
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: calls.append(k) or read(*a, **k))
    assert check_image_file(good) is None
    assert calls and all(k.get("stop_before_pixels") for k in calls)  # the pixel data is never read
    assert "is truncated" in check_image_file(truncated)
    assert "no DICOM Rows" in check_image_file(no_rows)
    assert "has no pixel data" in check_image_file(no_pixels)
    assert check_image_file(header_only) is not None
    monkeypatch.setattr(pydicom, "dcmread", read)
    assert check_image_file(good, deep=True) is None and "is truncated" in check_image_file(truncated, deep=True)


def _validate_on_rank(rank, world, store, cases, out):
    """One process of a gloo group: validate each datalist of ``cases``; record its checks and errors."""
    import torch.distributed as dist

    import mimtl.data.validate as validate

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    original, results = validate.check_image_file, []
    try:
        for items in cases:
            checked = []
            validate.check_image_file = lambda path, deep=False, checked=checked: (
                checked.append(path) or original(path, deep=deep)
            )
            try:
                validate.validate_datalist(items, source="list.json", progress=False)
                error = None
            except DataValidationError as e:
                error = str(e)
            results.append({"checked": checked, "error": error})
    finally:
        dist.destroy_process_group()
    (out / f"rank{rank}.json").write_text(json.dumps(results))


def test_only_rank_zero_checks_and_every_rank_gets_its_verdict(files, tmp_path):
    """Two gloo processes on CPU: rank 0 opens every file, rank 1 none; both pass, or both fail alike."""
    import torch.multiprocessing as mp

    good, bad = [{"image": str(files["good"])}] * 3, [{"image": str(files["good"])}, {"image": str(files["empty"])}]
    mp.spawn(_validate_on_rank, args=(2, tmp_path / "store", [good, bad], tmp_path), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for case, items in enumerate((good, bad)):
        assert len(ranks[0][case]["checked"]) == len(items) and ranks[1][case]["checked"] == []
        assert ranks[0][case]["error"] == ranks[1][case]["error"]
    assert ranks[0][0]["error"] is None and "empty.png is empty (0 bytes)" in ranks[1][1]["error"]


def test_rank_zero_errors_reach_the_other_ranks(files, monkeypatch):
    """The same protocol with torch.distributed stubbed: what rank 1 raises is what rank 0 broadcast."""
    import torch.distributed as dist

    import mimtl.data.validate as validate

    sent = ["2 problem(s) in list.json: rank 0's message"]
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "broadcast_object_list", lambda objects, src: objects.__setitem__(0, sent[0]))
    monkeypatch.setattr(validate, "check_image_file", lambda *a, **k: pytest.fail("rank 1 opened a file"))
    with pytest.raises(DataValidationError, match="rank 0's message"):
        validate_datalist([{"image": str(files["good"])}], progress=False)
    sent[0] = None
    assert validate_datalist([{"image": str(files["good"])}], progress=False) == [{"image": str(files["good"])}]
    # rank 0 tells the others when the check itself breaks, then raises it
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(validate, "check_image_file", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(dist, "broadcast_object_list", lambda objects, src: sent.__setitem__(0, objects[0]))
    with pytest.raises(ZeroDivisionError):
        validate_datalist([{"image": str(files["good"])}], progress=False)
    assert sent[0].startswith("checking the data failed on rank 0: ZeroDivisionError")


def test_check_data_cli_reads_headers_unless_deep(files, tmp_path, capsys):
    from mimtl.cli import main

    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": "good.png"}, {"image": "nan.nii.gz"}]}))
    datalist = str(tmp_path / "list.json")
    assert main(["check-data", datalist]) == 0  # the headers are fine
    assert main(["check-data", datalist, "--shallow"]) == 0  # the former flag still works (the default now)
    assert main(["check-data", datalist, "--deep"]) == 1
    assert "nan.nii.gz contains 1 NaN/Inf values" in capsys.readouterr().err


def test_a_cut_uncompressed_nifti_is_truncated_by_its_header(tmp_path):
    """An interrupted copy of a .nii: the file is shorter than the voxel offset plus the voxels."""
    import nibabel as nib

    from mimtl.data.validate import check_image_file

    path = tmp_path / "case.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 4), np.float32), np.eye(4)), path)
    assert check_image_file(path) is None
    path.write_bytes(path.read_bytes()[:-100])
    assert check_image_file(path).startswith("is truncated")
