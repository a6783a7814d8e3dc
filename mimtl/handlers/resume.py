"""Training that survives being killed: one resumable checkpoint, written atomically, loaded on request.

:class:`ResumableCheckpoint` is an ignite handler for a trainer (MONAI's ``SupervisedTrainer`` or any
ignite ``Engine``). It writes ``save_dir/resume.pt`` every ``every_n_iterations`` iterations and at
each epoch end, and, with ``resume=True``, loads it when the trainer starts. The file holds what a
run needs to continue as if it had never stopped:

- the engine's position (epoch, iteration, iterations per epoch);
- the trainer's network (unwrapped from DDP), optimizer, loss function (a loss with parameters,
  e.g. learned heatmap sigmas) and AMP grad scaler;
- the state of every handler attached to the trainer that has ``state_dict`` / ``load_state_dict``
  (e.g. :class:`~mimtl.handlers.StagedFineTuning`'s stage, ignite's ``EarlyStopping``), the
  scheduler of each ``LrScheduleHandler``, the ranking lists of ``CheckpointSaver`` s, and for each
  ``ValidationHandler`` its evaluator's best metric and the key-metric ranking of the evaluator's
  ``CheckpointSaver`` (so a resumed run keeps the same best ``model.pt``);
- the random number generators: torch (CPU and CUDA), numpy, python ``random``, and the
  ``RandomState`` of every random MONAI transform of the training data set;
- anything else given in ``save_dict``.

Mid-epoch resume: the remaining batches of the interrupted epoch must be the ones the killed run
would have drawn. ignite starts the epoch with a new data iterator, so the handler also stores the
random state at the start of that epoch; on resume it recreates the epoch's iterator from it and
draws (loads and augments, without training) the batches already done, then restores the random
state of the checkpoint. This replays the data order of a shuffling sampler, a
``DistributedSampler`` and random augmentations alike, at the cost of loading those batches again.

Everything is stored as tensors, numbers, strings, lists and dicts, so loading uses
``torch.load(..., weights_only=True)``. Writes go to a temporary file in the same folder, are
fsynced and renamed over the previous checkpoint: a kill during a write leaves the previous one.

With ``handle_sigint`` (default), Ctrl-C while the trainer runs finishes the current iteration,
writes a checkpoint and raises :class:`TrainingInterrupted` with where it stopped (a second Ctrl-C
stops at once). The previous SIGINT handler is restored when the trainer stops.

Multi-GPU: only rank 0 writes; every rank loads. Rank 0's random states are restored on every rank
(ranks start from the same seed, so they are the same in the bundles).
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = [
    "RESUME_FILENAME",
    "ResumableCheckpoint",
    "ResumeError",
    "TrainingInterrupted",
    "atomic_save",
    "get_rng_state",
    "set_rng_state",
    "transform_rngs",
]

logger = logging.getLogger(__name__)

RESUME_FILENAME = "resume.pt"
FORMAT = "mimtl.resume/1"
RESUME_HINT = "resume with --resume (mimtl run) or --resume true (python -m monai.bundle run)"


class ResumeError(RuntimeError):
    """A resumable checkpoint that cannot be loaded into this configuration."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the training after a checkpoint was written; ``str()`` says where and how to resume."""


# ------------------------------------------------------------------------------------------ files
def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> what an ordinary file would get
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def _stale_temporaries(path: Path) -> list[Path]:
    """Temporary files a kill during :func:`atomic_save` left beside ``path``."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


# ------------------------------------------------------------------------------------------ RNGs
def _pack_numpy(state: tuple) -> dict:
    name, keys, pos, has_gauss, cached = state
    if name != "MT19937":
        raise TypeError(f"cannot store a numpy {name} random state")
    return {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _unpack_numpy(d: Mapping) -> tuple:
    return (
        "MT19937",
        d["keys"].numpy().astype(np.uint32),
        int(d["pos"]),
        int(d["has_gauss"]),
        float(d["cached_gaussian"]),
    )


def transform_rngs(root: Any) -> list[np.random.RandomState]:
    """The ``RandomState`` of every random MONAI transform reachable from ``root`` (a data set, a
    ``Compose``, ...), each once, in a fixed order."""
    from monai.transforms import Randomizable, Transform

    if hasattr(root, "transform") and not isinstance(root, (Transform, Randomizable)):
        root = root.transform  # a data set: its transform only, never its (possibly huge) data
    found: list[np.random.RandomState] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if depth > 8 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            children = list(obj)
        elif isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, (Transform, Randomizable)):
            rng = getattr(obj, "R", None)
            if isinstance(obj, Randomizable) and isinstance(rng, np.random.RandomState) and id(rng) not in seen:
                seen.add(id(rng))
                found.append(rng)
            children = list(vars(obj).values())
        else:
            return
        for child in children:
            visit(child, depth + 1)

    visit(root, 0)
    return found


def get_rng_state(transforms: list[np.random.RandomState] = ()) -> dict:
    """torch (CPU, CUDA), numpy, python ``random`` and the given transforms' states, as tensors and numbers."""
    version, internal, gauss = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "numpy": _pack_numpy(np.random.get_state()),
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "transforms": [_pack_numpy(r.get_state()) for r in transforms],
    }


