"""Robustness evaluation (mimtl.metrics.robustness) with thresholding "networks" on tiny synthetic films.

Thresholding is a real segmenter of a bright disk on a dark background: perfect on clean films,
worse under noise, and a 3x3 median filter before the threshold makes it more robust to impulse
noise. These are the behaviours the evaluation must measure.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigParser
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged
from PIL import Image

from mimtl.metrics import RobustnessEvaluation, bootstrap_interval, mean_corruption_error
from mimtl.transforms import CORRUPTIONS as ALL_CORRUPTIONS

CORRUPTIONS = ("gaussian_noise", "impulse_noise", "elastic_transform", "contrast")
SEVERITIES = (1, 3, 5)


def make_films(folder, n=6, size=64, low=120, high=135):
    """Low-contrast disks (8-bit ``high`` on ``low``) and their label maps; returns the datalist path."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    items = []
    for i in range(n):
        cy, cx, r = 28 + (i % 3) * 4, 30 + (i % 2) * 5, 12 + i % 4
        label = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).astype(np.uint8)
        Image.fromarray(np.where(label, high, low).astype(np.uint8)).save(folder / f"film{i}.png")
        Image.fromarray(label).save(folder / f"film{i}_label.png")
        items.append({"image": f"film{i}.png", "label": f"film{i}_label.png", "spacing": [0.5, 0.5]})
    path = folder / "datalist.json"
    path.write_text(json.dumps({"test": items}))
    return path


def unit_range():
    """8-bit films to [0, 1] by their type's range (min-max would undo the low contrast)."""
    return Compose(
        [
            LoadImaged(keys=["image", "label"], image_only=True),
            EnsureChannelFirstd(keys=["image", "label"]),
            ScaleIntensityRanged(keys="image", a_min=0, a_max=255, b_min=0, b_max=1),
        ]
    )


def threshold(x: torch.Tensor) -> torch.Tensor:
    return (x > 0.5).float()


def median_threshold(x: torch.Tensor) -> torch.Tensor:
    patches = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate").unfold(2, 3, 1).unfold(3, 3, 1)
    return (patches.reshape(*x.shape, 9).median(-1).values > 0.5).float()


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    return make_films(tmp_path_factory.mktemp("films"))


