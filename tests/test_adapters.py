"""Data set adapters: tiny fixtures in the exact published layouts, built in tmp_path.

Every builder below writes the folder names, file names, CSV headers and annotation formats the
data sets are published with (see docs/adapters.md for the sources); only the images are tiny.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimtl.data.adapters import (
    ADAPTERS,
    CHEXPERT_HEADER,
    ISBI2015_LANDMARKS,
    NIH_LABELS,
    JSRTReader,
    adapt,
    brats_datalist,
    chexpert_datalist,
    convert_jsrt,
    hand_atlas_datalist,
    isbi2015_ceph_datalist,
    jsrt_datalist,
    nih_chestxray14_datalist,
    pneumonia_datalist,
    read_jsrt,
    seeded_split,
    shenzhen_datalist,
    write_datalist,
)
from mimtl.data.datalist import load_datalist
from mimtl.data.validate import DataValidationError

pytestmark = pytest.mark.filterwarnings("ignore:.*nvImageCodec")


def image(path: Path, size=(16, 16), value: int = 128, mode: str = "L") -> Path:
    """A tiny image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# CheXpert
# ---------------------------------------------------------------------------------------------

CHEXPERT_HEADER_LINE = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
)


def chexpert_row(path: str, view: str = "Frontal", **labels: str) -> str:
    """One CSV row; ``labels`` by observation name with spaces as underscores (blank otherwise)."""
    cells = [labels.get(name.replace(" ", "_"), "") for name in CHEXPERT_HEADER[5:]]
    ap = "AP" if view == "Frontal" else ""
    return ",".join([path, "Female", "68", view, ap, *cells])


def make_chexpert(
    tmp: Path, patients: int = 10, name: str = "CheXpert-v1.0-small", skip_image: str | None = None
) -> Path:
    """``tmp/<name>/{train.csv,valid.csv,train/...,valid/...}`` as published."""
    data = tmp / name
    train = [CHEXPERT_HEADER_LINE]
    # patient00001: the label row the policy tests check; -1 uncertain, blank, 1, 0 ...
    train.append(
        chexpert_row(
            f"{name}/train/patient00001/study1/view1_frontal.jpg",
            Atelectasis="-1.0",
            Cardiomegaly="1.0",
            Consolidation="",
            Edema="0.0",
            Pleural_Effusion="-1.0",
        )
    )
    train.append(chexpert_row(f"{name}/train/patient00001/study1/view2_lateral.jpg", view="Lateral", Edema="1.0"))
    for p in range(2, patients + 1):
        for study in (1, 2):
            train.append(chexpert_row(f"{name}/train/patient{p:05d}/study{study}/view1_frontal.jpg", No_Finding="1.0"))
    valid = [CHEXPERT_HEADER_LINE]
    valid.append(
        chexpert_row(
            f"{name}/valid/patient64541/study1/view1_frontal.jpg", **{k: "0.0" for k in ("Atelectasis", "Edema")}
        )
    )
    valid.append(chexpert_row(f"{name}/valid/patient64542/study1/view1_frontal.jpg", Cardiomegaly="1.0"))
    write(data / "train.csv", "\n".join(train) + "\n")
    write(data / "valid.csv", "\n".join(valid) + "\n")
    for line in train[1:] + valid[1:]:
        rel = line.split(",")[0]
        if rel != skip_image:
            image(tmp / rel.replace(name, data.name, 1), mode="L")
    return tmp


@pytest.mark.parametrize(
    "policy, label, mask",
    [
        ("zeros", [0.0, 1.0, 0.0, 0.0, 0.0], None),
        ("ones", [1.0, 1.0, 0.0, 0.0, 1.0], None),
        ("ignore", [-1.0, 1.0, 0.0, 0.0, -1.0], [0.0, 1.0, 1.0, 1.0, 0.0]),
        ("multiclass", [2.0, 1.0, 0.0, 0.0, 2.0], None),
    ],
)
def test_chexpert_uncertainty_policies(tmp_path, policy, label, mask):
    dl = chexpert_datalist(make_chexpert(tmp_path), uncertain=policy)
    first = next(i for i in dl["training"] if "patient00001" in i["image"])
    # competition labels in order: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion
    assert dl["labels"] == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    assert first["label"] == label
    assert first.get("label_mask") == mask
    assert all(isinstance(v, float) for v in first["label"])


def test_chexpert_layout_paths_and_splits(tmp_path):
    root = make_chexpert(tmp_path)
    dl = chexpert_datalist(root)  # the folder that *contains* CheXpert-v1.0-small
    assert dl == chexpert_datalist(root / "CheXpert-v1.0-small")  # or the folder itself
    assert all(Path(i["image"]).is_file() for s in ("training", "validation") for i in dl[s])
    assert not any("lateral" in i["image"] for i in dl["training"])  # frontal_only
    assert len(dl["training"]) == 1 + 2 * 9 and len(dl["validation"]) == 2 and dl["test"] == []
    assert dl["validation"][1]["label"] == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert dl["training"][0]["patient_id"] == "patient00001" and dl["training"][0]["age"] == 68
    with_lateral = chexpert_datalist(root, frontal_only=False, labels="Edema")  # a string, as from a CLI
    lateral = next(i for i in with_lateral["training"] if "lateral" in i["image"])
    assert lateral["label"] == [1.0] and lateral["view"] == "Lateral"

    split = chexpert_datalist(root, test_fraction=0.3, seed=3)
    assert split == chexpert_datalist(root, test_fraction=0.3, seed=3)  # deterministic
    train_p = {i["patient_id"] for i in split["training"]}
    test_p = {i["patient_id"] for i in split["test"]}
    assert test_p and not train_p & test_p  # patient-level
    assert len(test_p) == 3  # round(0.3 * 10 patients)
    assert len(split["training"]) + len(split["test"]) == len(dl["training"])


