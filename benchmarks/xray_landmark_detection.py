#!/usr/bin/env python
"""Speed of the xray_landmark_detection bundle: ``python benchmarks/xray_landmark_detection.py``.

Answers the bundle issue's four questions, each measured side by side in one run:

1. inference paths of the shipped HeatmapUNet at 1x256x256 (eager fp32 NCHW as in MONAI's
   tutorials vs channels_last, bf16 autocast, TorchScript, torch.compile, ONNX Runtime), with
   FLOP/s as a fraction of the machine's matmul FLOP/s at the same precision; and whether each
   path's points agree: every path's heatmaps on the demo test films are decoded with the
   bundle's soft-argmax, and the mean radial error vs the labels and the mean point change vs
   the baseline path (target < 0.1 px) are reported in pixels of the network grid;
2. end-to-end inference (files on disk -> landmarks.csv, landmarks.json, overlays) vs the bare
   forward of the same path: as shipped, without overlays, and with 2 DataLoader workers;
3. a training step through MONAI's SupervisedTrainer vs a minimal PyTorch loop;
4. the mean radial error (mean, sd, median) and SDR of the shipped model on the demo test
   split, in mm on the original films, from the bundle's evaluate workflow at the baseline path.

Writes ``benchmarks/results/xray_landmark_detection.json`` (after every stage, so that a late
failure keeps the earlier numbers). Needs the trained ``models/model.pt``; ``--weights`` and
``--bundle`` point at another checkpoint or bundle copy, ``--size 64 --rounds 1 --min-time 0.2
--no-compile`` is a quick smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from harness import (
    BASELINE_PATH,
    CHANNELS_LAST_PATHS,
    build_path,
    compare_bundle_inference,
    compare_inference_paths,
    compare_trainer_vs_loop,
    error_text,
    machine_info,
    measure_matmul_flops,
    time_limit,
)

BUNDLE = "xray_landmark_detection"
#: the inference config's batch size; the exported/traced paths are built for it
BATCH_SIZE = 8
#: the targets of the issue
POINT_TOLERANCE_PX = 0.1
TARGETS = {"inference_speedup": 2.0, "end_to_end_ratio": 0.85, "trainer_vs_loop_ratio": 0.95}
#: end-to-end variants: as shipped (on a CPU: no DataLoader workers), without the per-image
#: overlay PNGs, and with the 2 workers the config gives a GPU
E2E_VARIANTS: dict[str, dict[str, Any]] = {
    "as_shipped": {},
    "no_overlay": {"overlay": False},
    "workers_2": {"num_workers": 2},
}
COMPILE_TIMEOUT_S = 900.0


def evaluate_workflow(bundle, image_size: int, output_dir: str, weights: Path | None):
    """The bundle's evaluate workflow on the test split, at the baseline path (fp32, NCHW), initialised.

    The evaluate config runs channels-last (and amp when set); both are switched off here so that
    the MRE is that of eager fp32 NCHW, the path every other one is compared with.
    """
    override: dict[str, Any] = {
        "image_size": image_size,
        "output_dir": output_dir,
        "channels_last": False,
        "amp": False,
    }
    if weights is not None:  # a checkpoint other than models/model.pt (and its conformal radii, if any)
        override["validate::handlers::0::load_path"] = str(weights)
        override["conformal_file"] = str(weights.with_name("conformal.json"))
    wf = bundle.workflow("evaluate", configure_logging=False, **override)
    wf.initialize()
    return wf


def demo_test_batch(wf) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo test split, preprocessed exactly as the bundle's evaluate config does.

    Returns images ``(B, 1, H, W)`` and labels ``(B, N, 2)``: points in pixels of the network
    grid (array-index order), NaN where missing.
    """
    from monai.utils import convert_to_tensor

    dataset = wf.parser.get_parsed_content("validate::dataset")
    items = [dataset[i] for i in range(len(dataset))]
    # plain tensors: a MetaTensor would send every path through MONAI's __torch_function__ (and dynamo into it)
    images = torch.stack([convert_to_tensor(i["image"], dtype=torch.float32, track_meta=False) for i in items])
    labels = torch.stack([convert_to_tensor(i["label"], dtype=torch.float32, track_meta=False) for i in items])
    labels = labels.reshape(len(items), -1, 2)
    return images, labels


