"""Bad input is refused up front with one message that names every bad file and why."""

import json

import numpy as np
import pytest
from PIL import Image

from mimtl.data.datalist import list_images, load_datalist
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
    return {"good": good, "empty": empty, "truncated": truncated, "wrong": wrong, "nan": nan,
            "missing": tmp_path / "missing.png"}  # fmt: skip


@pytest.mark.parametrize(
    "name,reason",
    [("missing", "does not exist"), ("empty", "empty"), ("truncated", "cannot be read"),
     ("wrong", "cannot be read"), ("nan", "NaN")],
)  # fmt: skip
def test_check_image_file_reasons(files, name, reason):
    assert reason in check_image_file(files[name])


def test_good_file_passes(files):
    assert check_image_file(files["good"]) is None


def test_validate_datalist_lists_every_problem(files):
    items = [{"image": str(files[k])} for k in ("good", "missing", "empty", "nan")] + [{"label": 1}]
    with pytest.raises(DataValidationError) as err:
        validate_datalist(items, source="my_list.json", progress=False)
    msg = str(err.value)
    assert msg.startswith("4 problem(s) in my_list.json")
    for k in ("missing", "empty", "nan"):
        assert str(files[k]) in msg
    assert "entry 4: no 'image' key" in msg


def test_load_datalist_resolves_relative_paths(files, tmp_path):
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": "good.png", "label": 0}]}))
    items = load_datalist(tmp_path / "list.json")
    assert items == [{"image": str(tmp_path / "good.png"), "label": 0}]
    with pytest.raises(DataValidationError, match="no 'validation' list"):
        load_datalist(tmp_path / "list.json", data_list_key="validation")
    with pytest.raises(DataValidationError, match="does not exist"):
        load_datalist(tmp_path / "nope.json")


def test_list_images(files, tmp_path):
    good_only = tmp_path / "only"
    good_only.mkdir()
    (good_only / "a.png").write_bytes(files["good"].read_bytes())
    (good_only / "notes.txt").write_text("ignored")
    assert list_images(good_only) == [{"image": str(good_only / "a.png")}]
    with pytest.raises(DataValidationError, match="truncated.png"):
        list_images(tmp_path)
    with pytest.raises(DataValidationError, match="does not exist"):
        list_images(tmp_path / "nowhere")