def test_chexpert_renamed_folder(tmp_path):
    """Kaggle unpacks CheXpert-v1.0-small into 'archive/': CSV paths keep the original prefix."""
    make_chexpert(tmp_path)
    (tmp_path / "CheXpert-v1.0-small").rename(tmp_path / "archive")
    dl = chexpert_datalist(tmp_path / "archive")
    assert all(Path(i["image"]).is_file() and "archive" in i["image"] for i in dl["training"])


def test_chexpert_bad_input(tmp_path):
    with pytest.raises(DataValidationError, match="no train.csv under .*CheXpert-v1.0-small/train.csv"):
        chexpert_datalist(tmp_path)
    with pytest.raises(DataValidationError, match="does not exist"):
        chexpert_datalist(tmp_path / "nowhere")
    root = make_chexpert(tmp_path / "a", skip_image="CheXpert-v1.0-small/train/patient00003/study2/view1_frontal.jpg")
    with pytest.raises(DataValidationError, match=r"(?s)1 file\(s\).*patient00003/study2"):
        chexpert_datalist(root)
    dl = chexpert_datalist(root, on_missing="skip")
    assert [s["image"].endswith("patient00003/study2/view1_frontal.jpg") for s in dl["skipped"]] == [True]
    assert not any("patient00003/study2" in i["image"] for i in dl["training"])
    csv = root / "CheXpert-v1.0-small" / "valid.csv"
    csv.write_text(csv.read_text().replace(",Pleural Effusion,", ",Effusion,"))
    with pytest.raises(DataValidationError, match="valid.csv' lacks the column.*'Pleural Effusion'"):
        chexpert_datalist(root)
    with pytest.raises(ValueError, match="uncertain policy"):
        chexpert_datalist(make_chexpert(tmp_path / "b"), uncertain="maybe")


# ---------------------------------------------------------------------------------------------
# NIH ChestX-ray14
# ---------------------------------------------------------------------------------------------

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
NIH_ROWS = [  # the first data rows of Data_Entry_2017_v2020.csv, then made-up ones
    ("00000001_000.png", "Cardiomegaly", 0, 1, "57", "M", "PA", 2682, 2749, 0.14300000000000002),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, "58", "M", "PA", 2894, 2729, 0.14300000000000002),
    ("00000001_002.png", "Cardiomegaly|Effusion", 2, 1, "58", "M", "PA", 2500, 2048, 0.168),
    ("00000002_000.png", "No Finding", 0, 2, "80", "M", "PA", 2500, 2048, 0.171),
    ("00000003_001.png", "Hernia", 0, 3, "74", "F", "PA", 2500, 2048, 0.168),
    ("00000003_002.png", "Hernia|Pleural_Thickening", 1, 3, "75", "F", "PA", 2048, 2500, 0.168),
] + [(f"{p:08d}_000.png", "Infiltration|Mass|Nodule", 0, p, "40", "F", "AP", 3056, 2544, 0.139) for p in range(4, 14)]


def make_nih(tmp: Path, version: str = "v2020", missing: str | None = None) -> Path:
    """``Data_Entry_2017[_v2020].csv``, the two lists and images in images_001/images, images_002/images."""

    def line(r: tuple, age: str) -> str:  # the bracketed header names span two columns each
        return ",".join(map(str, (*r[:4], age, *r[5:], r[9])))  # x and y spacing are equal

    if version == "v2020":
        name, lines = "Data_Entry_2017_v2020.csv", [NIH_HEADER] + [line(r, r[4]) for r in NIH_ROWS]
    else:  # the original file ends every line with a comma; ages here also in the '057Y' form
        name, lines = "Data_Entry_2017.csv", [NIH_HEADER + ","] + [line(r, f"{int(r[4]):03d}Y") + "," for r in NIH_ROWS]
    write(tmp / name, "\n".join(lines) + "\n")
    test = {"00000003_001.png", "00000003_002.png", "00000002_000.png"}
    write(tmp / "test_list.txt", "\n".join(sorted(test)) + "\n")
    write(tmp / "train_val_list.txt", "\n".join(r[0] for r in NIH_ROWS if r[0] not in test) + "\n")
    for i, r in enumerate(NIH_ROWS):
        if r[0] != missing:
            image(tmp / f"images_{1 + i % 2:03d}" / "images" / r[0])
    return tmp


def test_nih_multilabel_spacing_and_official_split(tmp_path):
    dl = nih_chestxray14_datalist(make_nih(tmp_path), val_fraction=0.3, seed=1)
    items = {Path(i["image"]).name: i for s in ("training", "validation", "test") for i in dl[s]}
    assert dl["labels"] == list(NIH_LABELS)
    two = items["00000001_001.png"]
    assert two["label"][NIH_LABELS.index("Cardiomegaly")] == 1.0 and two["label"][NIH_LABELS.index("Emphysema")] == 1.0
    assert sum(two["label"]) == 2.0 and two["findings"] == ["Cardiomegaly", "Emphysema"]
    assert items["00000002_000.png"]["label"] == [0.0] * 14  # No Finding
    assert items["00000003_002.png"]["label"][NIH_LABELS.index("Pleural_Thickening")] == 1.0
    assert items["00000001_000.png"]["spacing"] == [0.14300000000000002] * 2
    assert items["00000001_000.png"]["original_size"] == [2682, 2749]
    assert items["00000001_000.png"]["age"] == 57 and items["00000001_000.png"]["sex"] == "M"
    assert {Path(i["image"]).name for i in dl["test"]} == {"00000003_001.png", "00000003_002.png", "00000002_000.png"}
    assert "images_002" in items["00000001_001.png"]["image"]  # found in any images_NNN/images
    train_p = {i["patient_id"] for i in dl["training"]}
    val_p = {i["patient_id"] for i in dl["validation"]}
    assert val_p and not train_p & val_p  # patient-level validation
    assert dl == nih_chestxray14_datalist(tmp_path, val_fraction=0.3, seed=1)


