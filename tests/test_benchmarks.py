"""Fast tests of the benchmark harness logic (benchmarks/harness.py) on tiny models.

No wall-clock assertions: timings are only checked to be finite and positive.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# the harness lives in the checkout's benchmarks/ folder, beside the scripts that import it
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import harness as bm  # noqa: E402

FAST = {"warmup": 1, "min_time": 0.0, "min_iters": 2}


def _tiny_conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )


def test_count_forward_flops_linear_and_conv():
    # Linear: batch * in * out multiply-adds, 2 FLOPs each.
    assert bm.count_forward_flops(torch.nn.Linear(16, 8), torch.randn(4, 16)) == 2 * 4 * 16 * 8
    # Conv2d 3->5, 3x3 kernel, padding 1 on 2x3x10x12: out positions * in channels * kernel size MACs.
    conv = torch.nn.Conv2d(3, 5, kernel_size=3, padding=1)
    assert bm.count_forward_flops(conv, torch.randn(2, 3, 10, 12)) == 2 * (2 * 5 * 10 * 12) * (3 * 3 * 3)
    # Tuple inputs are unpacked; element-wise ops are not counted.
    assert bm.count_forward_flops(torch.add, (torch.randn(3), torch.randn(3))) == 0


def test_machine_info_records_cpu_capabilities():
    m = bm.machine_info()
    assert set(m["cpu_flags"]) <= set(bm.CPU_FLAGS)
    for key in ("torch_cpu_capability", "mkldnn", "mkldnn_bf16", "mkldnn_fp16"):
        assert key in m, key
    assert m["mkldnn"] == torch.backends.mkldnn.is_available()
    assert m["mkldnn_bf16"] in (True, False, None)
    json.dumps(m)
    assert "| PyTorch CPU kernels |" in bm.results_to_markdown({"machine": m})
    assert "PyTorch CPU kernels" not in bm.results_to_markdown({"machine": {"cpu_model": "old JSON"}})


def test_measure_matmul_flops_fields():
    r = bm.measure_matmul_flops(torch.float32, n=64, threads=1, repeat=3, warmup=1)
    assert r["dtype"] == "float32" and r["n"] == 64 and r["threads"] == 1 and r["repeat"] == 3
    assert r["flop"] == 2 * 64**3
    assert math.isfinite(r["flops_per_s"]) and r["flops_per_s"] > 0
    assert r["gflops_per_s"] == pytest.approx(r["flops_per_s"] / 1e9)
    assert bm.measure_matmul_flops(torch.bfloat16, n=32, repeat=1, warmup=0)["dtype"] == "bfloat16"


def test_measure_throughput_fields_and_modes():
    calls = []

    def fn(x):
        calls.append(torch.is_grad_enabled())
        return x * 2

    r = bm.measure_throughput(fn, torch.ones(5, 3), warmup=2, min_time=0.0, min_iters=4)
    assert r["batch_size"] == 5 and r["iters"] == 4 and r["warmup"] == 2 and len(calls) == 6
    assert not any(calls)  # inference_mode by default
    assert r["items_per_s"] == pytest.approx(5 / r["median_s"])
    assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]

    made = []
    r = bm.measure_throughput(
        fn,
        make_batch=lambda: made.append(1) or torch.ones(2),
        batch_size=7,
        warmup=0,
        min_iters=3,
        max_iters=3,
        min_time=10.0,
        grad_mode="enabled",
    )
    assert r["iters"] == 3 and r["batch_size"] == 7 and calls[-1] is True and len(made) == 3
    with pytest.raises(ValueError):
        bm.measure_throughput(fn)
    with pytest.raises(ValueError):
        bm.measure_throughput(fn, torch.ones(1), grad_mode="bogus")


def test_compare_inference_paths_tiny_conv_net(monkeypatch):
    real_build = bm.build_path

    def build(name, model, x):
        if name == "torchscript":
            raise RuntimeError("simulated export failure")
        return real_build(name, model, x)

    monkeypatch.setattr(bm, "build_path", build)
    paths = ("channels_last", "bf16_autocast", "channels_last_bf16", "torchscript", "torch_compile", "onnxruntime")
    net = _tiny_conv_net().train()
    r = bm.compare_inference_paths(
        net,
        (3, 8, 8),
        batch_size=2,
        paths=paths,
        compile=False,
        rounds=2,
        matmul_flops={"float32": 1e9, "bfloat16": 2e9},
        **FAST,
    )
    assert net.training  # the caller's model is not touched
    assert next(iter(r["paths"])) == bm.BASELINE_PATH  # baseline added and measured first
    assert r["forward_flop"] == 2 * (2 * 4 * 8 * 8 * 27) + 2 * (2 * 4 * 2)
    base = r["paths"][bm.BASELINE_PATH]
    assert base["status"] == "ok" and base["speedup"] == 1.0 and base["max_abs_diff"] == 0.0
    assert base["matmul_fraction"] == pytest.approx(base["flops_per_s"] / 1e9)
    assert len(base["round_median_s"]) == 2
    for name in ("channels_last", "bf16_autocast", "channels_last_bf16"):
        entry = r["paths"][name]
        assert entry["status"] == "ok", entry
        assert math.isfinite(entry["speedup"]) and entry["speedup"] > 0
        assert entry["max_abs_diff"] < (1e-5 if name == "channels_last" else 5e-2)
    assert r["paths"]["bf16_autocast"]["precision"] == "bfloat16"
    assert r["paths"]["bf16_autocast"]["matmul_fraction"] == pytest.approx(
        r["paths"]["bf16_autocast"]["flops_per_s"] / 2e9
    )
    assert r["paths"]["torchscript"] == {
        "status": "error",
        "error": "RuntimeError: simulated export failure",
        "speedup": None,
    }
    assert r["paths"]["torch_compile"]["status"] == "skipped"
    onnx = r["paths"]["onnxruntime"]  # either works or is recorded, never raised
    assert onnx["status"] in ("ok", "error")
    if onnx["status"] == "ok":
        assert onnx["max_abs_diff"] < 1e-4
    json.dumps(r)  # results are JSON-serialisable
    with pytest.raises(ValueError, match="unknown inference paths"):
        bm.compare_inference_paths(_tiny_conv_net(), (3, 8, 8), paths=("warp_drive",))


def test_compile_time_limit_records_error(monkeypatch):
    import time

    def slow_compile(model, *args, **kwargs):
        time.sleep(5)
        return model

    monkeypatch.setattr(torch, "compile", slow_compile)
    r = bm.compare_inference_paths(
        _tiny_conv_net(),
        (3, 8, 8),
        batch_size=1,
        paths=("torch_compile",),
        compile_timeout_s=0.2,
        rounds=1,
        matmul_flops={"float32": 1e9},
        **FAST,
    )
    assert r["paths"]["torch_compile"]["status"] == "error"
    assert "TimeoutError" in r["paths"]["torch_compile"]["error"]


def test_compare_trainer_vs_loop_same_steps():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    batches = [{"image": torch.randn(2, 1, 8, 8), "label": torch.randn(2, 2, 8, 8)} for _ in range(3)]
    before = [p.detach().clone() for p in model.parameters()]
    r = bm.compare_trainer_vs_loop(
        model, torch.nn.MSELoss(), lambda params: torch.optim.SGD(params, lr=0.1), batches, rounds=2, warmup_rounds=0
    )
    assert r["steps"] == {"trainer": 3, "loop": 3}
    assert len(r["ratios"]) == 2 and len(r["times_s"]["trainer"]) == len(r["times_s"]["loop"]) == 2
    assert math.isfinite(r["ratio"]) and r["ratio"] > 0
    assert r["trainer_steps_per_s"] > 0 and r["loop_steps_per_s"] > 0
    assert r["max_param_diff"] < 1e-5  # both sides did the same updates
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # caller's model untouched
    # (image, label) pairs work too
    pairs = [(b["image"], b["label"]) for b in batches[:2]]
    r = bm.compare_trainer_vs_loop(
        model,
        torch.nn.MSELoss(),
        lambda p: torch.optim.SGD(p, lr=0.1),
        pairs,
        rounds=1,
        warmup_rounds=0,
        trainer_kwargs={"decollate": False},
    )
    assert r["steps"] == {"trainer": 2, "loop": 2}


def test_trainer_vs_loop_with_dropout_agrees_after_reseeding():
    """Dropout draws the same masks on both sides (each epoch reseeds), so the weights end equal."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Conv2d(4, 2, 1)
    )
    batches = [{"image": torch.randn(2, 1, 8, 8), "label": torch.randn(2, 2, 8, 8)} for _ in range(3)]
    r = bm.compare_trainer_vs_loop(
        model, torch.nn.MSELoss(), lambda p: torch.optim.Adam(p, lr=0.01), batches, rounds=2, warmup_rounds=1
    )
    assert r["max_param_diff"] <= r["param_diff_bound"] == 1e-5
    with pytest.raises(RuntimeError, match="no longer do the same arithmetic"):  # the bound is enforced
        bm.compare_trainer_vs_loop(
            model,
            torch.nn.MSELoss(),
            lambda p: torch.optim.Adam(p, lr=0.01),
            batches,
            rounds=1,
            warmup_rounds=0,
            param_diff_bound=-1.0,
        )


