"""load_datalist checks labels and takes seeded, stratified training fractions; list_images feeds inference."""

import json

import numpy as np
import pytest
from PIL import Image

from mimtl.data.datalist import datalist_labels, list_images, load_datalist, subsample
from mimtl.data.validate import DataValidationError

NAMES = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(path)
    return path


def write(tmp_path, items, labels=None, name="list.json", key="training"):
    content = {key: items, **({"labels": labels} if labels is not None else {})}
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return path


def test_wrong_label_count_names_file_item_image_and_labels(tmp_path, png):
    items = [{"image": png.name, "label": [0, 1, 0, 0, 1]}, {"image": png.name, "label": [0, 1, 0]}]
    path = write(tmp_path, items, NAMES)
    with pytest.raises(DataValidationError) as err:
        load_datalist(path, num_labels=5)
    msg = str(err.value)
    assert str(path) in msg and "item 1" in msg and str(png) in msg
    assert "has 3 values, expected 5" in msg and "Pleural Effusion" in msg
    # without num_labels the top-level "labels" list gives the count
    with pytest.raises(DataValidationError, match="has 3 values, expected 5"):
        load_datalist(path)


def test_num_labels_without_label_names(tmp_path, png):
    path = write(tmp_path, [{"image": png.name, "label": [1, 0]}])
    assert load_datalist(path)[0]["label"] == [1, 0]  # no names, no num_labels: not checked
    assert load_datalist(path, num_labels=2)[0]["label"] == [1, 0]
    with pytest.raises(DataValidationError, match="has 2 values, expected 3"):
        load_datalist(path, num_labels=3)


def test_class_index_labels(tmp_path, png):
    path = write(tmp_path, [{"image": png.name, "label": i} for i in (0, 2, 1)], ["a", "b", "c"])
    assert [i["label"] for i in load_datalist(path)] == [0, 2, 1]
    bad = write(tmp_path, [{"image": png.name, "label": 3}, {"image": png.name, "label": 1.5}], name="bad.json")
    with pytest.raises(DataValidationError) as err:
        load_datalist(bad, num_labels=3)
    msg = str(err.value)
    assert "2 label problem(s)" in msg and "item 0" in msg and "class index 3 is not in [0, 3)" in msg
    assert "item 1" in msg and "1.5" in msg
    # one output: a binary target, any finite number
    binary = write(
        tmp_path,
        [{"image": png.name, "label": 1}, {"image": png.name, "label": 0.0}],
        ["neg", "pos"],
        name="binary.json",
    )
    assert len(load_datalist(binary, num_labels=1)) == 2


def test_nan_and_null_labels_are_errors_but_ignore_mask_is_allowed(tmp_path, png):
    # -1 with label_mask 0 is what the CheXpert adapter writes for uncertain="ignore"
    item = {"image": png.name, "label": [1.0, -1.0, 0.0, 0.0, -1.0], "label_mask": [1, 0, 1, 1, 0]}
    ok = write(tmp_path, [item], NAMES)
    assert load_datalist(ok)[0]["label"][1] == -1.0
    path = tmp_path / "nan.json"  # Python's json writes NaN; write_datalist writes null
    path.write_text(json.dumps({"training": [{"image": png.name, "label": [1.0, float("nan"), 0, 0, None]}]}))
    with pytest.raises(DataValidationError) as err:
        load_datalist(path, num_labels=5)
    msg = str(err.value)
    assert "[1]=nan" in msg and "[4]=null" in msg and "label_mask 0" in msg and str(path) in msg
    nan_index = write(tmp_path, [{"image": png.name, "label": None}], name="none.json")
    with pytest.raises(DataValidationError, match="label is null"):
        load_datalist(nan_index, num_labels=2)


def test_num_labels_must_agree_with_label_names(tmp_path, png):
    path = write(tmp_path, [{"image": png.name, "label": [1, 0, 0, 0, 0]}], NAMES)
    with pytest.raises(DataValidationError, match="names 5 labels .* but num_labels=4"):
        load_datalist(path, num_labels=4)