def test_nih_2017_file_and_label_subset(tmp_path):
    dl = nih_chestxray14_datalist(make_nih(tmp_path, version="2017"), labels="Hernia,Cardiomegaly")
    items = {Path(i["image"]).name: i for s in ("training", "validation", "test") for i in dl[s]}
    assert items["00000003_001.png"]["label"] == [1.0, 0.0] and items["00000001_000.png"]["label"] == [0.0, 1.0]
    assert items["00000001_000.png"]["age"] == 57  # written '057Y'


def test_nih_bad_input(tmp_path):
    with pytest.raises(DataValidationError, match="no Data_Entry_2017_v2020.csv or Data_Entry_2017.csv"):
        nih_chestxray14_datalist(tmp_path)
    root = make_nih(tmp_path / "a", missing="00000005_000.png")
    with pytest.raises(DataValidationError, match="00000005_000.png"):
        nih_chestxray14_datalist(root)
    assert len(nih_chestxray14_datalist(root, on_missing="skip")["skipped"]) == 1
    csv = root / "Data_Entry_2017_v2020.csv"
    csv.write_text(csv.read_text().replace("Finding Labels", "Findings"))
    with pytest.raises(DataValidationError, match="lacks the column.*'Finding Labels'"):
        nih_chestxray14_datalist(root)
    (tmp_path / "a" / "test_list.txt").unlink()
    with pytest.raises(DataValidationError, match="no test_list.txt"):
        nih_chestxray14_datalist(root)


# ---------------------------------------------------------------------------------------------
# Kermany chest X-ray pneumonia
# ---------------------------------------------------------------------------------------------


def make_pneumonia(tmp: Path) -> Path:
    base = tmp / "chest_xray"
    files = {
        "train/NORMAL": ["IM-0115-0001.jpeg", "IM-0117-0001.jpeg", "NORMAL2-IM-0427-0001.jpeg", "IM-0119-0001.jpeg"],
        "train/PNEUMONIA": [
            "person1_bacteria_1.jpeg",
            "person1_bacteria_2.jpeg",
            "person3_virus_15.jpeg",
            "person1000_virus_1681.jpeg",
            "person7_bacteria_29.jpeg",
            "person8_virus_27.jpeg",
        ],
        "val/NORMAL": ["NORMAL2-IM-1427-0001.jpeg"],
        "val/PNEUMONIA": ["person1946_bacteria_4874.jpeg"],
        "test/NORMAL": ["IM-0001-0001.jpeg"],
        "test/PNEUMONIA": ["person100_bacteria_475.jpeg", "person1610_virus_2793.jpeg"],
    }
    for folder, names in files.items():
        for name in names:
            image(base / folder / name, mode="L")
    image(base / "__MACOSX" / "train" / "NORMAL" / "._IM-0115-0001.jpeg")
    return tmp


def test_pneumonia_labels_and_official_split(tmp_path):
    dl = pneumonia_datalist(make_pneumonia(tmp_path))
    assert (len(dl["training"]), len(dl["validation"]), len(dl["test"])) == (10, 2, 3)
    by_name = {Path(i["image"]).name: i for s in ("training", "validation", "test") for i in dl[s]}
    assert by_name["IM-0115-0001.jpeg"]["label"] == 0 and by_name["IM-0115-0001.jpeg"]["pathogen"] == "normal"
    assert by_name["person1_bacteria_1.jpeg"]["label"] == 1
    assert (
        by_name["person1_bacteria_1.jpeg"]["pathogen"] == "bacteria"
        and by_name["person1_bacteria_1.jpeg"]["patient_id"] == "person1"
    )
    assert by_name["person3_virus_15.jpeg"]["pathogen"] == "virus"
    three = pneumonia_datalist(tmp_path, three_class=True)
    labels = {Path(i["image"]).name: i["label"] for i in three["training"]}
    assert (labels["IM-0117-0001.jpeg"], labels["person7_bacteria_29.jpeg"], labels["person8_virus_27.jpeg"]) == (
        0,
        1,
        2,
    )
    assert three["labels"] == ["normal", "bacteria", "virus"]


def test_pneumonia_patient_level_validation(tmp_path):
    dl = pneumonia_datalist(make_pneumonia(tmp_path), val_fraction=0.5, seed=2)
    assert dl == pneumonia_datalist(tmp_path, val_fraction=0.5, seed=2)
    person1 = [s for s in ("training", "validation") for i in dl[s] if i["patient_id"] == "person1"]
    assert len(person1) == 2 and len(set(person1)) == 1  # both images of person1 on the same side
    assert {i["label"] for i in dl["validation"]} == {0, 1}  # stratified
    assert len(dl["training"]) + len(dl["validation"]) == 12
    with pytest.raises(DataValidationError, match="NORMAL/ and PNEUMONIA/"):
        pneumonia_datalist(tmp_path / "chest_xray" / "train")


# ---------------------------------------------------------------------------------------------
# ISBI 2015 cephalometric
# ---------------------------------------------------------------------------------------------


