"""The xray_lung_segmentation speed benchmark (benchmarks/xray_lung_segmentation.py): its published
table and its rendering. No wall-clock assertions: only what the script wrote and how it words it."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import xray_lung_segmentation as lung  # noqa: E402


def _results(speedup: float, dice_delta: float, sliding: float, trainer: float, e2e: float) -> dict:
    """A hand-made results dict in the script's layout."""
    results = {
        "command": "python benchmarks/xray_lung_segmentation.py",
        "complete": True,
        "settings": {"image_size": 256, "weights_label": "shipped models/model.pt"},
        "machine": {
            "date": "2026-01-01T00:00:00+00:00",
            "cpu_model": "Test CPU",
            "cpu_count": 2,
            "torch_threads": 1,
            "torch_cpu_capability": "AVX512",
            "mkldnn_bf16": True,
            "cpu_flags": ["avx512f", "amx_bf16"],
            "load": {"loadavg_1min_start": 1.0, "loadavg_1min_end": 1.5, "other_cpu_share": 0.4},
        },
        "inference": {
            "batch_size": 1,
            "amp": "auto",
            "amp_dtype": "bfloat16",
            "autocast_enabled": True,
            "channels_last": True,
            "speedup": speedup,
            "paths": {"channels_last_fp32": {"ratio_vs_first": 1.1}},
        },
        "dice": {
            "n_films": 30,
            "structures": ["left_lung", "right_lung", "heart"],
            lung.BASELINE: {"dice": 0.9},
            lung.BUNDLE_PATH: {"dice": 0.9 + dice_delta},
            "difference": dice_delta,
        },
        "sliding_window": {
            "roi_size": [256, 256],
            "overlap": 0.25,
            "ratio": sliding,
            "films": {
                "wide": {
                    "shape": [1, 1, 256, 512],
                    "windows": 3,
                    "window_pixels_over_film_pixels": 1.5,
                    "ratio": sliding,
                },
                "inference_input": {"shape": [1, 1, 256, 256], "windows": 1, "ratio": 0.97},
            },
        },
        "trainer_vs_loop": {"ratio": trainer, "batch_size": 8, "steps": {"loop": 3}, "rounds": 4},
        "file_to_mask": {"ratio": e2e, "items_per_run": 30, "batch_size": 1, "cold": {"ratio": 0.5}},
    }
    results["targets"] = lung.targets(results)
    return results


def _rows(markdown: str) -> dict[str, str]:
    """First cell of each table row -> its last cell (the verdict)."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| comparison"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[-1]
    return rows


def test_rendering_says_met_or_missed_for_each_target():
    met = lung.to_markdown(_results(2.4, 0.001, 0.9, 0.97, 0.9))
    missed = lung.to_markdown(_results(1.5, 0.01, 0.6, 0.9, 0.5))
    verdicts = [v for v in _rows(met).values() if v]
    assert verdicts == ["met"] * 5, met
    verdicts = [v for v in _rows(missed).values() if v]
    assert verdicts == ["**missed**"] * 5, missed
    assert "met" not in missed.replace("**missed**", "")
    # the boundaries count as met (>= for ratios, <= for the Dice difference)
    edge = lung.targets(_results(2.0, 0.002, 0.85, 0.95, 0.85))
    assert all(t["met"] for t in edge.values()) and len(edge) == 5
    assert "2.40×" in met and "Δ 0.0010" in met and "3 windows" in met
    assert "Test CPU" in met and "AVX512" in met and "40 %" in met


def test_rendering_of_failed_and_unmeasured_stages():
    results = _results(2.4, 0.001, 0.9, 0.97, 0.9)
    results["trainer_vs_loop"] = {"error": "RuntimeError: trainer and loop\nended | apart"}
    del results["file_to_mask"]
    results["complete"] = False
    results["targets"] = lung.targets(results)
    markdown = lung.to_markdown(results)
    assert "trainer_vs_loop" not in results["targets"] and "file_to_mask" not in results["targets"]
    assert "error: RuntimeError: trainer and loop ended / apart" in markdown  # one table row, no stray pipe
    assert markdown.count("| not measured |") == 2 and "Incomplete run" in markdown
    shipped_input_failed = _results(2.4, 0.001, 0.9, 0.97, 0.9)
    shipped_input_failed["file_to_mask"]["as_shipped_error"] = "TypeError: default_collate: found None"
    assert "the shipped datalist input fails" in lung.to_markdown(shipped_input_failed)


def test_readme_block_is_replaced_between_the_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Bundle\n\n### Speed\n{lung.DOC_BEGIN}\nold\n{lung.DOC_END}\n\n## Next\n")
    results = _results(2.4, 0.001, 0.9, 0.97, 0.9)
    assert lung.write_readme(results, readme)
    text = readme.read_text()
    assert text.startswith("# Bundle\n\n### Speed\n") and text.endswith(f"{lung.DOC_END}\n\n## Next\n")
    assert lung.to_markdown(results).strip() in text and "old" not in text
    bare = tmp_path / "OTHER.md"
    bare.write_text("# No markers\n")
    assert not lung.write_readme(results, bare) and bare.read_text() == "# No markers\n"


@pytest.fixture(scope="module")
def published() -> dict:
    if not lung.RESULTS.is_file():
        pytest.fail(f"{lung.RESULTS} is missing: run python benchmarks/xray_lung_segmentation.py")
    return json.loads(lung.RESULTS.read_text())


def test_readme_block_is_what_the_script_renders_from_the_committed_json(published):
    readme = lung.README.read_text()
    assert readme.count(lung.DOC_BEGIN) == 1 and readme.count(lung.DOC_END) == 1
    block = readme.partition(lung.DOC_BEGIN)[2].partition(lung.DOC_END)[0]
    assert block.strip() == lung.to_markdown(published).strip()
    # the block sits in the Results section under its own heading, before the ablation section
    assert readme.index("## Results") < readme.index("### Speed") < readme.index(lung.DOC_BEGIN)
    assert readme.index(lung.DOC_END) < readme.index("## The paper's ablation on the demo data")


def test_committed_json_is_a_complete_run_of_the_shipped_weights_with_the_machine_recorded(published):
    assert published["complete"] and published["settings"]["weights_label"] == "shipped models/model.pt"
    machine = published["machine"]
    assert {
        "cpu_model",
        "cpu_count",
        "cpu_flags",
        "torch_threads",
        "torch_cpu_capability",
        "mkldnn",
        "mkldnn_bf16",
    } <= set(machine)
    assert {"loadavg_1min_start", "loadavg_1min_end", "other_cpu_share"} <= set(machine["load"])
    # the verdicts are the targets applied to the recorded numbers
    assert published["targets"] == lung.targets(copy.deepcopy(published))
    assert set(published["targets"]) == set(lung.TARGETS)
