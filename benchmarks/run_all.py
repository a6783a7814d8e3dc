#!/usr/bin/env python
"""Run the mimtl benchmark suite: ``python benchmarks/run_all.py [--quick] [--no-compile] ...``.

Writes ``benchmarks/results/<full|quick>.json`` and, for full runs, regenerates the tables
in ``docs/performance.md``.  All the logic lives in ``benchmarks/harness.py``.
"""

from pathlib import Path

from harness import main

if __name__ == "__main__":
    raise SystemExit(main(root=Path(__file__).resolve().parents[1], prog="python benchmarks/run_all.py"))