def ceph_points(case: int, who: str, n: int = 19) -> list[tuple[int, int]]:
    shift = 0 if who == "senior" else 4
    return [(100 + 10 * i + case + shift, 200 + 5 * i + case - shift) for i in range(n)]


def make_ceph(tmp: Path, n: int = 19, short: dict | None = None) -> Path:
    """RawImage/{TrainingData,Test1Data,Test2Data}/NNN.bmp + AnnotationsByMD/400_{senior,junior}/NNN.txt."""
    short = short or {}
    subsets = {"TrainingData": range(1, 7), "Test1Data": range(7, 10), "Test2Data": range(10, 12)}
    for folder, cases in subsets.items():
        for case in cases:
            image(tmp / "RawImage" / folder / f"{case:03d}.bmp", size=(12, 15))
            for who in ("senior", "junior"):
                lines = [f"{x},{y}" for x, y in ceph_points(case, who, n)]
                lines = lines[: short.get((case, who), n)]
                if len(lines) == n:
                    lines += ["1", "2", "1", "3", "2", "1", "1", "2"]  # the challenge's classification labels
                write(tmp / "AnnotationsByMD" / f"400_{who}" / f"{case:03d}.txt", "\r\n".join(lines) + "\r\n")
    return tmp


def test_ceph_mean_of_annotators_and_official_split(tmp_path):
    dl = isbi2015_ceph_datalist(make_ceph(tmp_path))
    assert [len(dl[k]) for k in ("training", "validation", "test", "test1", "test2")] == [6, 0, 5, 3, 2]
    first = dl["training"][0]
    assert first["id"] == "001" and first["subset"] == "TrainingData"
    assert first["landmarks"][0] == [(101 + 105) / 2, (201 + 197) / 2]  # mean of senior and junior
    assert first["spacing"] == [0.1, 0.1] and first["missing"] == []
    assert first["landmark_names"] == list(ISBI2015_LANDMARKS) and len(ISBI2015_LANDMARKS) == 19
    assert ISBI2015_LANDMARKS[0] == "sella" and ISBI2015_LANDMARKS[18] == "articulare"
    senior = isbi2015_ceph_datalist(tmp_path, annotator="senior")
    assert senior["training"][0]["landmarks"][3] == [131.0, 216.0]
    assert isbi2015_ceph_datalist(tmp_path, annotator="junior")["training"][0]["landmarks"][3] == [135.0, 212.0]
    held = isbi2015_ceph_datalist(tmp_path, num_validation=2, seed=4)
    assert (len(held["training"]), len(held["validation"]), len(held["test"])) == (4, 2, 5)  # the 130/20/250 protocol
    assert held == isbi2015_ceph_datalist(tmp_path, num_validation=2, seed=4)


def test_ceph_short_annotation_is_nan_and_marked(tmp_path):
    make_ceph(tmp_path, short={(2, "junior"): 15})
    (tmp_path / "AnnotationsByMD" / "400_senior" / "008.txt").unlink()
    dl = isbi2015_ceph_datalist(tmp_path)
    two = dl["training"][1]
    assert two["missing"] == [15, 16, 17, 18]
    assert all(math.isnan(v) for p in two["landmarks"][15:] for v in p)
    assert not any(math.isnan(v) for p in two["landmarks"][:15] for v in p)
    eight = dl["test1"][1]
    assert eight["id"] == "008" and eight["missing"] == list(range(19))
    assert {Path(i["image"]).name for i in dl["incomplete"]} == {"002.bmp", "008.bmp"}
    assert isbi2015_ceph_datalist(tmp_path, annotator="senior")["training"][1]["missing"] == []


def test_ceph_other_number_of_landmarks(tmp_path):
    dl = isbi2015_ceph_datalist(make_ceph(tmp_path, n=5), num_landmarks=5, spacing=(0.2, 0.25))
    item = dl["training"][0]
    assert len(item["landmarks"]) == 5 and item["missing"] == [] and item["spacing"] == [0.2, 0.25]
    assert item["landmark_names"] == ["L1", "L2", "L3", "L4", "L5"]
    # a 19-landmark reading of 5-landmark files marks the rest as missing
    assert isbi2015_ceph_datalist(tmp_path)["training"][0]["missing"] == list(range(5, 19))
    with pytest.raises(DataValidationError, match="RawImage/ and AnnotationsByMD/"):
        isbi2015_ceph_datalist(tmp_path / "RawImage")


# ---------------------------------------------------------------------------------------------
# Digital Hand Atlas
# ---------------------------------------------------------------------------------------------


def hand_points(k: int) -> list[tuple[float, float]]:
    pts = [(float(300 + 7 * i + k), float(1900 - 40 * i)) for i in range(37)]
    pts[0] = (300.0 + k, 1900.0)
    pts[4] = (300.0 + k + 250.0 + 10 * k, 1900.0)  # wrist: 250 + 10k pixels apart
    return pts


def make_hand(tmp: Path, ids=(3142, 3143, 3144, 3145, 3146, 3147), cv: bool = True) -> Path:
    rows = []
    for k, image_id in enumerate(ids):
        rows.append(",".join([str(image_id)] + [f"{c:g}" for p in hand_points(k) for c in p]))
        if image_id != ids[-1]:  # the last annotated image is not there
            image(tmp / "images" / f"{image_id}.jpg", size=(20, 24))
    write(tmp / "setup" / "all.csv", "\n".join(rows) + "\n")
    if cv:
        write(tmp / "setup" / "cv" / "set1" / "train.txt", "\n".join(map(str, ids[:4])) + "\n")
        write(tmp / "setup" / "cv" / "set1" / "test.txt", "\n".join(map(str, ids[4:])) + "\n")
    return tmp