@pytest.fixture(scope="module")
def run(films, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    evaluation = RobustnessEvaluation(
        films,
        models={"threshold": threshold, "median": median_threshold},
        baseline="threshold",
        preprocessing=unit_range(),
        sigmoid=False,
        corruptions=CORRUPTIONS,
        severities=SEVERITIES,
        batch_size=4,
        n_bootstrap=200,
        output_dir=out,
        progress=False,
    )
    return evaluation, evaluation.run(), out


def cell(summary, model, corruption, severity):
    return next(
        r for r in summary["models"][model]["per_cell"] if (r["corruption"], r["severity"]) == (corruption, severity)
    )


def test_clean_thresholding_is_perfect(run):
    _, summary, _ = run
    s = summary["models"]["threshold"]
    assert s["clean_dice"]["mean"] == pytest.approx(1.0)
    assert s["clean_hd95"]["mean"] == pytest.approx(0.0)
    assert summary["cells"][0] == ("clean", 0) and len(summary["cells"]) == 1 + len(CORRUPTIONS) * len(SEVERITIES)


def test_noise_degrades_thresholding_more_with_severity(run):
    _, summary, _ = run
    for noise in ("gaussian_noise", "impulse_noise"):
        dice = [cell(summary, "threshold", noise, s)["dice"] for s in SEVERITIES]
        hd = [cell(summary, "threshold", noise, s)["hd95"] for s in SEVERITIES]
        assert 1.0 > dice[0] > dice[1] > dice[2], (noise, dice)
        assert 0.0 < hd[0] < hd[2], (noise, hd)
    s = summary["models"]["threshold"]
    assert s["corrupted_dice"]["mean"] < s["clean_dice"]["mean"]
    # contrast pulls both regions towards the film's (dark) mean: the disk falls under the threshold
    assert cell(summary, "threshold", "contrast", 5)["dice"] < 0.5


def test_labels_are_warped_with_elastic_films(run):
    # thresholding stays right on a deformed film only if the reference mask was deformed with it
    _, summary, _ = run
    assert cell(summary, "threshold", "elastic_transform", 5)["dice"] > 0.97


def test_mce_against_baseline_with_paired_bootstrap(run):
    _, summary, _ = run
    base, median = summary["models"]["threshold"], summary["models"]["median"]
    assert base["mce"]["mean"] == pytest.approx(1.0)
    assert base["mce"]["ci"] == pytest.approx((1.0, 1.0))  # paired resampling: a model against itself
    # the median filter removes impulse noise: fewer errors there, so mCE below 1
    assert cell(summary, "median", "impulse_noise", 5)["dice"] > cell(summary, "threshold", "impulse_noise", 5)["dice"]
    assert median["mce"]["mean"] < 1.0
    lo, hi = median["mce"]["ci"]
    assert lo <= median["mce"]["mean"] <= hi
    for key in ("clean_dice", "corrupted_dice", "corrupted_hd95"):
        lo, hi = median[key]["ci"]
        assert lo <= median[key]["mean"] <= hi, key


def test_tables_and_heatmap_are_written(run):
    _, summary, out = run
    assert sorted(p.name for p in out.iterdir()) == [
        "robustness.csv",
        "robustness.md",
        "robustness_cases.csv",
        "robustness_heatmap.png",
    ]
    rows = list(csv.DictReader((out / "robustness_cases.csv").open()))
    assert len(rows) == 2 * len(summary["cells"]) * 6
    assert {r["case"] for r in rows} == {f"film{i}.png" for i in range(6)}
    per_cell = list(csv.DictReader((out / "robustness.csv").open()))
    assert len(per_cell) == 2 * len(summary["cells"])
    text = (out / "robustness.md").read_text()
    assert "| threshold | 1.000 [1.000, 1.000]" in text and "HD95 in mm" in text
    assert "| impulse_noise |" in text
    with Image.open(out / "robustness_heatmap.png") as png:
        assert png.size[0] > 200 and png.size[1] > 100


def test_baseline_from_an_earlier_runs_csv(run, films, tmp_path):
    _, summary, out = run
    again = RobustnessEvaluation(
        films,
        predictor=median_threshold,
        name="median",
        baseline=out / "robustness_cases.csv",
        baseline_model="threshold",
        preprocessing=unit_range(),
        sigmoid=False,
        corruptions=CORRUPTIONS,
        severities=SEVERITIES,
        n_bootstrap=200,
        progress=False,
    ).run()
    assert again["models"]["median"]["mce"]["mean"] == pytest.approx(
        summary["models"]["median"]["mce"]["mean"], abs=1e-4
    )
    assert again["files"] == []


def test_same_seed_same_numbers(films):
    kwargs = dict(
        predictor=threshold,
        preprocessing=unit_range(),
        sigmoid=False,
        corruptions=("gaussian_noise",),
        severities=(5,),
        n_bootstrap=50,
        progress=False,
    )
    a = RobustnessEvaluation(films, **kwargs).evaluate()
    b = RobustnessEvaluation(films, **kwargs).evaluate()
    c = RobustnessEvaluation(films, seed=1, **kwargs).evaluate()
    np.testing.assert_array_equal(a["model"][("gaussian_noise", 5)]["dice"], b["model"][("gaussian_noise", 5)]["dice"])
    assert not np.array_equal(a["model"][("gaussian_noise", 5)]["dice"], c["model"][("gaussian_noise", 5)]["dice"])


def test_network_with_inferer_logits_and_default_preprocessing(tmp_path):
    # a 1x1 convolution computing logits 40 (x - 0.5), through a MONAI inferer; films min-max scaled
    films = make_films(tmp_path, n=3, low=40, high=220)
    net = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(40.0)
        net.bias.fill_(-20.0)
    from monai.inferers import SimpleInferer

    summary = RobustnessEvaluation(
        films, network=net, inferer=SimpleInferer(), corruptions=("brightness",), severities=(1,), progress=False
    ).run()
    assert summary["models"]["model"]["clean_dice"]["mean"] == pytest.approx(1.0)
    assert summary["models"]["model"]["mce"] is None


def test_multiclass_outputs_are_argmaxed(films):
    def two_class(x):
        fg = (x > 0.5).float()
        return torch.cat([1 - fg, fg], dim=1)

    summary = RobustnessEvaluation(
        films,
        predictor=two_class,
        mode="multiclass",
        preprocessing=unit_range(),
        corruptions=("contrast",),
        severities=(1,),
        progress=False,
    ).run()
    assert summary["models"]["model"]["clean_dice"]["mean"] == pytest.approx(1.0)


def test_config_instantiates_it(films, tmp_path):
    parser = ConfigParser(
        {
            "films": str(films),
            "robustness": {
                "_target_": "mimtl.metrics.RobustnessEvaluation",
                "datalist": "@films",
                "network": {"_target_": "torch.nn.Identity"},
                "sigmoid": False,
                "corruptions": ["impulse_noise"],
                "severities": [5],
                "n_bootstrap": 20,
                "output_dir": str(tmp_path / "eval"),
                "progress": False,
            },
            "run": "$@robustness.run()",
        }
    )
    summary = parser.get_parsed_content("run")
    assert summary["models"]["model"]["corrupted_dice"]["mean"] < summary["models"]["model"]["clean_dice"]["mean"]
    assert (tmp_path / "eval" / "robustness.md").is_file()


def test_bad_input_is_a_clear_error(films, tmp_path):
    with pytest.raises(ValueError, match="no model to evaluate"):
        RobustnessEvaluation(films)
    with pytest.raises(ValueError, match="corruptions: unknown"):
        RobustnessEvaluation(films, predictor=threshold, corruptions=["frost"])
    with pytest.raises(ValueError, match="severities must be in"):
        RobustnessEvaluation(films, predictor=threshold, severities=[6])
    with pytest.raises(ValueError, match="baseline 'scratch' is neither"):
        RobustnessEvaluation(films, predictor=threshold, baseline="scratch")
    with pytest.raises(ValueError, match="has no split 'validation'"):
        RobustnessEvaluation(films, predictor=threshold, split="validation")
    unlabelled = [{"image": "film0.png"}]
    with pytest.raises(ValueError, match=r"datalist item 0 \(.*film0.png\) has no label"):
        RobustnessEvaluation(unlabelled, base_dir=films.parent, predictor=threshold, progress=False).evaluate()
    bad = make_films(tmp_path / "bad", n=2)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "bad" / "film1_label.png")
    with pytest.raises(ValueError, match=r"film1_label.png: label of size \(32, 32\) differs from its image"):
        RobustnessEvaluation(bad, predictor=threshold, corruptions=("fog",), severities=(1,), progress=False).run()


