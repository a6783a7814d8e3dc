"""Run several workflows of one bundle in order, as one workflow (a method of several stages).

A bundle whose method has stages (train a network, extract features with it, compare classifiers
on the features) keeps one config per stage, each runnable alone, and a chain config that runs
them in turn with the same settings::

    chain:
      _target_: mimtl.bundle.WorkflowChain
      bundle: '@bundle_root'
      stages:
      - {workflow: train, done: "$@ckpt_dir + '/model.pt'"}
      - {workflow: features, done: "$@output_dir + '/features.npz'"}
      settings: {dataset_dir: '@dataset_dir', ckpt_dir: '@ckpt_dir', output_dir: '@output_dir'}
      resume: '@resume'
    run: ["$@chain.run()"]

Each setting goes to every stage whose configs define that id (a stage without it does not get it,
so one dict can hold settings of several stages); a setting no stage defines is an error, as a
mistyped ``--set`` is. With ``resume``, a stage whose ``done`` file exists is not run again, so a
chain stopped in its third stage continues there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WorkflowChain"]

logger = logging.getLogger(__name__)


class WorkflowChain:
    """Workflows of one bundle run in order with shared settings.

    Args:
        bundle: bundle name or folder.
        stages: ``{"workflow": name, "done": file or None}`` per stage, in order.
        settings: config id -> value, given to each stage whose configs define the id.
        resume: skip the stages whose ``done`` file exists.
    """

    def __init__(
        self,
        bundle: str | os.PathLike,
        stages: Sequence[Mapping[str, Any]],
        settings: Mapping[str, Any] | None = None,
        resume: bool = False,
    ) -> None:
        from mimtl.bundle.bundle import BundleError, load_bundle

        self.bundle = load_bundle(bundle)
        self.stages = [dict(s) for s in stages]
        for s in self.stages:
            if "workflow" not in s:
                raise BundleError(f"WorkflowChain: stage {s} has no 'workflow'")
            self.bundle.config_file(s["workflow"])  # an unknown workflow: BundleError naming what exists
        self.settings = dict(settings or {})
        self.resume = bool(resume)
        self._per_stage = [self._settings_for(s["workflow"]) for s in self.stages]
        used = {k for per in self._per_stage for k in per}
        unused = sorted(set(self.settings) - used)
        if unused:
            raise BundleError(
                f"WorkflowChain of bundle '{self.bundle.name}': no stage ({', '.join(s['workflow'] for s in self.stages)}) "
                f"has the setting(s) {', '.join(unused)}"
            )

    def _settings_for(self, workflow: str) -> dict[str, Any]:
        parser = self.bundle.parser(workflow)
        return {k: v for k, v in self.settings.items() if _has_id(parser, k)}

    def run(self) -> None:
        for stage, settings in zip(self.stages, self._per_stage):
            name, done = stage["workflow"], stage.get("done")
            if self.resume and done and Path(done).is_file():
                logger.info(f"{self.bundle.name} {name}: {done} exists, not run again (resume)")
                continue
            logger.info(f"{self.bundle.name}: running {name} ...")
            wf = self.bundle.workflow(name, configure_logging=False, **settings)
            wf.initialize()
            try:
                wf.run()
            finally:
                wf.finalize()
            if done and not Path(done).is_file():
                raise FileNotFoundError(f"{self.bundle.name} {name} finished without writing {done}")


_MISSING = object()


def _has_id(parser, key: str) -> bool:
    return parser.get(key, _MISSING) is not _MISSING