def test_hand_atlas_spacing_from_the_wrist(tmp_path):
    root = make_hand(tmp_path / "d")
    dl = hand_atlas_datalist(root, val_fraction=0.0)
    assert [i["id"] for i in dl["training"]] == ["3142", "3143", "3144", "3145"]  # cv/set1/train.txt
    assert [i["id"] for i in dl["test"]] == ["3146"]
    assert dl["skipped"][0]["image"] == "3147" and "no image" in dl["skipped"][0]["reason"]
    for k, item in enumerate(dl["training"]):
        assert item["spacing"] == pytest.approx([50.0 / (250 + 10 * k)] * 2)
        assert item["landmarks"][4] == [300.0 + k + 250 + 10 * k, 1900.0] and len(item["landmarks"]) == 37
    other = hand_atlas_datalist(root, val_fraction=0.0, wrist_indices=(1, 5))
    p1, p5 = hand_points(0)[1], hand_points(0)[5]
    assert other["training"][0]["spacing"][0] == pytest.approx(50.0 / math.dist(p1, p5))
    (root / "images").rename(tmp_path / "jpgs")  # images kept apart from the setup
    apart = hand_atlas_datalist(root, val_fraction=0.0, image_dir=tmp_path / "jpgs")
    assert [i["id"] for i in apart["training"]] == ["3142", "3143", "3144", "3145"]