def decode_points(
    fn: Callable[[torch.Tensor], Any],
    images: torch.Tensor,
    batch_size: int,
    channels_last: bool,
    decoder: dict[str, Any],
) -> torch.Tensor:
    """Points ``(B, N, 2)`` decoded from ``fn``'s heatmaps of ``images``, ``batch_size`` at a time.

    Every batch is padded to ``batch_size`` (repeating its last image) and the padded outputs
    are dropped: ONNX Runtime's exported graph has a fixed batch dimension, and equal batches
    keep TorchScript/torch.compile from specialising again on the last one. The network is in
    eval mode (BatchNorm uses running statistics), so padding cannot change the real items.
    """
    from mimtl.transforms import decode_heatmaps

    points = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            n = len(x)
            if n < batch_size:
                x = torch.cat([x, x[-1:].expand(batch_size - n, *x.shape[1:])])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = fn(x)
            heatmaps = (out if isinstance(out, torch.Tensor) else out[0])[:n].float()
            if decoder["activation"] == "sigmoid":
                heatmaps = torch.sigmoid(heatmaps)
            p, _ = decode_heatmaps(heatmaps, method=decoder["method"], sigma=decoder["sigma"])
            points.append(p.cpu())
    return torch.cat(points)


def _finite_mean(values: torch.Tensor) -> float | None:
    values = values[torch.isfinite(values)]
    return float(values.mean()) if values.numel() else None