def set_rng_state(state: Mapping, transforms: list[np.random.RandomState] = ()) -> None:
    """Restore what :func:`get_rng_state` returned (the transforms' states only when their number matches)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(_unpack_numpy(state["numpy"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if len(state["transforms"]) == len(transforms):
        for rng, s in zip(transforms, state["transforms"]):
            rng.set_state(_unpack_numpy(s))


# ------------------------------------------------------------------------------------------ helpers
def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    while isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        network = network.module
    return network


def _plain(obj: Any) -> Any:
    """Tensors on the CPU, numpy scalars as python numbers: what ``weights_only`` loading accepts."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _attached(engine) -> list:
    """The objects whose methods are attached to ``engine`` as event handlers, each once, in order."""
    out, seen = [], set()
    for entries in getattr(engine, "_event_handlers", {}).values():
        for entry in entries:
            handler = inspect.unwrap(entry[0])
            obj = getattr(handler, "__self__", handler)
            if id(obj) not in seen:
                seen.add(id(obj))
                out.append(obj)
    return out


def _savers_state(saver) -> dict:
    """The ranking lists (which files are kept) of a MONAI ``CheckpointSaver``."""
    out = {}
    for name in ("_key_metric_checkpoint", "_interval_checkpoint", "_final_checkpoint"):
        ckpt = getattr(saver, name, None)
        if ckpt is not None:
            out[name] = {k: [[float(p), str(f)] for p, f in v] for k, v in ckpt.state_dict().items()}
    return out


def _load_savers_state(saver, state: Mapping) -> None:
    for name, value in state.items():
        ckpt = getattr(saver, name, None)
        if ckpt is not None:
            ckpt.load_state_dict({k: [(p, f) for p, f in v] for k, v in value.items()})


def _is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _as_bool(value: Any, name: str) -> bool:
    """``python -m monai.bundle run --resume true`` hands over the string 'true'."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off", "none", "null", ""):
            return False
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


class _ReplayEpoch:
    """Stands in for the training data loader until ignite starts the interrupted epoch: it builds
    that epoch's iterator from the epoch's starting random state, draws the batches already done,
    restores the checkpoint's random state and hands the iterator over; then it puts the loader back."""

    def __init__(self, engine, loader, skip: int, epoch_rng: Mapping, rng: Mapping, transforms: list) -> None:
        self.engine, self.loader, self.skip = engine, loader, skip
        self.epoch_rng, self.rng, self.transforms = epoch_rng, rng, transforms

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.engine.state.dataloader = self.loader
        set_rng_state(self.epoch_rng, self.transforms)
        it = iter(self.loader)
        for _ in range(self.skip):
            next(it)
        set_rng_state(self.rng, self.transforms)
        logger.info(f"resumed epoch {self.engine.state.epoch}: replayed the data of its first {self.skip} iteration(s)")
        return it