def test_hand_atlas_seeded_split_and_missing_coordinates(tmp_path):
    make_hand(tmp_path, ids=tuple(range(5000, 5020)), cv=False)
    csv = tmp_path / "setup" / "all.csv"
    lines = csv.read_text().splitlines()
    cells = lines[0].split(",")
    cells[1:3] = ["nan", "nan"]  # landmark 0 (a wrist landmark) unknown
    lines[0] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    dl = hand_atlas_datalist(tmp_path, seed=5)
    assert (len(dl["training"]), len(dl["validation"]), len(dl["test"])) == (13, 2, 4)  # 19 images: 4 test, 2 of 15 val
    assert json.dumps(dl) == json.dumps(hand_atlas_datalist(tmp_path, seed=5))  # (NaN != NaN in ==)
    ids = [set(i["id"] for i in dl[s]) for s in ("training", "validation", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    first = next(i for s in ("training", "validation", "test") for i in dl[s] if i["id"] == "5000")
    assert first["missing"] == [0] and math.isnan(first["spacing"][0])
    assert [Path(i["image"]).stem for i in dl["incomplete"]] == ["5000"]
    with pytest.raises(DataValidationError, match="cv_set=2 but there is no"):
        hand_atlas_datalist(tmp_path, cv_set=2)
    csv.write_text("3142,1,2,3\n")
    with pytest.raises(DataValidationError, match="line 1: 4 values"):
        hand_atlas_datalist(tmp_path)
    with pytest.raises(DataValidationError, match="no setup/all.csv"):
        hand_atlas_datalist(tmp_path / "images")


# ---------------------------------------------------------------------------------------------
# Shenzhen with lung masks
# ---------------------------------------------------------------------------------------------


def make_shenzhen(tmp: Path, n: int = 20) -> Path:
    """The Kaggle 'Chest X-ray Masks and Labels' layout: Lung Segmentation/{CXR_png,ClinicalReadings,masks}."""
    base = tmp / "Lung Segmentation"
    for i in range(1, n + 1):
        tb = i % 2
        name = f"CHNCXR_{i:04d}_{tb}"
        image(base / "CXR_png" / f"{name}.png", size=(16, 16), value=60 + i)
        reading = "normal" if not tb else "STB,ATB,Tuberculosis in the right upper lobe"
        write(base / "ClinicalReadings" / f"{name}.txt", f"{'male' if i % 3 else 'female'} {20 + i}yrs\n{reading}\n")
        if i not in (3, 8):  # no mask for these two
            image(base / "masks" / f"{name}_mask.png", size=(16, 16), value=255)
    image(base / "CXR_png" / "MCUCXR_0001_0.png")  # Montgomery images share the folder
    image(base / "masks" / "MCUCXR_0001_0.png")
    return tmp


def test_shenzhen_masks_skipped_and_split(tmp_path):
    dl = shenzhen_datalist(make_shenzhen(tmp_path), seed=7)
    items = [i for s in ("training", "validation", "test") for i in dl[s]]
    assert len(items) == 18 and not any("MCUCXR" in i["image"] for i in items)
    assert sorted(Path(s["image"]).name for s in dl["skipped"]) == ["CHNCXR_0003_1.png", "CHNCXR_0008_0.png"]
    assert all("no lung mask" in s["reason"] for s in dl["skipped"])
    one = next(i for i in items if i["id"] == "CHNCXR_0001_1")
    assert one["label"].endswith("masks/CHNCXR_0001_1_mask.png") and one["tb"] == 1
    assert (one["sex"], one["age"]) == ("male", 21) and "Tuberculosis" in one["reading"]
    assert (len(dl["test"]), len(dl["validation"])) == (4, 2)  # 0.2 / 0.1 of each TB stratum of 9
    assert {i["tb"] for i in dl["test"]} == {0, 1}
    assert dl == shenzhen_datalist(tmp_path, seed=7)
    assert dl != shenzhen_datalist(tmp_path, seed=8)
    kept = shenzhen_datalist(tmp_path, keep_unlabelled=True)
    assert len(kept["unlabelled"]) == 2 and kept["skipped"] == []
    cls = shenzhen_datalist(tmp_path, task="classification")
    cls_items = [i for s in ("training", "validation", "test") for i in cls[s]]
    assert len(cls_items) == 20 and {i["label"] for i in cls_items} == {0, 1}
    assert sum("mask" in i for i in cls_items) == 18


def test_shenzhen_nlm_layout_with_mask_folder(tmp_path):
    """NLM's ChinaSet_AllFiles plus Stirenko et al.'s mask/ folder."""
    make_shenzhen(tmp_path / "k", n=6)
    (tmp_path / "k" / "Lung Segmentation").rename(tmp_path / "ChinaSet_AllFiles")
    (tmp_path / "ChinaSet_AllFiles" / "masks").rename(tmp_path / "mask")
    dl = shenzhen_datalist(tmp_path)
    assert len(dl["skipped"]) == 1 and sum(len(dl[s]) for s in ("training", "validation", "test")) == 5
    (tmp_path / "mask").rename(tmp_path / "elsewhere")
    with pytest.raises(DataValidationError, match="no lung mask folder"):
        shenzhen_datalist(tmp_path)
    assert (
        sum(
            len(v)
            for k, v in shenzhen_datalist(tmp_path, mask_dir=tmp_path / "elsewhere").items()
            if k in ("training", "test", "validation")
        )
        == 5
    )
    with pytest.raises(DataValidationError, match="no CXR_png/CHNCXR"):
        shenzhen_datalist(tmp_path / "elsewhere")


# ---------------------------------------------------------------------------------------------
# JSRT + SCR
# ---------------------------------------------------------------------------------------------


def raw_img(path: Path, stored: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.astype(">u2").tofile(path)
    return path


def pattern(side: int) -> np.ndarray:
    """Stored 12-bit values, distinct by row and column: value = 2 * row + column (row-major)."""
    rows, cols = np.mgrid[0:side, 0:side]
    return ((2 * rows + cols) % 4096).astype(np.uint16)


def test_jsrt_raw_reader_values_and_orientation(tmp_path):
    from monai.transforms import LoadImage

    from mimtl.io import load_image

    stored = pattern(2048)
    stored[0, 5] = 4095  # row 0, column 5: a bright (stored-high = dark film) pixel near the top
    path = raw_img(tmp_path / "JPCLN001.IMG", stored)
    assert path.stat().st_size == 2048 * 2048 * 2
    pixels = read_jsrt(path)  # (rows, columns), inverted
    assert pixels.shape == (2048, 2048) and pixels[0, 5] == 0 and pixels[7, 3] == 4095 - (2 * 7 + 3)
    assert read_jsrt(path, invert=False)[7, 3] == 17

    img = LoadImage(reader=JSRTReader(normalize=False), image_only=True)(path)
    assert img.shape == (2048, 2048)  # [x, y]: x = column, y = row, like PILReader
    assert float(img[3, 7]) == 4095 - 17 and float(img[5, 0]) == 0.0
    assert img.meta["spacing"].tolist() == [0.175, 0.175]
    img = load_image(path, reader="JSRTReader")  # registered by name; [0, 1] by default
    assert img.shape == (1, 2048, 2048) and float(img[0, 3, 7]) == pytest.approx((4095 - 17) / 4095)
    assert img.meta["spacing_known"] and img.meta["spacing"].tolist() == [0.175, 0.175]
    assert JSRTReader().verify_suffix(path) and not JSRTReader().verify_suffix(tmp_path / "x.png")

    # same orientation as a PNG read by PILReader: draw the pattern as an image and compare
    png = tmp_path / "same.png"
    Image.fromarray((4095 - stored[:32, :32]).astype(np.uint16)).save(png)
    small = raw_img(tmp_path / "small.IMG", stored[:32, :32].copy())
    a = LoadImage(image_only=True)(png)
    b = LoadImage(reader=JSRTReader(normalize=False), image_only=True)(small)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    nii = convert_jsrt(small, tmp_path / "small.nii.gz")
    np.testing.assert_array_equal(np.asarray(LoadImage(image_only=True)(nii)), np.asarray(b))
    bad = tmp_path / "bad.IMG"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(Exception, match="not a square 16-bit raw image"):
        read_jsrt(bad)


SCR_FOLDS = {
    1: ["JPCLN001", "JPCLN003", "JPCNN001", "JPCNN003", "JPCLN005", "JPCNN005"],
    2: ["JPCLN002", "JPCNN002", "JPCLN004"],
}


def make_jsrt(tmp: Path, without: tuple[str, str] | None = None) -> Path:
    """All247images/*.IMG (tiny, 16 x 16) + the SCR archive's scratch/fold{1,2}/masks/<structure>/*.gif."""
    for fold, cases in SCR_FOLDS.items():
        for case in cases:
            raw_img(tmp / "All247images" / f"{case}.IMG", pattern(16))
            for k, structure in enumerate(("left lung", "right lung", "heart", "left clavicle", "right clavicle")):
                if (case, structure) == without:
                    continue
                mask = np.zeros((8, 8), np.uint8)
                mask[k, :] = 255  # row k belongs to structure k
                path = tmp / "scratch" / f"fold{fold}" / "masks" / structure / f"{case}.gif"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(path)
    return tmp


def test_jsrt_scr_folds_and_label_maps(tmp_path):
    dl = jsrt_datalist(make_jsrt(tmp_path / "d"), val_fraction=0.0, label_dir=tmp_path / "labels")
    assert sorted(i["id"] for i in dl["training"]) == sorted(SCR_FOLDS[1])
    assert sorted(i["id"] for i in dl["test"]) == sorted(SCR_FOLDS[2])
    item = next(i for i in dl["training"] if i["id"] == "JPCLN001")
    assert item["nodule"] == 1 and item["fold"] == 1 and item["spacing"] == [0.175, 0.175]
    assert item["left_lung"].endswith("fold1/masks/left lung/JPCLN001.gif") and "right_lung" in item and "heart" in item
    assert next(i for i in dl["training"] if i["id"] == "JPCNN001")["nodule"] == 0
    label = np.asarray(Image.open(item["label"]))
    assert label.shape == (8, 8) and label[0].tolist() == [1] * 8 and label[1, 0] == 2 and label[2, 0] == 3
    assert label[3:].max() == 0  # clavicles not requested
    assert dl["labels"] == {"0": "background", "1": "left lung", "2": "right lung", "3": "heart"}
    swapped = jsrt_datalist(tmp_path / "d", test_fold=1, val_fraction=0.34, seed=1)
    assert sorted(i["id"] for i in swapped["test"]) == sorted(SCR_FOLDS[1])
    assert len(swapped["validation"]) == 1 and {i["fold"] for i in swapped["validation"]} == {2}


def test_jsrt_bad_input(tmp_path):
    make_jsrt(tmp_path, without=("JPCNN002", "heart"))
    with pytest.raises(DataValidationError, match="JPCNN002.IMG: no SCR mask for heart"):
        jsrt_datalist(tmp_path)
    dl = jsrt_datalist(tmp_path, on_missing="skip")
    assert [Path(s["image"]).name for s in dl["skipped"]] == ["JPCNN002.IMG"]
    assert len(jsrt_datalist(tmp_path, structures="left lung")["skipped"]) == 0
    with pytest.raises(DataValidationError, match="no SCR masks under"):
        jsrt_datalist(tmp_path / "All247images")
    with pytest.raises(DataValidationError, match="no JPCLNnnn.IMG"):
        jsrt_datalist(tmp_path / "scratch")


# ---------------------------------------------------------------------------------------------
# BraTS
# ---------------------------------------------------------------------------------------------


def nifti(path: Path, value: int = 1, ext: str = ".nii.gz") -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 3), value, np.int16), np.eye(4)), str(path) + ext)