def test_mce_and_bootstrap_helpers():
    errors = {"a": np.array([0.1, 0.2]), "b": np.array([0.3, 0.3])}
    base = {"a": np.array([0.2, 0.4]), "b": np.array([0.3, 0.3])}
    assert mean_corruption_error(errors, base) == pytest.approx((0.5 + 1.0) / 2)
    lo, hi = bootstrap_interval(np.arange(1001.0), 0.9)
    assert (lo, hi) == pytest.approx((50.0, 950.0))


def test_lung_segmentation_bundle_robustness_config(tmp_path):
    """configs/robustness.yaml of xray_lung_segmentation runs over evaluate's films, labels and grid."""
    import shutil

    import mimtl
    from mimtl.networks import AuxReconSegNet

    bundle_dir = tmp_path / "xray_lung_segmentation"
    shutil.copytree(mimtl.load_bundle("xray_lung_segmentation").path, bundle_dir)
    (bundle_dir / "models").mkdir(exist_ok=True)
    torch.manual_seed(0)
    net = AuxReconSegNet(out_channels=3, encoder="efficientnet-lite0", decoder="unet", reconstruction=True)
    torch.save(net.state_dict(), bundle_dir / "models" / "model.pt")
    # three films with a label map: 1 left lung, 2 right lung, 3 heart
    films = tmp_path / "films"
    films.mkdir()
    items = []
    for i in range(3):
        label = np.zeros((64, 64), np.uint8)
        label[10:50, 8:26], label[10:50, 38:56], label[36:54, 26:38] = 1, 2, 3
        image = np.where(label == 0, 200, 60).astype(np.uint8) + np.uint8(i)
        Image.fromarray(image).save(films / f"f{i}.png")
        Image.fromarray(label).save(films / f"f{i}_label.png")
        items.append({"image": f"f{i}.png", "label": f"f{i}_label.png"})
    (films / "datalist.json").write_text(json.dumps({"training": items, "validation": items, "test": items}))
    workflow = mimtl.load_bundle(bundle_dir).workflow(
        "robustness",
        datalist=str(films / "datalist.json"),
        unseen=str(films / "datalist.json"),  # the demo's other-acquisition set by default
        **{
            "robustness#corruptions": ["elastic_transform"],
            "robustness#severities": [2],
            "robustness#n_bootstrap": 20,
            "robustness#progress": False,
            "amp": False,
        },
    )
    workflow.initialize()
    workflow.run()
    out = bundle_dir / "eval" / "robustness"
    rows = list(csv.DictReader((out / "robustness_cases.csv").open()))
    cells = [("clean", "0")] * 3 + [("elastic_transform", "2")] * 3 + [("unseen", "0")] * 3
    assert [(r["corruption"], r["severity"]) for r in rows] == cells
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert (out / "robustness_heatmap.png").is_file() and "| model |" in (out / "robustness.md").read_text()
    # the config lists every corruption and severity, so --set can narrow them
    full = yaml.safe_load((bundle_dir / "configs" / "robustness.yaml").read_text())
    config = full["robustness"]
    assert tuple(config["corruptions"]) == ALL_CORRUPTIONS and config["severities"] == [1, 2, 3, 4, 5]
    assert full["unseen_dir"]["task"] == "segmentation_other_acquisition" and config["unseen"] == "@unseen"


def test_unseen_set_is_scored_clean_and_reported(films, tmp_path):
    """An unseen set (here disks darker than the threshold: another 'acquisition') is scored on its
    own cases, clean, and reported beside the test split's figures."""
    unseen = make_films(tmp_path / "unseen", n=4, low=20, high=110)  # the disk is below 0.5 on this "scanner"
    out = tmp_path / "out"
    evaluation = RobustnessEvaluation(
        films,
        predictor=threshold,
        preprocessing=unit_range(),
        sigmoid=False,
        corruptions=("gaussian_noise",),
        severities=(1,),
        n_bootstrap=50,
        output_dir=out,
        progress=False,
        unseen=unseen,
    )
    s = evaluation.run()["models"]["model"]
    assert s["clean_dice"]["mean"] == pytest.approx(1.0)
    assert s["unseen_dice"]["mean"] == pytest.approx(0.0)  # a real drop, measured on the unseen cases
    assert s["unseen_hd95"]["mean"] > 0
    rows = list(csv.DictReader((out / "robustness_cases.csv").open()))
    assert len([r for r in rows if r["corruption"] == "unseen"]) == 4
    assert "unseen Dice" in (out / "robustness.md").read_text()
