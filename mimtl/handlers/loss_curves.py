"""Loss curves of a training run, written as CSV and PNG while it trains."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ignite.engine import Engine, Events

from mimtl.handlers._common import csv_text, save_atomic, write_atomic

__all__ = ["LossCurveWriter"]


class LossCurveWriter:
    """Record scalar entries of the iteration output per epoch (their mean) and plot them.

    Every ``every_n_epochs`` epochs and when the run completes, ``<output_dir>/<name>.csv`` (one row
    per epoch, one column per key) and ``<output_dir>/<name>.png`` (one line per key) are written
    atomically. Keys missing from an iteration's output are skipped, so e.g. ``d_twin`` may be
    listed for a run without TAC.

    Args:
        output_dir: folder of the files.
        keys: the output entries to record (default: every float entry of the output).
        name: stem of the files.
        every_n_epochs: how often to rewrite the files during training.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        keys: Sequence[str] | None = None,
        name: str = "loss_curves",
        every_n_epochs: int = 10,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.keys = None if keys is None else list(keys)
        self.name = name
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.history: list[dict[str, float]] = []
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.write())

    def _record(self, engine: Engine) -> None:
        output = engine.state.output or {}
        keys = self.keys if self.keys is not None else [k for k, v in output.items() if isinstance(v, float)]
        for key in keys:
            value = output.get(key)
            if isinstance(value, (int, float)):
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
                self._counts[key] = self._counts.get(key, 0) + 1

    def _epoch(self, engine: Engine) -> None:
        row = {"epoch": float(engine.state.epoch)}
        row.update({k: self._sums[k] / self._counts[k] for k in self._sums})
        self.history.append(row)
        self._sums, self._counts = {}, {}
        if engine.state.epoch % self.every_n_epochs == 0:
            self.write()

    def write(self) -> None:
        """Write the CSV and the PNG of the epochs recorded so far."""
        if not self.history:
            return
        columns = ["epoch", *sorted({k for row in self.history for k in row if k != "epoch"})]
        write_atomic(self.output_dir / f"{self.name}.csv", csv_text(self.history, columns))
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        epochs = [row["epoch"] for row in self.history]
        for key in columns[1:]:
            ax.plot(epochs, [row.get(key, float("nan")) for row in self.history], label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (epoch mean)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_atomic(self.output_dir / f"{self.name}.png", lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)
