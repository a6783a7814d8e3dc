#!/usr/bin/env python
"""Speed of the xray_color_classification bundle: ``python benchmarks/xray_color_classification.py``.

Answers the bundle issue's three questions, each as a ratio measured side by side in one run:

1. inference paths of the shipped classifier at 1x224x224 (eager fp32 NCHW as in MONAI's
   tutorials vs channels_last, bf16 autocast, TorchScript, torch.compile, ONNX Runtime), with
   FLOP/s as a fraction of the machine's matmul FLOP/s at the same precision, and whether each
   path's mean ROC AUC on the demo test films agrees with the baseline's (within 0.005);
2. end-to-end inference (files on disk -> predictions.csv) vs the bare forward of the same path;
3. a training step through MONAI's SupervisedTrainer vs a minimal PyTorch loop.

Writes ``benchmarks/results/xray_color_classification.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from harness import (
    BASELINE_PATH,
    CHANNELS_LAST_PATHS,
    build_path,
    compare_bundle_inference,
    compare_inference_paths,
    compare_trainer_vs_loop,
    machine_info,
    measure_matmul_flops,
)

BUNDLE = "xray_color_classification"
AUC_TOLERANCE = 0.005


def demo_test_batch(bundle, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo test split, preprocessed exactly as the bundle's evaluate config does."""
    wf = bundle.workflow("evaluate", configure_logging=False, image_size=image_size)
    wf.initialize()
    dataset = wf.parser.get_parsed_content("validate::dataset")
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([i["image"].as_tensor() for i in items]), torch.stack([i["label"] for i in items])


def auc_agreement(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, paths: list[str]) -> dict:
    """Mean ROC AUC of the test films through each inference path, and its change vs the baseline."""
    from monai.metrics import compute_roc_auc

    out = {}
    for name in paths:
        try:
            fn, _, precision = build_path(name, model, images[:16])
            probs = []
            with torch.inference_mode():
                for start in range(0, len(images), 16):
                    x = images[start : start + 16]
                    if name in CHANNELS_LAST_PATHS:
                        x = x.contiguous(memory_format=torch.channels_last)
                    probs.append(torch.sigmoid(fn(x).float()))
            auc = float(compute_roc_auc(torch.cat(probs), labels, average="macro"))
            out[name] = {"mean_auc": auc, "precision": precision}
        except Exception as exc:  # a failing path is a result
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    base = out[BASELINE_PATH]["mean_auc"]
    for entry in out.values():
        if "mean_auc" in entry:
            entry["auc_change"] = entry["mean_auc"] - base
            entry["agrees"] = abs(entry["auc_change"]) <= AUC_TOLERANCE
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / f"{BUNDLE}.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes to compile here)")
    args = parser.parse_args(argv)

    import mimtl

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    bundle = mimtl.load_bundle(BUNDLE)
    results: dict = {"bundle": BUNDLE, "version": bundle.metadata["version"], "machine": machine_info()}
    results["matmul"] = {
        "float32": measure_matmul_flops(torch.float32),
        "bfloat16": measure_matmul_flops(torch.bfloat16),
    }
    matmul = {k: v["flops_per_s"] for k, v in results["matmul"].items()}
    model = bundle.network("cpu", config="evaluate")
    print("inference paths ...", flush=True)
    results["inference"] = compare_inference_paths(
        model,
        (1, 224, 224),
        batch_size=16,
        compile=not args.no_compile,
        compile_timeout_s=900,
        matmul_flops=matmul,
        rounds=3,
        min_time=6.0,
        progress=True,
    )
    ok_paths = [p for p, r in results["inference"]["paths"].items() if r["status"] == "ok"]
    print("AUC agreement ...", flush=True)
    images, labels = demo_test_batch(bundle, 224)
    results["auc_agreement"] = auc_agreement(model, images, labels, [p for p in ok_paths if p != "torch_compile"])

    print("bundle end-to-end ...", flush=True)
    results["end_to_end"] = compare_bundle_inference(bundle.path, rounds=3, min_time=2.0, progress=True)

    print("trainer vs loop ...", flush=True)
    from mimtl.losses import MaskedBCEWithLogitsLoss
    from mimtl.networks import ColorizedClassifier

    torch.manual_seed(0)
    net = ColorizedClassifier("deconv", "efficientnet-lite0", num_classes=4, backbone_weights=None)
    batches = [{"image": torch.randn(16, 1, 224, 224), "label": torch.rand(16, 4).round()} for _ in range(4)]
    results["trainer_vs_loop"] = compare_trainer_vs_loop(
        net, MaskedBCEWithLogitsLoss(), lambda p: torch.optim.AdamW(p, lr=1e-4), batches, rounds=4, progress=True
    )
    results["runtime_s"] = time.perf_counter() - start

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(out)
    paths = results["inference"]["paths"]
    for name, r in paths.items():
        if r["status"] == "ok":
            agree = results["auc_agreement"].get(name, {})
            print(
                f"{name:22s} {r['items_per_s']:7.1f} img/s  x{r['speedup']:.2f}  matmul {r['matmul_fraction']:.1%}  "
                f"AUC change {agree.get('auc_change', float('nan')):+.4f}"
            )
        else:
            print(f"{name:22s} {r['status']}: {r.get('error') or r.get('reason')}")
    e2e = results["end_to_end"]
    print(f"end-to-end / bare forward: {e2e['ratio']:.3f} (epoch only {e2e['ratio_epoch']:.3f})")
    print(f"SupervisedTrainer / loop: {results['trainer_vs_loop']['ratio']:.3f}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