def point_agreement(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    paths: Sequence[str],
    decoder: dict[str, Any],
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    """Per path: mean radial error vs the labels and point change vs the baseline path, in network px.

    A path agrees when its mean point change is below :data:`POINT_TOLERANCE_PX` and it decodes
    exactly the same landmarks as missing as the baseline does.
    """
    out: dict[str, Any] = {}
    points: dict[str, torch.Tensor] = {}
    for name in [BASELINE_PATH] + [p for p in paths if p != BASELINE_PATH]:
        try:
            t0 = time.perf_counter()
            # a second torch.compile of the same graph mostly hits the on-disk caches of the timed one
            with time_limit(COMPILE_TIMEOUT_S if name == "torch_compile" else None):
                fn, _, precision = build_path(name, model, images[:batch_size])
                points[name] = decode_points(fn, images, batch_size, name in CHANNELS_LAST_PATHS, decoder)
        except Exception as exc:  # a failing path is a result
            out[name] = {"error": error_text(exc)}
            continue
        radial = torch.linalg.vector_norm(points[name] - labels, dim=-1)
        out[name] = {
            "precision": precision,
            "mre_px": _finite_mean(radial),
            "median_re_px": float(radial[torch.isfinite(radial)].median()) if torch.isfinite(radial).any() else None,
            "n_decoded_missing": int(torch.isnan(points[name]).any(-1).sum()),
            "seconds": time.perf_counter() - t0,
        }
    if BASELINE_PATH not in points:
        return out
    base = points[BASELINE_PATH]
    for name, p in points.items():
        change = torch.linalg.vector_norm(p - base, dim=-1)
        missing_differs = int((torch.isnan(p).any(-1) != torch.isnan(base).any(-1)).sum())
        mean_change = _finite_mean(change)
        out[name].update(
            mean_point_change_px=mean_change,
            max_point_change_px=float(change[torch.isfinite(change)].max()) if torch.isfinite(change).any() else None,
            missing_differs=missing_differs,
            agrees=mean_change is not None and mean_change < POINT_TOLERANCE_PX and missing_differs == 0,
        )
    return out


def landmark_summary(wf, output_dir: Path) -> dict[str, Any]:
    """Run the evaluate workflow and return its ``landmark_summary.json`` (errors on the original films)."""
    t0 = time.perf_counter()
    wf.run()
    seconds = time.perf_counter() - t0
    summary = json.loads((output_dir / "landmark_summary.json").read_text())
    overall = summary["overall"]
    result = {
        "path": BASELINE_PATH,
        "unit": summary.get("unit"),
        "thresholds": summary.get("thresholds"),
        "mre": overall["mre"],
        "mre_sd": overall["mre_sd"],
        "mre_median": overall["mre_median"],
        "sdr": {k: v for k, v in overall.items() if k.startswith("sdr_")},
        "n_images": summary.get("n_images"),
        "n_points": overall.get("n_points"),
        "n_missing": overall.get("n_missing"),
        "n_failed": overall.get("n_failed"),
        "mre_px": summary.get("mre_px"),
        "conformal_coverage": summary.get("conformal_coverage"),
        "per_landmark": summary.get("per_landmark"),
        "seconds": seconds,
    }
    return result


def end_to_end(
    bundle_dir: Path, image_size: int, weights: Path | None, output_root: Path, rounds: int, min_time: float
) -> dict[str, Any]:
    """:func:`compare_bundle_inference` for each of :data:`E2E_VARIANTS` (outputs go to ``output_root``)."""
    results: dict[str, Any] = {}
    for variant, extra in E2E_VARIANTS.items():
        print(f"  {variant} ...", flush=True)
        overrides: dict[str, Any] = {"image_size": image_size, "output_dir": str(output_root / variant), **extra}
        if weights is not None:
            overrides["ckpt_path"] = str(weights)
            overrides["conformal_file"] = str(weights.with_name("conformal.json"))
        try:
            r = compare_bundle_inference(
                bundle_dir,
                overrides=overrides,
                input_shape=(1, image_size, image_size),
                rounds=rounds,
                min_time=min_time,
                progress=True,
            )
            r["overrides"] = {k: v for k, v in overrides.items() if k in extra}
        except Exception as exc:  # recorded, the other variants still run
            r = {"error": error_text(exc)}
        results[variant] = r
    return results


def trainer_vs_loop(num_landmarks: int, image_size: int, rounds: int, steps: int = 4) -> dict[str, Any]:
    """SupervisedTrainer vs a minimal loop: HeatmapUNet (random init), adaptive-wing loss, AdamW, batch 8."""
    from mimtl.losses import HeatmapLoss
    from mimtl.networks import HeatmapUNet

    torch.manual_seed(0)
    net = HeatmapUNet(num_landmarks, encoder="efficientnet-lite0", in_channels=1, encoder_weights=None)
    gen = torch.Generator().manual_seed(0)
    batches = [
        {
            "image": torch.rand(BATCH_SIZE, 1, image_size, image_size, generator=gen),
            # random points inside the image, in pixels of the network grid
            "label": torch.rand(BATCH_SIZE, num_landmarks, 2, generator=gen) * (image_size - 1),
        }
        for _ in range(steps)
    ]
    return compare_trainer_vs_loop(
        net,
        HeatmapLoss(kind="adaptive_wing", sigma=5.0),
        lambda p: torch.optim.AdamW(p, lr=1e-3),
        batches,
        rounds=rounds,
        progress=True,
    )


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Each target of the issue with the measured value and whether it is met."""
    out: dict[str, Any] = {}
    paths = results.get("inference", {}).get("paths", {})
    agreement = results.get("point_agreement", {}).get("paths", {})
    timed = {n: r["speedup"] for n, r in paths.items() if r.get("status") == "ok" and n != BASELINE_PATH}
    if timed:
        # only a path whose points agree with the baseline's can meet the speed target
        agreeing = {n: v for n, v in timed.items() if agreement.get(n, {}).get("agrees")}
        fastest = max(timed, key=timed.get)
        entry: dict[str, Any] = {"path": None, "value": None, "target": TARGETS["inference_speedup"], "met": False}
        if agreeing:
            best = max(agreeing, key=agreeing.get)
            entry.update(
                path=best,
                value=agreeing[best],
                met=agreeing[best] >= TARGETS["inference_speedup"],
                mean_point_change_px=agreement[best]["mean_point_change_px"],
            )
        entry.update(
            fastest_path=fastest,
            fastest_speedup=timed[fastest],
            fastest_agrees=bool(agreement.get(fastest, {}).get("agrees")),
        )
        out["inference_speedup"] = entry
    e2e = results.get("end_to_end", {}).get("as_shipped", {})
    if e2e.get("ratio") is not None:
        value = e2e["ratio"]
        out["end_to_end_ratio"] = {
            "value": value,
            "target": TARGETS["end_to_end_ratio"],
            "met": value >= TARGETS["end_to_end_ratio"],
        }
    tr = results.get("trainer_vs_loop", {})
    if tr.get("ratio") is not None:
        value = tr["ratio"]
        out["trainer_vs_loop_ratio"] = {
            "value": value,
            "target": TARGETS["trainer_vs_loop_ratio"],
            "met": value >= TARGETS["trainer_vs_loop_ratio"],
        }
    return out


def _write(out: Path, results: dict[str, Any]) -> None:
    """Write the results whole, then rename: a reader never sees half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(out)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_summary(results: dict[str, Any]) -> None:
    """A short table of every answer, as the classification benchmark prints."""
    agreement = results.get("point_agreement", {}).get("paths", {})
    for name, r in results["inference"]["paths"].items():
        if r["status"] != "ok":
            print(f"{name:22s} {r['status']}: {r.get('error') or r.get('reason')}")
            continue
        a = agreement.get(name, {})
        points = (
            f"MRE {_fmt(a.get('mre_px'), '.2f')} px  change {_fmt(a.get('mean_point_change_px'), '.3f')} px"
            if "error" not in a
            else f"points: {a['error'][:80]}"
        )
        print(
            f"{name:22s} {r['items_per_s']:7.1f} img/s  x{r['speedup']:.2f}  matmul {r['matmul_fraction']:.1%}  "
            f"{points}{'' if a.get('agrees', True) else '  DISAGREES'}"
        )
    for variant, e2e in results.get("end_to_end", {}).items():
        if "ratio" in e2e:
            print(
                f"end-to-end / bare forward ({variant}): {e2e['ratio']:.3f} (epoch only {e2e['ratio_epoch']:.3f}), "
                f"{e2e['e2e_items_per_s']:.1f} vs {e2e['bare_items_per_s']:.1f} img/s"
            )
        else:
            print(f"end-to-end ({variant}): {e2e.get('error')}")
    tr = results.get("trainer_vs_loop", {})
    print(f"SupervisedTrainer / loop: {_fmt(tr.get('ratio'), '.3f')}" + (f"  ({tr['error']})" if "error" in tr else ""))
    mre = results.get("test_mre", {})
    if "mre" in mre:
        sdr = ", ".join(f"{k} {v:.1%}" for k, v in mre["sdr"].items())
        print(
            f"test MRE ({mre['path']}): {mre['mre']:.2f} +- {mre['mre_sd']:.2f} {mre['unit']} "
            f"(median {mre['mre_median']:.2f}); SDR {sdr}"
        )
    else:
        print(f"test MRE: {mre.get('error')}")
    for key, t in results.get("targets", {}).items():
        print(
            f"target {key}: {_fmt(t['value'], '.3f')} vs {t['target']} -> {'met' if t['met'] else 'NOT met'}"
            + (f" ({t['path']}; fastest {t['fastest_path']} x{t['fastest_speedup']:.2f})" if "path" in t else "")
        )


class _Stages:
    """Where the run's own time goes (``results["stage_s"]``, to plan the next run), and the
    results written after every stage so that a late failure keeps the earlier numbers."""

    def __init__(self, results: dict[str, Any], out: Path) -> None:
        self.results, self.out = results, out
        self.seconds = results["stage_s"] = {}
        self.t0 = time.perf_counter()

    def done(self, stage: str, write: bool = True) -> None:
        self.seconds[stage], self.t0 = time.perf_counter() - self.t0, time.perf_counter()
        if write:
            _write(self.out, self.results)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / f"{BUNDLE}.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes to compile here)")
    parser.add_argument("--size", type=int, default=256, help="network input size (a multiple of 32)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of every comparison")
    parser.add_argument("--min-time", type=float, default=6.0, help="seconds per inference path over all rounds")
    parser.add_argument("--bundle", default=BUNDLE, help="bundle name or folder (e.g. a copy)")
    parser.add_argument("--weights", help="checkpoint instead of the bundle's models/model.pt")
    args = parser.parse_args(argv)
    if args.size < 32 or args.size % 32:
        parser.error(f"--size must be a positive multiple of 32 (the encoder's stride), got {args.size}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def measure_with_test_split(
    bundle,
    model: torch.nn.Module,
    weights: Path | None,
    args: argparse.Namespace,
    matmul: dict[str, float],
    results: dict[str, Any],
    stages: _Stages,
    tmp_dir: Path,
) -> tuple[bool, int]:
    """Questions 1, 4 and 2 (outputs under ``tmp_dir``): (whether a stage failed, number of landmarks)."""
    failed = False
    print("inference paths ...", flush=True)
    results["inference"] = compare_inference_paths(
        model,
        (1, args.size, args.size),
        batch_size=BATCH_SIZE,
        compile=not args.no_compile,
        compile_timeout_s=COMPILE_TIMEOUT_S,
        matmul_flops=matmul,
        rounds=args.rounds,
        min_time=args.min_time,
        progress=True,
    )
    stages.done("inference")

    print("points of every path on the demo test split ...", flush=True)
    eval_dir = tmp_dir / "evaluate"
    wf = evaluate_workflow(bundle, args.size, str(eval_dir), weights)
    decoder = {
        "method": wf.parser.get_parsed_content("decoder"),
        "sigma": float(wf.parser.get_parsed_content("sigma")),
        "activation": wf.parser.get_parsed_content("activation"),
    }
    images, labels = demo_test_batch(wf)
    ok_paths = [p for p, r in results["inference"]["paths"].items() if r["status"] == "ok"]
    results["point_agreement"] = {
        "n_images": len(images),
        "n_points": int(torch.isfinite(labels).all(-1).sum()),
        "tolerance_px": POINT_TOLERANCE_PX,
        "decoder": decoder,
        "paths": point_agreement(model, images, labels, ok_paths, decoder),
    }
    stages.done("point_agreement")

    print("test MRE on the original films (evaluate workflow, baseline path) ...", flush=True)
    try:
        results["test_mre"] = landmark_summary(wf, eval_dir)
    except Exception as exc:  # recorded, the rest still runs
        results["test_mre"], failed = {"error": error_text(exc)}, True
    finally:
        wf.finalize()
    stages.done("test_mre")

    print("bundle end-to-end ...", flush=True)
    results["end_to_end"] = end_to_end(
        bundle.path, args.size, weights, tmp_dir / "inference", rounds=args.rounds, min_time=args.min_time / 3
    )
    failed |= any("error" in r for r in results["end_to_end"].values())
    stages.done("end_to_end")
    return failed, labels.shape[1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import mimtl

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    bundle = mimtl.load_bundle(args.bundle)
    weights = Path(args.weights).resolve() if args.weights else None
    checkpoint = weights or bundle.weights_path
    if not checkpoint.is_file():  # every question but 3 needs the trained network: stop before measuring anything
        print(
            f"error: no trained weights at {checkpoint}. Train the bundle first "
            f"(mimtl run {bundle.name} train), or pass --weights PATH / --bundle DIR.",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    results: dict[str, Any] = {
        "bundle": bundle.name,
        "version": bundle.metadata["version"],
        "command": " ".join(
            ["python benchmarks/xray_landmark_detection.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "complete": False,
        "machine": machine_info(),
        "settings": {
            "image_size": args.size,
            "batch_size": BATCH_SIZE,
            "rounds": args.rounds,
            "min_time": args.min_time,
            "compile": not args.no_compile,
            "bundle_dir": str(bundle.path),
            "weights": str(checkpoint),
            "point_tolerance_px": POINT_TOLERANCE_PX,
            "targets": TARGETS,
        },
    }
    results["matmul"] = {
        "float32": measure_matmul_flops(torch.float32),
        "bfloat16": measure_matmul_flops(torch.bfloat16),
    }
    matmul = {k: v["flops_per_s"] for k, v in results["matmul"].items()}
    model = bundle.network("cpu", config="evaluate", weights=weights)
    stages = _Stages(results, out)
    with tempfile.TemporaryDirectory(prefix="mimtl-landmark-bench-") as tmp:
        tmp_dir = Path(tmp)
        failed, num_landmarks = measure_with_test_split(bundle, model, weights, args, matmul, results, stages, tmp_dir)

    print("trainer vs loop ...", flush=True)
    try:  # one round more than the others: this ratio's target (0.95) leaves the least room for noise
        results["trainer_vs_loop"] = trainer_vs_loop(num_landmarks, args.size, args.rounds + 1)
    except Exception as exc:
        results["trainer_vs_loop"], failed = {"error": error_text(exc)}, True
    stages.done("trainer_vs_loop", write=False)

    results["targets"] = targets(results)
    results["runtime_s"] = time.perf_counter() - start
    results["complete"] = True
    _write(out, results)
    print_summary(results)
    print(f"written to {out} in {results['runtime_s']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
