"""The training log a bundle's train.yaml writes beside its checkpoint (LossCurveWriter)."""

from __future__ import annotations

import csv

import torch
from ignite.engine import Engine, Events

from mimtl.handlers import LossCurveWriter


def _trainer(losses: list[float]) -> Engine:
    """An engine whose output is what MONAI's SupervisedTrainer leaves: decollated items sharing the batch loss."""

    def step(engine, batch):
        loss = torch.tensor(losses[(engine.state.iteration - 1) % len(losses)])
        return [{"loss": loss, "pred": torch.zeros(2)}, {"loss": loss, "pred": torch.zeros(2)}]

    return Engine(step)


def _validator(values: dict[int, float]) -> Engine:
    validator = Engine(lambda e, b: None)
    validator.state.epoch = 0

    def validate(trainer):  # as ValidationHandler: runs at the trainer's epoch end, sets its epoch
        validator.state.epoch = trainer.state.epoch
        validator.state.metrics = {"dice": values[trainer.state.epoch], "note": "not a number"}

    return validator, validate


def _read(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_rows_hold_epoch_mean_loss_and_that_epochs_validation(tmp_path):
    trainer = _trainer([1.0, 3.0])
    validator, validate = _validator({1: 0.25, 2: 0.5, 3: 0.75})
    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=2), validate)  # validation every 2nd epoch
    LossCurveWriter(tmp_path, name="training_log", every_n_epochs=1, validator=validator).attach(trainer)
    trainer.run(range(4), max_epochs=3)
    rows = _read(tmp_path / "training_log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [float(r["loss"]) for r in rows] == [2.0, 2.0, 2.0]
    assert [r["val_dice"] for r in rows] == ["", "0.5", ""]  # only the epoch that was validated
    assert "val_note" not in rows[0] and "pred" not in rows[0]
    assert (tmp_path / "training_log.png").read_bytes()[:4] == b"\x89PNG"


def test_a_resumed_run_keeps_the_killed_runs_rows(tmp_path):
    (tmp_path / "training_log.csv").write_text("epoch,loss\n1,9.0\n2,8.0\n3,7.0\n")  # epoch 3 did not finish
    trainer = _trainer([1.0])

    @trainer.on(Events.STARTED)
    def resume(engine):  # what ResumableCheckpoint does: continue after the last finished epoch
        engine.state.epoch, engine.state.iteration = 2, 8

    LossCurveWriter(tmp_path, name="training_log", every_n_epochs=1).attach(trainer)
    trainer.run(range(4), max_epochs=4)
    rows = _read(tmp_path / "training_log.csv")
    assert [(r["epoch"], float(r["loss"])) for r in rows] == [("1", 9.0), ("2", 8.0), ("3", 1.0), ("4", 1.0)]


def test_a_fresh_run_replaces_an_old_log(tmp_path):
    (tmp_path / "training_log.csv").write_text("epoch,loss\n1,9.0\n2,8.0\n")
    trainer = _trainer([0.5])
    LossCurveWriter(tmp_path, name="training_log", every_n_epochs=1).attach(trainer)
    trainer.run(range(2), max_epochs=1)
    assert [(r["epoch"], r["loss"]) for r in _read(tmp_path / "training_log.csv")] == [("1", "0.5")]
