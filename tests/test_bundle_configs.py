"""What the shipped configs say once (common.yaml) reaches every workflow; settings are not dropped between them."""

from __future__ import annotations

import pytest

from mimtl.bundle import load_bundle
from mimtl.metrics import SuccessDetectionRateHandler, sdr_handlers

WORKFLOWS = ("train", "evaluate", "inference", "multi_gpu_train")


@pytest.mark.parametrize("name", ["xray_color_classification", "xray_landmark_detection"])
def test_common_config_is_merged_first_into_every_workflow(name):
    bundle = load_bundle(name)
    for workflow in WORKFLOWS:
        files = [f.name for f in bundle.config_files(workflow)]
        assert files[0] == "common.yaml", (workflow, files)
    assert [f.name for f in bundle.config_files("experiment")] == ["experiment.yaml"]


@pytest.mark.parametrize("name", ["xray_color_classification", "xray_landmark_detection"])
def test_preprocessing_and_network_are_defined_once(name):
    """Training and inference read the film the same way and build the same network."""
    bundle = load_bundle(name)
    common = bundle.config_file("common").read_text()
    for workflow in ("train", "inference"):
        text = bundle.config_file(workflow).read_text()
        for said_once in ("LoadImaged", "network_def:", "ScaleIntensityd", "memory_format=torch.channels_last"):
            assert said_once in common and said_once not in text, (workflow, said_once)
    train, infer = bundle.parser("train"), bundle.parser("inference")
    for key in ("image_size", "channels_last", "network_def::_target_"):
        assert train[key] == infer[key], key


@pytest.mark.parametrize("loss_kind, activation", [("adaptive_wing", None), ("mse", None), ("disc_ce", "sigmoid")])
def test_landmark_inference_decodes_with_the_activation_of_the_loss(loss_kind, activation):
    """A disc_ce model outputs logits: inference must decode it through a sigmoid as validation does."""
    bundle = load_bundle("xray_landmark_detection")
    for workflow in ("train", "inference"):
        parser = bundle.parser(workflow, loss_kind=loss_kind)
        assert parser.get_parsed_content("activation") == activation, workflow
        assert parser["decode"]["transforms"][0]["activation"] == "@activation", workflow


def test_landmark_validation_reports_sdr_at_the_configured_thresholds():
    bundle = load_bundle("xray_landmark_detection")
    parser = bundle.parser("train", sdr_thresholds=[10.0, 20.0, 30.0, 40.0])  # the Shenzhen override's px radii
    metrics = parser.get_parsed_content("validate::additional_metrics")
    assert list(metrics) == ["sdr_10", "sdr_20", "sdr_30", "sdr_40"]
    default = load_bundle("xray_landmark_detection").parser("train")
    assert list(default.get_parsed_content("validate::additional_metrics")) == ["sdr_2", "sdr_2.5", "sdr_3", "sdr_4"]


def test_sdr_handlers_names_and_errors():
    handlers = sdr_handlers([2, 2.5])
    assert list(handlers) == ["sdr_2", "sdr_2.5"] and all(
        isinstance(h, SuccessDetectionRateHandler) for h in handlers.values()
    )
    for bad in ([], [0.0], [-1.0], [float("nan")], [2.0, 2.0]):
        with pytest.raises(ValueError, match="sdr_thresholds"):
            sdr_handlers(bad)


@pytest.mark.parametrize("name", ["xray_color_classification", "xray_landmark_detection"])
def test_monai_bundle_load_returns_the_network_with_its_weights(name, tmp_path, monkeypatch):
    """MONAI's own loader reads configs/inference.json (generated, checked current) and loads model.pt, offline."""
    import monai.bundle
    import torch

    from mimtl.bundle import load_checkpoint
    from mimtl.bundle.monai_config import stale_monai_configs

    bundle = load_bundle(name)
    assert stale_monai_configs(bundle) == []
    monkeypatch.setenv("MIMTL_CACHE_DIR", str(tmp_path / "cache"))
    net = monai.bundle.load(name=name, bundle_dir=str(bundle.path.parent), workflow_type="inference", device="cpu")
    expected = load_checkpoint(bundle.weights_path)
    state = net.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    assert not (tmp_path / "cache").exists()  # building the network read no data


def test_stale_monai_config_is_reported(tmp_path):
    import shutil

    from mimtl.bundle.monai_config import stale_monai_configs, write_monai_configs

    copy = tmp_path / "xray_landmark_detection"
    shutil.copytree(load_bundle("xray_landmark_detection").path / "configs", copy / "configs")
    bundle = load_bundle(copy)
    common = copy / "configs" / "common.yaml"
    common.write_text(common.read_text().replace("sigma: 5.0", "sigma: 3.0"))
    assert stale_monai_configs(bundle) == ["configs/inference.json differs from its YAML sources"]
    write_monai_configs(bundle)
    assert stale_monai_configs(bundle) == []
    (copy / "configs" / "inference.json").unlink()
    assert stale_monai_configs(bundle) == ["configs/inference.json is missing"]


@pytest.mark.parametrize("name", ["xray_color_classification", "xray_landmark_detection"])
def test_metadata_value_ranges_are_numbers(name):
    """MONAI's official schema (meta_schema_20240725) wants two numbers; ours is at least as strict."""
    import json

    import jsonschema

    from mimtl.bundle import METADATA_SCHEMA

    meta = load_bundle(name).metadata
    schema = json.loads(METADATA_SCHEMA.read_text())
    jsonschema.validate(meta, schema)
    for kind in ("inputs", "outputs"):
        for spec in meta["network_data_format"][kind].values():
            assert len(spec["value_range"]) == 2 and all(isinstance(v, (int, float)) for v in spec["value_range"])
    broken = json.loads(json.dumps(meta))
    next(iter(broken["network_data_format"]["outputs"].values()))["value_range"] = [None, None]
    with pytest.raises(jsonschema.ValidationError, match="None is not of type 'number'"):
        jsonschema.validate(broken, schema)