INFERENCE_YAML = """
imports:
  - $import glob
  - $import os
bundle_root: "."
device: "$torch.device('cpu')"
dataset_dir: "$os.path.join(@bundle_root, 'data')"
datalist: "$[{'image': f} for f in sorted(glob.glob(os.path.join(@dataset_dir, '*.png')))]"
network_def:
  _target_: BasicUNet
  spatial_dims: 2
  in_channels: 1
  out_channels: 2
  features: [4, 4, 8, 8, 16, 4]
network: "$@network_def.to(@device)"
preprocessing:
  _target_: Compose
  transforms:
    - _target_: LoadImaged
      keys: image
      image_only: true
    - _target_: EnsureChannelFirstd
      keys: image
    - _target_: ScaleIntensityd
      keys: image
    - _target_: Resized
      keys: image
      spatial_size: [32, 32]
dataset:
  _target_: Dataset
  data: "@datalist"
  transform: "@preprocessing"
dataloader:
  _target_: DataLoader
  dataset: "@dataset"
  batch_size: 2
  shuffle: false
  num_workers: 0
inferer:
  _target_: SimpleInferer
postprocessing:
  _target_: Compose
  transforms:
    - _target_: Activationsd
      keys: pred
      softmax: true
    - _target_: AsDiscreted
      keys: pred
      argmax: true
handlers:
  - _target_: CheckpointLoader
    load_path: "$os.path.join(@bundle_root, 'models', 'model.pt')"
    load_dict:
      model: "@network"
evaluator:
  _target_: SupervisedEvaluator
  device: "@device"
  val_data_loader: "@dataloader"
  network: "@network"
  inferer: "@inferer"
  postprocessing: "@postprocessing"
  val_handlers: "@handlers"
  amp: false
initialize:
  - "$monai.utils.set_determinism(seed=0)"
run:
  - "$@evaluator.run()"
"""