def test_missing_and_path_labels(tmp_path, png):
    # segmentation lists name their classes and give mask files as labels: not checked implicitly
    seg = write(tmp_path, [{"image": png.name, "label": png.name}], ["background", "lung"], name="seg.json")
    assert load_datalist(seg, keys=("image", "label"))[0]["label"] == str(png)
    unlabelled = write(tmp_path, [{"image": png.name}], NAMES, name="unlabelled.json")
    assert load_datalist(unlabelled) == [{"image": str(png)}]
    # asking for num_labels makes both errors
    with pytest.raises(DataValidationError, match="has no label"):
        load_datalist(unlabelled, num_labels=5)
    with pytest.raises(DataValidationError, match="file path"):
        load_datalist(seg, num_labels=2)


def multilabel_items(n=200, seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        label = (rng.random(5) < [0.5, 0.3, 0.2, 0.1, 0.0]).astype(float).tolist()
        items.append({"image": f"img{i:03d}.png", "label": label})
    for i in (17, 123):  # a rare finding: 2 positives in 200
        items[i]["label"][4] = 1.0
    return items


def test_fraction_is_seeded_stratified_and_nested():
    items = multilabel_items()
    a, b = subsample(items, 0.05, seed=3), subsample(items, 0.05, seed=3)
    assert a == b and len(a) == 10
    assert subsample(items, 0.05, seed=4) != a
    # every label with a positive keeps one, the rare one included, for any seed
    for seed in range(20):
        subset = subsample(items, 0.02, seed=seed)
        assert len(subset) == 4
        assert all(any(item["label"][j] == 1.0 for item in subset) for j in range(5))
    # the subset depends on the seed and the image paths, not on the order of the list
    assert {i["image"] for i in subsample(items[::-1], 0.05, seed=3)} == {i["image"] for i in a}
    # one seed: a smaller fraction is part of a larger one (the training-fraction curve)
    small, large = subsample(items, 0.1, seed=1), subsample(items, 0.3, seed=1)
    assert {i["image"] for i in small} <= {i["image"] for i in large}
    # kept in the original order
    positions = [items.index(i) for i in large]
    assert positions == sorted(positions)


def test_fraction_with_class_indices_keeps_every_class():
    items = [{"image": f"{i}.png", "label": 0} for i in range(97)] + [
        {"image": "x.png", "label": 2},
        {"image": "y.png", "label": 1},
        {"image": "z.png", "label": 1},
    ]
    for seed in range(10):
        subset = subsample(items, 0.03, seed=seed)
        assert len(subset) == 3 and {i["label"] for i in subset} == {0, 1, 2}
    # subset too small for every class: the rarest ones first
    assert [i["label"] for i in subsample(items, 0.01, seed=0)] == [2]


def test_load_datalist_fraction(tmp_path, png):
    items = [{"image": png.name, "label": lab} for lab in ([1, 0], [0, 0], [0, 0], [0, 1], [0, 0], [0, 0])]
    # different paths so ranking differs between items
    for i, item in enumerate(items):
        Image.open(png).save(tmp_path / f"f{i}.png")
        item["image"] = f"f{i}.png"
    path = write(tmp_path, items, ["a", "b"])
    full = load_datalist(path)
    assert len(full) == 6
    half = load_datalist(path, fraction=0.5, fraction_seed=7)
    assert half == load_datalist(path, fraction=0.5, fraction_seed=7) and len(half) == 3
    assert any(i["label"][0] == 1 for i in half) and any(i["label"][1] == 1 for i in half)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
            load_datalist(path, fraction=bad)


def test_existing_behaviour_kept(tmp_path, png):
    path = write(tmp_path, [{"image": png.name, "label": 0}])
    assert load_datalist(path) == [{"image": str(png), "label": 0}]


# --- list_images: inference sources ---------------------------------------------------------


@pytest.fixture
def folder(tmp_path, png):
    root = tmp_path / "films"
    (root / "sub").mkdir(parents=True)
    (root / "b.png").write_bytes(png.read_bytes())
    (root / "a.png").write_bytes(png.read_bytes())
    (root / "sub" / "c.png").write_bytes(png.read_bytes())
    (root / "broken.png").write_bytes(png.read_bytes()[:40])
    (root / "notes.txt").write_text("not an image")
    return root


def test_list_images_raises_by_default_and_keeps_on_request(folder):
    with pytest.raises(DataValidationError, match="broken.png"):
        list_images(folder)
    kept = list_images(folder, on_error="keep")
    assert [i["image"] for i in kept] == [str(folder / n) for n in ("a.png", "b.png", "broken.png")]
    assert len(list_images(folder, recursive=True, on_error="keep")) == 4
    with pytest.raises(ValueError, match="on_error"):
        list_images(folder, on_error="skip")


def test_list_images_sources(folder, tmp_path):
    a, c = folder / "a.png", folder / "sub" / "c.png"
    assert list_images(a) == [{"image": str(a)}]  # one file
    assert list_images([c, str(a)]) == [{"image": str(c)}, {"image": str(a)}]  # a list, in its order
    listing = folder / "inputs.txt"
    listing.write_text(f"# films to read\nsub/c.png\n\n{a}\nmissing.png\n")
    with pytest.raises(DataValidationError, match="missing.png"):
        list_images(listing)
    assert list_images(listing, on_error="keep", key="img") == [
        {"img": str(c)},
        {"img": str(a)},
        {"img": str(folder / "missing.png")},
    ]
    with pytest.raises(DataValidationError, match="does not exist"):
        list_images(tmp_path / "nowhere")
    with pytest.raises(DataValidationError, match="empty"):
        list_images([])
    with pytest.deprecated_call():
        assert list_images(folder=folder / "sub") == [{"image": str(c)}]


def test_list_images_finds_bmp_films(tmp_path):
    """ISBI 2015 (and the demo landmark set) ship BMP films: a folder of them is an inference input."""
    for name in ("001.bmp", "002.BMP"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name, format="BMP")
    assert [p["image"].rsplit("/", 1)[-1] for p in list_images(tmp_path)] == ["001.bmp", "002.BMP"]


def test_list_images_reads_a_datalist_split_with_its_other_keys(folder, tmp_path):
    """A landmark set's datalist as inference input: each film's spacing travels with it."""
    items = [{"image": "a.png", "spacing": [0.1, 0.1]}, {"image": "sub/c.png"}, {"image": "broken.png"}]
    path = write(folder, items, name="films.json", key="test")
    kept = list_images(path, on_error="keep")
    assert kept == [
        {"image": str(folder / "a.png"), "spacing": [0.1, 0.1]},
        {"image": str(folder / "sub" / "c.png")},
        {"image": str(folder / "broken.png")},
    ]
    with pytest.raises(DataValidationError, match="broken.png"):
        list_images(path)
    with pytest.raises(DataValidationError, match="no 'validation' list"):
        list_images(path, data_list_key="validation")
    no_image = write(folder, [{"image": "a.png"}, {"label": 1}], name="bad.json", key="test")
    with pytest.raises(DataValidationError, match=r"bad.json.*items \[1\] have no 'image'"):
        list_images(no_image, on_error="keep")
    (folder / "broken.json").write_text("{not json")
    with pytest.raises(DataValidationError, match="not valid JSON"):
        list_images(folder / "broken.json")


def test_datalist_labels_default_when_no_datalist(tmp_path):
    """An inference config names its outputs from its metadata unless pointed at a training datalist."""
    assert datalist_labels(None, key="landmark_names", default=["a", "b"]) == ["a", "b"]
    path = tmp_path / "ceph.json"
    path.write_text(json.dumps({"landmark_names": ["sella", "nasion"], "training": []}))
    assert datalist_labels(path, key="landmark_names", default=["a", "b"]) == ["sella", "nasion"]
    with pytest.raises(ValueError, match="path or default"):
        datalist_labels(None)