def brats_case(
    folder: Path, case: str, ext: str = ".nii.gz", seg_name: str | None = None, modalities=("t1", "t1ce", "t2", "flair")
) -> None:
    for k, m in enumerate(modalities):
        nifti(folder / case / f"{case}_{m}", k, ext)
    nifti(folder / case / (seg_name or f"{case}_seg"), 2, ext)


def make_brats2019(tmp: Path) -> Path:
    base = tmp / "MICCAI_BraTS_2019_Data_Training"
    for i in range(6):
        brats_case(base / "HGG", f"BraTS19_2013_{10 + i}_1")
    for i in range(4):
        brats_case(base / "LGG", f"BraTS19_TCIA10_{100 + i}_1")
    return tmp


def make_brats2020(tmp: Path) -> Path:
    base = tmp / "MICCAI_BraTS2020_TrainingData"
    rows = [
        "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,"
        "BraTS_2019_subject_ID,BraTS_2020_subject_ID"
    ]
    for i in range(1, 11):
        case = f"BraTS20_Training_{i:03d}"
        grade = "HGG" if i <= 7 else "LGG"
        rows.append(f"{grade},Brats17_CBICA_AA{i}_1,Brats18_CBICA_AA{i}_1,NA,BraTS19_CBICA_AA{i}_1,{case}")
        # the Kaggle copy: uncompressed .nii; one case's segmentation has an odd name (355 in the real set)
        brats_case(base, case, ext=".nii", seg_name="W39_1998.09.19_Segm" if i == 5 else None)
    write(base / "name_mapping.csv", "\n".join(rows) + "\n")
    return tmp


def test_brats_2019_grades_from_folders(tmp_path):
    dl = brats_datalist(make_brats2019(tmp_path), val_fraction=0.25, test_fraction=0.25, seed=0)
    items = [i for s in ("training", "validation", "test") for i in dl[s]]
    assert len(items) == 10
    hgg = next(i for i in items if i["id"] == "BraTS19_2013_10_1")
    assert (hgg["grade"], hgg["grade_label"]) == ("HGG", 1)
    assert [Path(p).name for p in hgg["image"]] == [
        f"BraTS19_2013_10_1_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")
    ]
    assert hgg["label"].endswith("BraTS19_2013_10_1_seg.nii.gz")
    lgg = next(i for i in items if i["id"] == "BraTS19_TCIA10_100_1")
    assert (lgg["grade"], lgg["grade_label"]) == ("LGG", 0)
    # stratified: each grade split on its own (HGG 6 -> 2/2/2... rounded; LGG 4 -> 1/1/2)
    for s in ("validation", "test"):
        assert {i["grade"] for i in dl[s]} == {"HGG", "LGG"}
    assert dl == brats_datalist(tmp_path, val_fraction=0.25, test_fraction=0.25, seed=0)


def test_brats_2020_grades_from_name_mapping(tmp_path):
    dl = brats_datalist(make_brats2020(tmp_path))
    items = {i["id"]: i for s in ("training", "validation", "test") for i in dl[s]}
    assert len(items) == 10 and dl["skipped"] == []
    assert items["BraTS20_Training_001"]["grade"] == "HGG" and items["BraTS20_Training_009"]["grade_label"] == 0
    assert items["BraTS20_Training_005"]["label"].endswith("W39_1998.09.19_Segm.nii")
    assert items["BraTS20_Training_002"]["image"][0].endswith("BraTS20_Training_002_flair.nii")


