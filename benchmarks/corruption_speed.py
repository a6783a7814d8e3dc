#!/usr/bin/env python
"""Cost of the robustness evaluation: ``python benchmarks/corruption_speed.py [--full]``.

On the demo segmentation test split (``mimtl.sim.demo_path("segmentation")``, 30 films of
256 x 256), with the segmentation network of issue 15 (``AuxReconSegNet``, EfficientNet-Lite0
U-Net, 3 label channels, run through the bundle's ``AcceleratedInferer``; random weights: only
time matters here), it measures in one process:

* the clean pass: the forward passes and Dice/HD95 of the whole split, batched as
  :class:`~mimtl.metrics.RobustnessEvaluation` does it (forward and metrics apart: HD95 of an
  untrained network's ragged masks costs far more than that of a trained one's);
* generating all 17 corruptions x 5 severities of the split (per corruption too);
* their ratio, and the whole evaluation it implies: loading + 86 passes (clean + 85 corrupted)
  + generation, against the issue's budget of 15 minutes on 2 cores; once with the untrained
  network's metric cost and once with that of smooth masks (reference labels shifted by 3 px),
  closer to what a trained model costs.

``--full`` also runs the whole ``RobustnessEvaluation`` end to end (tables included) and records
its wall time. Results, with the machine (CPU flags such as ``avx512_bf16``, thread counts), go
to ``benchmarks/results/corruption_speed.json``. Absolute times depend on what else runs on the
machine; the JSON records the load average too.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from harness import machine_info
from tqdm import tqdm

from mimtl.metrics import RobustnessEvaluation
from mimtl.sim import demo_path, prepare_demo
from mimtl.transforms.corruptions import CORRUPTIONS, SEVERITIES

BUDGET_S = 15 * 60


def build_network() -> torch.nn.Module:
    """The bundle's network, in channels_last as its common.yaml puts it."""
    from mimtl.networks.aux_recon_seg import AuxReconSegNet

    torch.manual_seed(0)
    net = AuxReconSegNet(out_channels=3, encoder="efficientnet-lite0", decoder="unet").eval()
    return net.to(memory_format=torch.channels_last)


def build_inferer() -> Any:
    """The bundle's inferer: bf16 autocast where the CPU runs bf16 natively, channels_last."""
    from mimtl.inferers import AcceleratedInferer

    return AcceleratedInferer(amp="auto", channels_last=True)


def clean_pass(
    ev: RobustnessEvaluation, images: torch.Tensor, labels: torch.Tensor, spacings: list
) -> tuple[float, float]:
    """Seconds for one pass over the split: ``(batched forward, thresholding + Dice + HD95)``."""
    model = next(iter(ev.models.values()))
    forward = metrics = 0.0
    for i in range(0, len(images), ev.batch_size):
        start = time.perf_counter()
        out = ev._predict(model, images[i : i + ev.batch_size])
        middle = time.perf_counter()
        pred = ev._discrete(out, out.shape[1])
        ev._scores(pred, ev._reference(labels[i : i + ev.batch_size], out.shape[1]), spacings[i : i + ev.batch_size])
        forward, metrics = forward + middle - start, metrics + time.perf_counter() - middle
    return forward, metrics


def metrics_on_smooth_masks(ev: RobustnessEvaluation, labels: torch.Tensor, spacings: list) -> float:
    """Seconds for Dice + HD95 of the split when the masks are smooth, as a trained model's are:
    the reference label maps shifted by 3 px stand in for its predictions."""
    start = time.perf_counter()
    for i in range(0, len(labels), ev.batch_size):
        ref = ev._reference(labels[i : i + ev.batch_size], 3)
        ev._scores(torch.roll(ref, shifts=(3, 3), dims=(2, 3)), ref, spacings[i : i + ev.batch_size])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also time the whole RobustnessEvaluation.run()")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "corruption_speed.json")
    args = parser.parse_args()
    datalist = Path(prepare_demo(demo_path("segmentation"))) / "datalist.json"
    ev = RobustnessEvaluation(datalist, network=build_network(), inferer=build_inferer(), batch_size=8, progress=False)
    load0 = os.getloadavg()[0]

    start = time.perf_counter()
    ids, images, labels, spacings = ev._load()
    load_s = time.perf_counter() - start
    clean_pass(ev, torch.stack(images[:2]), labels[:2], spacings[:2])  # warm-up
    forward_s, metrics_s = clean_pass(ev, torch.stack(images), labels, spacings)
    clean_s = forward_s + metrics_s

    per_corruption = {}
    for name in tqdm(CORRUPTIONS, desc="corrupting the test split"):
        start = time.perf_counter()
        for severity in SEVERITIES:
            ev._corrupted(images, labels, ids, name, severity)
        per_corruption[name] = time.perf_counter() - start
    generation_s = sum(per_corruption.values())
    cells = len(CORRUPTIONS) * len(SEVERITIES)
    estimate_s = load_s + (cells + 1) * clean_s + generation_s
    smooth_metrics_s = metrics_on_smooth_masks(ev, labels, spacings)
    estimate_trained_s = load_s + (cells + 1) * (forward_s + smooth_metrics_s) + generation_s
    results = {
        "machine": machine_info(),
        "load_average_start": round(load0, 2),
        "films": len(ids),
        "film_size": list(images[0].shape[1:]),
        "network": "AuxReconSegNet(efficientnet-lite0, unet, 3 channels), AcceleratedInferer(amp=auto, channels_last), batch 8",
        "load_s": round(load_s, 2),
        "clean_pass_s": round(clean_s, 2),
        "clean_forward_s": round(forward_s, 2),
        "clean_metrics_s": round(metrics_s, 2),
        "generation_s": round(generation_s, 1),
        "generation_ms_per_film": {
            k: round(1000 * v / (len(ids) * len(SEVERITIES)), 1) for k, v in per_corruption.items()
        },
        "generation_over_clean_pass": round(generation_s / clean_s, 2),
        "generation_over_all_passes": round(generation_s / ((cells + 1) * clean_s), 3),
        "estimated_evaluation_s": round(estimate_s, 1),
        "budget_s": BUDGET_S,
        "estimate_within_budget": estimate_s < BUDGET_S,
        "clean_metrics_smooth_masks_s": round(smooth_metrics_s, 2),
        "estimated_evaluation_trained_s": round(estimate_trained_s, 1),
        "estimate_trained_within_budget": estimate_trained_s < BUDGET_S,
    }
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1), flush=True)
    if args.full:
        with tempfile.TemporaryDirectory() as tmp:
            full = RobustnessEvaluation(
                datalist, network=build_network(), inferer=build_inferer(), batch_size=8, output_dir=tmp
            )
            start = time.perf_counter()
            summary = full.run()
            results["full_evaluation_s"] = round(time.perf_counter() - start, 1)
            results["full_within_budget"] = results["full_evaluation_s"] < BUDGET_S
            results["full_clean_dice_untrained"] = round(summary["models"]["model"]["clean_dice"]["mean"], 4)
        print(f"full evaluation: {results['full_evaluation_s']} s", flush=True)
    results["load_average_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