# ------------------------------------------------------------------------------------------ handler
class ResumableCheckpoint:
    """Save a resumable checkpoint of a trainer every ``every_n_iterations`` and at each epoch end;
    with ``resume``, continue from it (see the module docstring for what it holds).

    Args:
        save_dir: folder of the checkpoint (a bundle's ``ckpt_dir``).
        resume: load ``save_dir/filename`` when the trainer starts. Without a checkpoint there the
            run starts fresh and says so (so a restart script can always pass ``--resume``); one that
            does not fit the configuration (another network, optimizer, data size) raises
            :class:`ResumeError` naming the file. Strings such as ``"true"`` are accepted.
        every_n_iterations: also save every N iterations inside an epoch; 0: at epoch ends only.
        filename: the checkpoint's file name.
        save_dict: more objects with ``state_dict`` / ``load_state_dict`` to store, by name.
        handle_sigint: on Ctrl-C, save after the current iteration and raise :class:`TrainingInterrupted`.

    Attach it first among the trainer's handlers: it loads at ``Events.STARTED``, before the other
    handlers read the epoch. Its saving runs after every other handler of an iteration or epoch
    (validation, learning-rate steps), whatever its position.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        resume: bool | str = False,
        every_n_iterations: int = 0,
        filename: str = RESUME_FILENAME,
        save_dict: Mapping[str, Any] | None = None,
        handle_sigint: bool = True,
    ) -> None:
        every = int(every_n_iterations or 0)
        if every < 0:
            raise ValueError(f"every_n_iterations must be >= 0, got {every_n_iterations}.")
        for name, obj in (save_dict or {}).items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"save_dict['{name}'] ({type(obj).__name__}) has no state_dict()/load_state_dict().")
        self.path = Path(save_dir) / filename
        self.resume = _as_bool(resume, "resume")
        self.every = every
        self.save_dict = dict(save_dict or {})
        self.handle_sigint = handle_sigint
        self._transforms: list[np.random.RandomState] = []
        self._epoch_rng: dict | None = None
        self._loaded_epoch_rng: dict | None = None
        self._registered = False
        self._interrupt = False
        self._previous_sigint: Any = None
        self._sigint_installed = False

    # ------------------------------------------------------------------ attaching
    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self._on_started)

    def _register(self, engine) -> None:
        """Once, at the first start: the saving handlers go after every handler attached so far."""
        if self._registered:
            return
        self._registered = True
        engine.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._restore_sigint)
        engine.add_event_handler(Events.TERMINATE, self._restore_sigint)
        # EXCEPTION_RAISED: with other handlers there (MONAI's StatsHandler re-raises), restore first
        # and let them run; alone, restore and re-raise (ignite swallows exceptions that handlers take)
        handlers = getattr(engine, "_event_handlers", {}).get(Events.EXCEPTION_RAISED)
        if handlers:
            handlers.insert(0, (self._restore_on_exception, (engine,), {}))
        else:
            engine.add_event_handler(Events.EXCEPTION_RAISED, self._restore_and_raise)

    # ------------------------------------------------------------------ what is stored
    def _parts(self, engine) -> dict[str, Any]:
        """name -> object with state_dict/load_state_dict, found on the trainer and its handlers."""
        from monai.handlers import CheckpointSaver, LrScheduleHandler, ValidationHandler

        parts: dict[str, Any] = {}
        if getattr(engine, "network", None) is not None:
            parts["network"] = _unwrap(engine.network)
        for name in ("optimizer", "scaler"):
            if getattr(engine, name, None) is not None:
                parts[name] = getattr(engine, name)
        if isinstance(getattr(engine, "loss_function", None), torch.nn.Module):
            parts["loss"] = engine.loss_function
        counts: dict[str, int] = {}

        def key(kind: str) -> str:
            counts[kind] = counts.get(kind, 0) + 1
            return kind if counts[kind] == 1 else f"{kind}_{counts[kind]}"

        from ignite.metrics import Metric

        for obj in _attached(engine):
            if obj is self or isinstance(obj, (Metric, type(engine))):
                continue
            if isinstance(obj, LrScheduleHandler):
                parts[key("lr_scheduler")] = obj.lr_scheduler
            elif isinstance(obj, ValidationHandler) and obj.validator is not None:
                parts[key("validator")] = _EvaluatorState(obj.validator)
            elif isinstance(obj, CheckpointSaver):
                parts[key("checkpoint_saver")] = _SaverState(obj)
            elif callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None)):
                parts[key(type(obj).__name__)] = obj
        for name, obj in self.save_dict.items():
            parts[f"extra:{name}"] = obj
        return parts

    def _checkpoint(self, engine, epoch_rng: dict | None) -> dict:
        s = engine.state
        return {
            "format": FORMAT,
            "engine": {
                "epoch": int(s.epoch),
                "iteration": int(s.iteration),
                "epoch_length": int(s.epoch_length),
                "max_epochs": int(s.max_epochs or 0),
            },
            "parts": {name: _plain(obj.state_dict()) for name, obj in self._parts(engine).items()},
            "rng": get_rng_state(self._transforms),
            "epoch_rng": epoch_rng,
        }

    def save(self, engine, epoch_end: bool) -> Path | None:
        """Write the checkpoint now (rank 0 only); returns its path on the rank that wrote it."""
        if not _is_main_process():
            return None
        ckpt = self._checkpoint(engine, None if epoch_end else self._epoch_rng)
        atomic_save(ckpt, self.path)
        logger.debug(
            f"resumable checkpoint: epoch {engine.state.epoch} iteration {engine.state.iteration} -> {self.path}"
        )
        return self.path

    # ------------------------------------------------------------------ loading
    def _on_started(self, engine) -> None:
        self._transforms = transform_rngs(getattr(engine.state.dataloader, "dataset", None))
        if _is_main_process():
            for stale in _stale_temporaries(self.path):
                logger.info(f"removing {stale}, left by a run killed while it wrote a checkpoint")
                stale.unlink(missing_ok=True)
        if self.resume:
            self.load(engine)
        self._register(engine)
        self._install_sigint()

    def load(self, engine) -> bool:
        """Restore the trainer from the checkpoint; False (and a message) when there is none."""
        if not self.path.is_file():
            logger.warning(f"resume: no checkpoint at {self.path}; starting from scratch")
            return False
        try:
            ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ResumeError(f"cannot read the resumable checkpoint {self.path}: {e}") from e
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise ResumeError(f"{self.path} is not a mimtl resumable checkpoint ({FORMAT}).")
        pos = ckpt["engine"]
        length = int(engine.state.epoch_length)
        max_epochs = int(engine.state.max_epochs)
        done_in_epoch = pos["iteration"] - (pos["iteration"] // pos["epoch_length"]) * pos["epoch_length"]
        if done_in_epoch and pos["epoch_length"] != length:
            raise ResumeError(
                f"{self.path} was written in the middle of an epoch of {pos['epoch_length']} iterations; this "
                f"configuration has {length} per epoch (another data set, batch size or fraction)."
            )
        epochs_done = pos["iteration"] // pos["epoch_length"]
        if epochs_done > max_epochs:
            raise ResumeError(f"{self.path} is at epoch {epochs_done}, beyond this run's max_epochs {max_epochs}.")
        parts = self._parts(engine)
        stored = ckpt["parts"]
        if not _is_main_process():  # savers are rank 0's (main_process_only): nothing to restore elsewhere
            stored = {k: v for k, v in stored.items() if k in parts or not k.startswith("checkpoint_saver")}
        if set(stored) != set(parts):
            raise ResumeError(
                f"{self.path} does not match this configuration: it holds {sorted(stored)}, "
                f"the trainer has {sorted(parts)}."
            )
        for name, obj in parts.items():
            try:
                obj.load_state_dict(stored[name])
            except Exception as e:
                raise ResumeError(f"{self.path} does not match this configuration ({name}): {e}") from e
        if len(ckpt["rng"]["transforms"]) != len(self._transforms):
            logger.warning(
                f"resume: {self.path} holds {len(ckpt['rng']['transforms'])} random transform states, the training "
                f"transforms have {len(self._transforms)}: their random draws will differ from an uninterrupted run"
            )
        set_rng_state(ckpt["rng"], self._transforms)
        iteration = epochs_done * length + done_in_epoch
        engine.state.iteration = iteration
        engine.state.epoch = epochs_done
        if done_in_epoch:
            self._loaded_epoch_rng = ckpt["epoch_rng"]
            engine.state.dataloader = _ReplayEpoch(
                engine, engine.state.dataloader, done_in_epoch, ckpt["epoch_rng"], ckpt["rng"], self._transforms
            )
        where = (
            f"epoch {epochs_done + 1}, iteration {done_in_epoch + 1} of {length}"
            if done_in_epoch
            else (f"the end of epoch {epochs_done}")
        )
        if epochs_done >= max_epochs:
            logger.warning(f"resume: {self.path} is at the end of the last epoch ({max_epochs}): nothing left to train")
        else:
            logger.warning(f"resume: continuing from {self.path} at {where} (global iteration {iteration})")
        return True

    # ------------------------------------------------------------------ events
    def _on_epoch_started(self, engine) -> None:
        if self._loaded_epoch_rng is not None:  # the interrupted epoch: its start was restored
            self._epoch_rng, self._loaded_epoch_rng = self._loaded_epoch_rng, None
        else:
            self._epoch_rng = get_rng_state(self._transforms)

    def _on_iteration_completed(self, engine) -> None:
        at_epoch_end = engine.state.iteration % engine.state.epoch_length == 0
        interrupted = self._interrupt_requested()
        if at_epoch_end:  # saved by _on_epoch_completed, after validation and learning-rate steps
            return
        if interrupted or (self.every and engine.state.iteration % self.every == 0):
            self.save(engine, epoch_end=False)
        if interrupted:
            self._stop(engine)

    def _on_epoch_completed(self, engine) -> None:
        interrupted = self._interrupt_requested()
        self.save(engine, epoch_end=True)
        if interrupted:
            self._stop(engine)

    def _stop(self, engine) -> None:
        msg = (
            f"interrupted at epoch {engine.state.epoch} iteration {engine.state.iteration}; checkpoint saved to "
            f"{self.path}; {RESUME_HINT}"
        )
        self._restore_sigint()
        if _is_main_process():
            print(msg, file=sys.stderr, flush=True)
        raise TrainingInterrupted(msg)

    # ------------------------------------------------------------------ Ctrl-C
    def _install_sigint(self) -> None:
        if (
            not self.handle_sigint
            or self._sigint_installed
            or threading.current_thread() is not threading.main_thread()
        ):
            return
        self._interrupt = False
        self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        self._sigint_installed = True

    def _on_sigint(self, signum, frame) -> None:
        if self._interrupt:  # the second Ctrl-C: stop now
            self._restore_sigint()
            raise KeyboardInterrupt
        self._interrupt = True
        print(
            "Ctrl-C: saving a checkpoint after this iteration (press again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def _interrupt_requested(self) -> bool:
        """Whether any process got Ctrl-C (all ranks must stop at the same iteration)."""
        flag = self._interrupt
        if self._sigint_installed and dist.is_initialized() and dist.get_world_size() > 1:
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            t = torch.tensor([int(flag)], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    def _restore_sigint(self, *_: Any) -> None:
        if self._sigint_installed:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._sigint_installed = False

    def _restore_on_exception(self, engine, *_: Any) -> None:
        self._restore_sigint()

    def _restore_and_raise(self, engine, e: BaseException) -> None:
        self._restore_sigint()
        raise e


class _EvaluatorState:
    """A validator's best metric and the key-metric ranking of its ``CheckpointSaver`` s."""

    def __init__(self, evaluator) -> None:
        self.evaluator = evaluator

    def _savers(self) -> list:
        from monai.handlers import CheckpointSaver

        return [h for h in _attached(self.evaluator) if isinstance(h, CheckpointSaver)]

    def state_dict(self) -> dict:
        s = self.evaluator.state
        best = getattr(s, "best_metric", -1)
        return {
            "best_metric": float(best.item() if hasattr(best, "item") else best),
            "best_metric_epoch": int(getattr(s, "best_metric_epoch", -1)),
            "savers": [_savers_state(h) for h in self._savers()],
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        savers = self._savers()
        if savers and len(savers) != len(state["savers"]):
            raise ValueError(
                f"the validator has {len(savers)} CheckpointSaver(s), the checkpoint {len(state['savers'])}"
            )
        # off rank 0 the savers are left out (main_process_only): nothing to restore there
        for saver, saved in zip(savers, state["savers"]):
            _load_savers_state(saver, saved)


class _SaverState:
    """The ranking lists of a ``CheckpointSaver`` attached to the trainer itself."""

    def __init__(self, saver) -> None:
        self.saver = saver

    def state_dict(self) -> dict:
        return _savers_state(self.saver)

    def load_state_dict(self, state: Mapping) -> None:
        _load_savers_state(self.saver, state)