def test_brats_2021_has_no_grade_and_bad_input(tmp_path):
    base = tmp_path / "BraTS2021_Training_Data"
    for i in range(5):
        brats_case(base, f"BraTS2021_{i:05d}")
    with pytest.raises(DataValidationError, match="BraTS 2021 and later .* publish no tumour grade"):
        brats_datalist(tmp_path)
    dl = brats_datalist(tmp_path, require_grade=False)
    assert {i["grade"] for s in ("training", "validation", "test") for i in dl[s]} == {None}
    (base / "BraTS2021_00003" / "BraTS2021_00003_t2.nii.gz").unlink()
    with pytest.raises(DataValidationError, match="BraTS2021_00003: no t2 file"):
        brats_datalist(tmp_path, require_grade=False)
    skipped = brats_datalist(tmp_path, require_grade=False, on_missing="skip")["skipped"]
    assert len(skipped) == 1 and "no t2" in skipped[0]["reason"]
    with pytest.raises(DataValidationError, match="no case folders under"):
        brats_datalist(make_chexpert(tmp_path / "x"))


# ---------------------------------------------------------------------------------------------
# write_datalist, adapt, seeded_split
# ---------------------------------------------------------------------------------------------


def test_write_datalist_relative_paths_round_trip(tmp_path):
    dl = shenzhen_datalist(make_shenzhen(tmp_path / "data"))
    out = write_datalist(dl, tmp_path / "lists" / "shenzhen.json")
    content = json.loads(out.read_text())
    first = content["training"][0]
    assert first["image"].startswith("../data/Lung Segmentation/CXR_png/") and not Path(first["image"]).is_absolute()
    assert [p.name for p in out.parent.iterdir()] == ["shenzhen.json"]  # no temporary file left behind
    for key in ("training", "validation", "test"):
        items = load_datalist(out, key, keys=("image", "label"))
        assert [Path(i["image"]).resolve() for i in items] == [Path(i["image"]) for i in dl[key]]
        assert [Path(i["label"]).resolve() for i in items] == [Path(i["label"]) for i in dl[key]]

    brats = brats_datalist(make_brats2019(tmp_path / "b"))
    path = write_datalist(brats, tmp_path / "b" / "brats.json")
    back = load_datalist(path, "training", keys=("image", "label"))
    assert [str(Path(p).resolve()) for p in back[0]["image"]] == brats["training"][0]["image"]
    assert len(back[0]["image"]) == 4


def test_write_datalist_nan_is_null(tmp_path):
    make_ceph(tmp_path / "c", short={(1, "senior"): 18})
    dl = isbi2015_ceph_datalist(tmp_path / "c")
    path = write_datalist(dl, tmp_path / "ceph.json")
    text = path.read_text()
    assert "NaN" not in text
    first = json.loads(text)["training"][0]
    assert first["landmarks"][18] == [None, None] and first["missing"] == [18]
    assert np.isnan(np.asarray(first["landmarks"], dtype=float)[18]).all()
    assert first["image"] == "c/RawImage/TrainingData/001.bmp"


def test_adapt_registry_and_cli_signature(tmp_path):
    assert set(ADAPTERS) == {
        "chexpert",
        "chestxray14",
        "pneumonia",
        "isbi2015_ceph",
        "hand_atlas",
        "shenzhen",
        "shenzhen_landmarks",
        "jsrt",
        "brats",
        "montgomery",
    }
    make_pneumonia(tmp_path / "p")
    dl = adapt("Chest-X-Ray-Pneumonia", tmp_path / "p", out=tmp_path / "p.json", val_fraction=0.5)
    assert json.loads((tmp_path / "p.json").read_text())["training"][0]["image"].startswith("p/chest_xray/train/")
    assert dl == pneumonia_datalist(tmp_path / "p", val_fraction=0.5)
    with pytest.raises(ValueError, match="no data set adapter 'mnist'; available: chexpert"):
        adapt("mnist", tmp_path)
    with pytest.raises(ValueError, match="no option.*uncertainty.*its options: labels, uncertain"):
        adapt("chexpert", tmp_path, uncertainty="ones")
    with pytest.raises(DataValidationError, match="no train.csv under"):
        adapt("chexpert", tmp_path / "p")


def test_seeded_split_is_deterministic_grouped_and_stratified():
    items = [{"image": f"i{k}", "patient": f"p{k // 2}", "y": (k // 2) % 3} for k in range(60)]
    a = seeded_split(
        items, {"test": 0.2, "validation": 0.1}, seed=1, group=lambda i: i["patient"], stratify=lambda i: i["y"]
    )
    b = seeded_split(
        items[::-1], {"test": 0.2, "validation": 0.1}, seed=1, group=lambda i: i["patient"], stratify=lambda i: i["y"]
    )
    assert {k: sorted(i["image"] for i in v) for k, v in a.items()} == {
        k: sorted(i["image"] for i in v) for k, v in b.items()
    }
    patients = {k: {i["patient"] for i in v} for k, v in a.items()}
    assert not (patients["training"] & patients["test"] or patients["training"] & patients["validation"])
    assert [len(a[k]) for k in ("training", "validation", "test")] == [42, 6, 12]  # per stratum of 10 patients: 7/1/2
    for k in ("validation", "test"):
        assert {i["y"] for i in a[k]} == {0, 1, 2}
    c = seeded_split(
        items, {"test": 0.2, "validation": 0.1}, seed=2, group=lambda i: i["patient"], stratify=lambda i: i["y"]
    )
    assert {i["image"] for i in c["test"]} != {i["image"] for i in a["test"]}
    with pytest.raises(ValueError, match="leave nothing"):
        seeded_split(items, {"test": 0.6, "validation": 0.5})
