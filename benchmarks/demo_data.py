#!/usr/bin/env python
"""How fast the embedded demo data is made here: ``python benchmarks/demo_data.py [--tasks ...]``.

Measures the radiograph simulator's images/s (projection + exposure, no file writing) and the
wall time to build each default demo data set (everything: simulation, encoding, contact sheet),
and writes ``benchmarks/results/demo_data.json``. Absolute times depend on the machine and on
what else runs on it; the JSON records both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import machine_info

from mimtl.sim.demo import DEMO_TASKS, build_demo


def simulator_images_per_s(n: int = 20, seed: int = 0) -> dict:
    """Radiographs per second from :func:`mimtl.sim.drr.simulate` with random poses and exposures."""
    from mimtl.sim.drr import load_chest_volume, random_exposure, random_pose, simulate

    volume = load_chest_volume()
    rng = np.random.default_rng(seed)
    simulate(volume, rng)  # warm-up: first call builds cached attenuation volumes
    start = time.perf_counter()
    for _ in range(n):
        simulate(volume, rng, pose=random_pose(rng), exposure=random_exposure(rng))
    seconds = time.perf_counter() - start
    return {"images": n, "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 2)}


def build_times(tasks: list[str]) -> dict:
    """Wall time to build each default demo set into a temporary folder."""
    out = {}
    for task in tasks:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            datalist = build_demo(task, Path(tmp) / task, progress=False)
            seconds = time.perf_counter() - start
            content = json.loads(datalist.read_text())
            items = sum(len(v) for k, v in content.items() if k in ("training", "validation", "test"))
            out[task] = {"items": items, "seconds": round(seconds, 1), "items_per_s": round(items / seconds, 2)}
        print(f"{task}: {out[task]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(DEMO_TASKS), choices=list(DEMO_TASKS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "demo_data.json")
    args = parser.parse_args()
    results = {"machine": machine_info(), "simulator": simulator_images_per_s(), "build": build_times(args.tasks)}
    print(f"simulator: {results['simulator']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
