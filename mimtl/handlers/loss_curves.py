"""Training logs: per-epoch loss means and validation metrics, written as CSV and PNG while a run trains."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from mimtl.handlers._common import csv_text, save_atomic, write_atomic

__all__ = ["LossCurveWriter"]


def _scalar(value: Any) -> float | None:
    """``value`` as a float when it is a number or a one-element tensor/array, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    numel = getattr(value, "numel", None) or getattr(value, "size", None)
    count = numel() if callable(numel) else numel
    if count == 1 and hasattr(value, "item"):
        return float(value.item())
    return None


class LossCurveWriter:
    """Record scalar entries of the iteration output per epoch (their mean) and plot them.

    Every ``every_n_epochs`` epochs and when the run completes, ``<output_dir>/<name>.csv`` (one row
    per epoch, one column per key) and ``<output_dir>/<name>.png`` are written atomically. Keys
    missing from an iteration's output are skipped, so e.g. ``d_twin`` may be listed for a run
    without TAC. A decollated output (MONAI's trainers: a list of per-item dicts that all hold the
    batch loss) is read from its first item.

    With ``validator`` (the evaluator a ``ValidationHandler`` runs), each epoch it validated adds
    its metrics as ``val_<name>`` columns; attach this handler after the ``ValidationHandler``, so
    the validation of an epoch has run when its row is written. A resumed run (the trainer starts
    past epoch 0) keeps the rows of the earlier epochs from the CSV already in ``output_dir``.

    Args:
        output_dir: folder of the files.
        keys: the output entries to record (default: every scalar entry of the output).
        name: stem of the files.
        every_n_epochs: how often to rewrite the files during training.
        validator: an evaluator whose ``state.metrics`` join the epoch's row.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        keys: Sequence[str] | None = None,
        name: str = "loss_curves",
        every_n_epochs: int = 10,
        validator: Engine | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.keys = None if keys is None else list(keys)
        self.name = name
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.validator = validator
        self.history: list[dict[str, float]] = []
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    @property
    def csv_path(self) -> Path:
        return self.output_dir / f"{self.name}.csv"

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.write())

    def _started(self, engine: Engine) -> None:
        # a resumed run starts past epoch 0: keep what the killed run logged up to there
        self.history = []
        if engine.state.epoch > 0 and self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:
                for row in csv.DictReader(f):
                    values = {k: float(v) for k, v in row.items() if v not in ("", None)}
                    values["epoch"] = int(values.get("epoch", 0))
                    if values.get("epoch", 0) <= engine.state.epoch:
                        self.history.append(values)

    def _record(self, engine: Engine) -> None:
        output = engine.state.output
        if isinstance(output, (list, tuple)):
            output = output[0] if output else None
        if not isinstance(output, dict):
            return
        keys = self.keys if self.keys is not None else list(output)
        for key in keys:
            value = _scalar(output.get(key))
            if value is not None:
                self._sums[key] = self._sums.get(key, 0.0) + value
                self._counts[key] = self._counts.get(key, 0) + 1

    def _epoch(self, engine: Engine) -> None:
        row: dict[str, float] = {"epoch": engine.state.epoch}
        row.update({k: self._sums[k] / self._counts[k] for k in self._sums})
        if self.validator is not None and self.validator.state.epoch == engine.state.epoch:
            for key, value in self.validator.state.metrics.items():
                number = _scalar(value)
                if number is not None:
                    row[f"val_{key}"] = number
        self.history.append(row)
        self._sums, self._counts = {}, {}
        if engine.state.epoch % self.every_n_epochs == 0:
            self.write()

    def write(self) -> None:
        """Write the CSV and the PNG of the epochs recorded so far."""
        if not self.history:
            return
        columns = ["epoch", *sorted({k for row in self.history for k in row if k != "epoch"})]
        write_atomic(self.csv_path, csv_text(self.history, columns))
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train_keys = [k for k in columns[1:] if not k.startswith("val_")]
        val_keys = [k for k in columns[1:] if k.startswith("val_")]
        panels = [(train_keys, "loss (epoch mean)"), (val_keys, "validation metric")]
        panels = [(keys, label) for keys, label in panels if keys]
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        epochs = [row["epoch"] for row in self.history]
        for ax, (keys, label) in zip(axes[0], panels):
            for key in keys:
                points = [(e, row[key]) for e, row in zip(epochs, self.history) if key in row]
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=key)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.legend(fontsize=7)
        fig.tight_layout()
        save_atomic(self.output_dir / f"{self.name}.png", lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)