METADATA = {
    "version": "0.0.1",
    "monai_version": "1.6.1",
    "name": "tiny_seg",
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "magnitude",
                "num_channels": 1,
                "spatial_shape": [32, 32],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": [32, 32],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
            }
        },
    },
}


@pytest.fixture
def tiny_bundle(tmp_path):
    from monai.networks.nets import BasicUNet
    from PIL import Image

    root = tmp_path / "tiny_seg"
    for sub in ("configs", "models", "data"):
        (root / sub).mkdir(parents=True)
    (root / "configs" / "inference.yaml").write_text(INFERENCE_YAML)
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 36), dtype=np.uint8)).save(root / "data" / f"img{i}.png")
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def test_compare_bundle_inference_tiny_bundle(tiny_bundle):
    r = bm.compare_bundle_inference(tiny_bundle, rounds=2, warmup_rounds=1, min_time=0.0)
    assert r["bundle"] == "tiny_seg" and r["config_file"] == "inference.yaml"
    assert r["items_per_run"] == 5 and r["batch_size"] == 2 and r["input_shape"] == [1, 32, 32]
    for key in ("e2e_items_per_s", "e2e_epoch_items_per_s", "bare_items_per_s", "ratio", "ratio_epoch"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    assert len(r["ratios"]) == 2
    # overrides reach the workflow; explicit batch / shape win over the data loader / metadata
    r = bm.compare_bundle_inference(
        tiny_bundle,
        overrides={"dataloader#batch_size": 5},
        input_shape=[1, 48, 48],
        rounds=1,
        warmup_rounds=0,
        min_time=0.0,
    )
    assert r["batch_size"] == 5 and r["input_shape"] == [1, 48, 48]


def test_compare_bundle_inference_merges_common_config_first(tiny_bundle):
    # the network said once in configs/common.yaml, as the shipped bundles (and the model zoo) do
    configs = tiny_bundle / "configs"
    inference = (configs / "inference.yaml").read_text()
    start, end = inference.index("network_def:"), inference.index("network:")
    (configs / "common.yaml").write_text(inference[start:end])
    (configs / "inference.yaml").write_text(inference[:start] + inference[end:])
    r = bm.compare_bundle_inference(tiny_bundle, rounds=1, warmup_rounds=0, min_time=0.0)
    assert r["config_file"] == "inference.yaml" and r["items_per_run"] == 5
    assert math.isfinite(r["ratio"]) and r["ratio"] > 0


def test_markdown_report_and_update(tmp_path):
    results = {
        "name": "unit",
        "command": "python benchmarks/run_all.py",
        "runtime_s": 1.0,
        "machine": bm.machine_info(),
        "matmul": {"float32": {"dtype": "float32", "n": 8, "gflops_per_s": 1.5}},
        "inference": {
            "model": "Net",
            "input_shape": [3, 8, 8],
            "batch_size": 2,
            "forward_flop": 10**9,
            "paths": {
                "eager_fp32_nchw": {
                    "status": "ok",
                    "items_per_s": 2.0,
                    "speedup": 1.0,
                    "max_abs_diff": 0.0,
                    "flops_per_s": 1e9,
                    "matmul_fraction": 0.5,
                    "setup_s": 0.1,
                },
                "torch_compile": {"status": "skipped", "reason": "disabled", "speedup": None},
            },
        },
        "trainer_vs_loop": {
            "model": "Net",
            "steps": {"trainer": 3, "loop": 3},
            "rounds": 2,
            "trainer_steps_per_s": 9.0,
            "loop_steps_per_s": 10.0,
            "ratio": 0.9,
            "ratios": [0.85, 0.95],
            "max_param_diff": 0.0,
        },
        "bundles": {"status": "none", "note": "no bundle shipped yet", "searched": "bundles", "results": []},
    }
    md = bm.results_to_markdown(results)
    assert "| eager_fp32_nchw | 2.00 | **1.00×** |" in md and "skipped: disabled" in md
    assert "**0.900**" in md and "no bundle shipped yet" in md
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nIntro.\n")
    bm.update_markdown(doc, md)
    bm.update_markdown(doc, "new table")  # regenerating replaces, keeps the intro
    text = doc.read_text()
    assert text.startswith("# Performance\n\nIntro.\n") and "new table" in text and "| eager_fp32_nchw" not in text
    assert text.count(bm.DOC_BEGIN) == 1 and text.count(bm.DOC_END) == 1


# ------------------------------------------------- full-size films (benchmarks/full_size_films.py)

import full_size_films as fsf  # noqa: E402 -- beside harness, in benchmarks/


def test_full_size_films_keep_labels_geometry_and_bytes(tmp_path):
    """The simulated real-size films: the demo film at full size, with its spacing and landmarks moved with it."""

    from mimtl.io import MedicalImageReader
    from mimtl.sim import demo_datalist

    task = fsf.DEMO_TASK["landmarks"]
    demo_list = demo_datalist(task)
    demo = json.loads(Path(demo_list).read_text())["test"][:2]
    for fmt, (size, suffix, _) in fsf.FORMATS.items():
        datalist = fsf.make_films(task, fmt, tmp_path / "a", limit=2)
        again = fsf.make_films(task, fmt, tmp_path / "b", limit=2)
        items = json.loads(datalist.read_text())["test"]
        assert len(items) == 2
        for item, source in zip(items, demo):
            path = datalist.parent / item["image"]
            assert path.suffix == suffix
            assert path.read_bytes() == (again.parent / item["image"]).read_bytes()  # same bytes for the same seed
            k = size / 256
            np.testing.assert_allclose(item["spacing"], np.asarray(source["spacing"]) / k)
            np.testing.assert_allclose(item["landmarks"], (np.asarray(source["landmarks"]) + 0.5) * k - 0.5)
            reader = MedicalImageReader(target_size=256)
            pixels, meta = reader.get_data(reader.read(str(path)))
            np.testing.assert_array_equal(meta["spatial_shape"], [size, size])
            if suffix == ".dcm":  # the file's own spacing agrees with the datalist's
                np.testing.assert_allclose(meta["spacing"], item["spacing"], rtol=1e-5)
            film = fsf.demo_film(Path(demo_list).parent / source["image"])
            small = torch.nn.functional.interpolate(
                torch.as_tensor(pixels)[None, None].double(), size=(256, 256), mode="area"
            )
            assert np.corrcoef(small[0, 0].numpy().ravel(), film.ravel())[0, 1] > 0.99


def _full_size_results(ratio_bare: float, auto_ratio: float) -> dict:
    fmt = {
        "what": "2048 px DICOM",
        "films": 60,
        "e2e_images_per_s": 10.0,
        "bare_images_per_s": 10.0 / ratio_bare,
        "tutorial_images_per_s": 2.0,
        "e2e_over_bare": ratio_bare,
        "e2e_over_tutorial": 5.0,
        "auc_e2e": 0.65,
        "auc_tutorial": 0.651,
        "auc_change": -0.001,
        "same_predictions": True,
    }
    fmt["meets_targets"] = ratio_bare >= fsf.TARGET_BARE
    auto = {
        "auto_choice": "fp32 + channels_last (CPU without native bf16 (AVX2))",
        "ratio_auto_over_fp32_nchw": auto_ratio,
        "items_per_s": {"auto": 12.0 * auto_ratio, "fp32_nchw": 12.0},
        "auto_not_slower": auto_ratio >= 1.0,
    }
    stages = {
        "dicom_j2k": {
            "decode_whole_ms": 700.0,
            "decode_reduced_ms": 40.0,
            "resize_antialiased_ms": 150.0,
            "resize_area_ms": 3.5,
        }
    }
    return {
        "machine": bm.machine_info(),
        "films_per_format": 60,
        "load": {"other_cpu_share": 0.1, "loadavg_end": 1.0},
        "bundles": {
            "xray_color_classification": {
                "formats": {"dicom_j2k": fmt},
                "auto_vs_fp32": auto,
                "stage_ms_per_film": stages,
            }
        },
    }


def test_full_size_report_says_when_a_target_is_missed(tmp_path):
    met = fsf.to_markdown(_full_size_results(0.6, 1.3))
    assert "**0.60**" in met and "**5.0x**" in met and "| met |" in met and "| yes |" in met
    missed = fsf.to_markdown(_full_size_results(0.4, 0.9))
    assert "**missed**" in missed and "| **no** |" in missed
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nIntro.\n\n{fsf.DOC_BEGIN}\nold\n{fsf.DOC_END}\n\n## After\n")
    fsf.update_docs(doc, met)
    text = doc.read_text()
    assert text.startswith("# Performance\n\nIntro.\n") and text.rstrip().endswith("## After")
    assert "old" not in text and met in text
    readme = tmp_path / "README.md"
    readme.write_text("# A bundle\n")
    assert not fsf.update_docs(readme, met, append=False) and readme.read_text() == "# A bundle\n"
    only = fsf.to_markdown(_full_size_results(0.6, 1.3), only="xray_landmark_detection")
    assert "xray_color_classification" not in only


def test_full_size_figures_in_the_docs_are_the_benchmarks_and_auto_is_never_slower():
    """The published run: its tables are what the command wrote from its JSON, and in its own
    measurement amp: auto (with channels_last) was not slower than fp32 NCHW for either bundle."""
    results = json.loads((BENCHMARKS / "results" / "full_size_films.json").read_text())
    docs = (BENCHMARKS.parent / "docs" / "performance.md").read_text()
    assert fsf.to_markdown(results) in docs
    assert {"cpu_flags", "mkldnn_bf16", "torch_cpu_capability"} <= set(results["machine"])
    assert set(results["bundles"]) == set(fsf.BUNDLES)
    for name, r in results["bundles"].items():
        readme = (BENCHMARKS.parent / "bundles" / name / "docs" / "README.md").read_text()
        assert fsf.to_markdown(results, only=name) in readme, f"{name}'s README lacks its full-size figures"
        auto = r["auto_vs_fp32"]
        assert auto["auto_not_slower"] and auto["ratio_auto_over_fp32_nchw"] >= 1.0, (name, auto)
        assert set(r["formats"]) == set(fsf.FORMATS)
        for fmt, entry in r["formats"].items():
            assert entry["films"] == results["films_per_format"], (name, fmt)
            assert entry.get("overlay_files_read_again", 0) == 0, (name, fmt)


# ------------------------------------------------- sim-to-sim transfer (benchmarks/sim_to_sim.py)

import sim_to_sim as s2s  # noqa: E402


def test_sim_to_sim_tables_are_the_runs_of_the_shipped_weights():
    """docs/simulator.md and the READMEs hold the tables the command wrote; the shipped column was
    measured with the shipped model.pt, and on its own test split (the randomized style of its demo
    task) it gives the test figures metadata.json publishes."""
    import hashlib

    from mimtl.bundle import load_bundle

    results = json.loads(s2s.RESULTS.read_text())
    assert s2s.to_markdown(results) in (BENCHMARKS.parent / "docs" / "simulator.md").read_text()
    assert set(results["bundles"]) == set(s2s.SHIPPED_TASK)
    for name, runs in results["bundles"].items():
        bundle = load_bundle(name)
        assert s2s.to_markdown(results, only=name) in (bundle.path / "docs" / "README.md").read_text()
        shipped = runs[f"{bundle.metadata['version']} (shipped)"]
        assert shipped["task"] == s2s.SHIPPED_TASK[name]
        weights = (bundle.path / "models" / "model.pt").read_bytes()
        assert shipped["weights_sha256"] == hashlib.sha256(weights).hexdigest(), (
            f"{name}: table not of the shipped weights"
        )
        published = bundle.metadata["eval_metrics"]
        for key, value in shipped["figures"]["randomized"].items():
            if f"test_{key}" in published:
                assert value == pytest.approx(published[f"test_{key}"], abs=2e-4), (name, key)
        assert all(set(run["figures"]) == set(s2s.STYLES) for run in runs.values())
