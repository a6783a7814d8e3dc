#!/usr/bin/env python
"""Speed of the ACGAN feature-augmentation stages: ``python benchmarks/feature_augmentation.py``.

Three questions of issue 16, each measured in one run:

1. GAN steps per second of :class:`mimtl.engines.ConditionalGanTrainer` (ignite engine, events,
   output dict) against a bare PyTorch loop doing the same work (same networks, losses, batches,
   one D and one G step per batch, fresh fakes), interleaved rounds, median ratio; target >= 0.95;
2. cases per second of stage 1's ``extract_features`` (mask + global pooling, files written)
   against the bare encoder forward on the same batches; target >= 0.85;
3. the full comparison (every default variant, one repeat of stratified 5-fold CV, the quality
   check of the generated features) on a 100-case x 64-feature table; target < 120 s on 2 cores.

Writes ``benchmarks/results/feature_augmentation.json``. ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "feature_augmentation.json"
TARGETS = {"gan_trainer_vs_loop_ratio": 0.95, "comparison_seconds": 120.0, "extraction_vs_encoder_ratio": 0.85}


def _gan_parts(n=100, dim=64, seed=0):
    from mimtl.losses import ACGANLoss
    from mimtl.networks import FeatureDiscriminator, FeatureGenerator

    torch.manual_seed(seed)
    g = FeatureGenerator(32, 2, dim, hidden=(128, 128))
    d = FeatureDiscriminator(dim, 2, hidden=(128, 128), spectral_norm=True)
    x = torch.randn(n, dim)
    y = (torch.arange(n) < n // 4).long()
    items = [{"features": x[i], "label": y[i]} for i in range(n)]
    opt = lambda m: torch.optim.Adam(m.parameters(), 2e-4, betas=(0.5, 0.999))
    return g, d, opt(g), opt(d), ACGANLoss(), items


def _bare_epoch(g, d, g_opt, d_opt, loss, loader) -> int:
    steps = 0
    for batch in loader:
        reals, labels = batch["features"].float(), batch["label"].long().view(-1)
        n = reals.shape[0]
        with torch.no_grad():
            z = torch.randn(n, g.latent_size)
            fy = labels[torch.randint(0, n, (n,))]
            fakes = g(z, fy)
        d_opt.zero_grad(set_to_none=True)
        dl, _ = loss.discriminator_loss(d, reals, labels, fakes, fy)
        dl.backward()
        d_opt.step()
        z = torch.randn(n, g.latent_size)
        fy = labels[torch.randint(0, n, (n,))]
        g_opt.zero_grad(set_to_none=True)
        gl, _ = loss.generator_loss(d, g(z, fy), fy)
        gl.backward()
        g_opt.step()
        d_opt.zero_grad(set_to_none=True)
        steps += 1
    return steps


def gan_trainer_vs_loop(rounds: int = 40, epochs: int = 2, batch_size: int = 16) -> dict:
    """Interleaved: per round ``epochs`` epochs of the bare loop, then of the trainer; the median of the paired ratios
    (pairs close in time cancel most of the load of shared cores)."""
    from torch.utils.data import DataLoader

    from mimtl.engines import ConditionalGanTrainer

    g, d, g_opt, d_opt, loss, items = _gan_parts()
    loader = DataLoader(items, batch_size=batch_size, shuffle=True)
    trainer = ConditionalGanTrainer("cpu", epochs, loader, g, g_opt, d, d_opt, loss_function=loss, latent_shape=32)
    steps = epochs * len(loader)
    loop_rates, trainer_rates = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(epochs):
            _bare_epoch(g, d, g_opt, d_opt, loss, loader)
        loop_rates.append(steps / (time.perf_counter() - t))
        t = time.perf_counter()
        trainer.run()  # a completed ignite engine restarts from epoch 0: another `epochs` epochs
        trainer_rates.append(steps / (time.perf_counter() - t))
    ratios = [a / b for a, b in zip(trainer_rates, loop_rates)]
    return {
        "loop_steps_per_s": statistics.median(loop_rates),
        "trainer_steps_per_s": statistics.median(trainer_rates),
        "ratio": statistics.median(ratios),
        "rounds": rounds,
        "epochs_per_round": epochs,
        "batch_size": batch_size,
        "target": TARGETS["gan_trainer_vs_loop_ratio"],
    }


def extraction_vs_encoder(rounds: int = 5, cases: int = 8, size: int = 32) -> dict:
    """Cases/s of extract_features (loader, mask pooling, npz + provenance written) vs the bare encoder forward
    on the same batches; interleaved rounds, median ratio; target >= 0.85."""
    from mimtl.engines.feature_extraction import extract_features
    from mimtl.networks.tumour_features import TumourFeatureExtractor, tumour_segresnet

    torch.manual_seed(0)
    net = tumour_segresnet(init_filters=8).eval()
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(0, cases, 2):
        mask = torch.zeros(2, 1, size, size, size)
        mask[:, :, 8:20, 10:22, 6:18] = 1
        batches.append(
            {
                "image": torch.randn(2, 4, size, size, size, generator=g),
                "label": mask,
                "name": [f"c{i}", f"c{i + 1}"],
                "grade_label": torch.tensor([0, 1]),
            }
        )
    extractor = TumourFeatureExtractor(net, "both")
    bare, full = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            t = time.perf_counter()
            with torch.no_grad():
                for b in batches:
                    net.encode(b["image"])
            bare.append(cases / (time.perf_counter() - t))
            t = time.perf_counter()
            extract_features(extractor, batches, Path(tmp) / f"f{r}", progress=False)
            full.append(cases / (time.perf_counter() - t))
    ratios = [f / b for f, b in zip(full, bare)]
    return {
        "encoder_cases_per_s": statistics.median(bare),
        "extract_cases_per_s": statistics.median(full),
        "ratio": statistics.median(ratios),
        "cases": cases,
        "size": size,
        "target": TARGETS["extraction_vs_encoder_ratio"],
    }


def full_comparison(n: int = 100, dim: int = 64, repeats: int = 1) -> dict:
    from mimtl.engines.feature_compare import compare_feature_table

    rng = np.random.default_rng(0)
    y = (np.arange(n) < n // 4).astype(int)
    x = rng.normal(size=(n, dim))
    x[y == 1, :8] += 0.8
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "features.npz"
        np.savez(table, features=x, label=y)
        t, c = time.perf_counter(), time.process_time()
        compare_feature_table(table, "label", Path(tmp) / "out", n_repeats=repeats, progress=False)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {
        "cases": n,
        "features": dim,
        "repeats": repeats,
        "folds": 5,
        "wall_s": wall,
        "cpu_s": cpu,
        "target_s": TARGETS["comparison_seconds"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread: on shared cores two OpenMP threads spin against other work
    results = {"machine": machine_info()}
    results["gan_trainer_vs_loop"] = gan_trainer_vs_loop(rounds=4 if args.quick else 40)
    print(json.dumps(results["gan_trainer_vs_loop"]), flush=True)
    results["extraction_vs_encoder"] = extraction_vs_encoder(rounds=2 if args.quick else 5)
    print(json.dumps(results["extraction_vs_encoder"]), flush=True)
    results["full_comparison"] = full_comparison(n=40 if args.quick else 100, dim=8 if args.quick else 64)
    print(json.dumps(results["full_comparison"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
