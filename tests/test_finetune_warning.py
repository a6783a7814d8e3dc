"""StagedFineTuning warns when stage 1 would freeze a part that starts from random weights."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine

from mimtl.handlers import StagedFineTuning
from mimtl.networks import ColorizedClassifier


def _run_one_epoch(network, frozen_epochs: int) -> StagedFineTuning:
    handler = StagedFineTuning(network, frozen_epochs=frozen_epochs, parts=("backbone",))
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([0], max_epochs=1)
    return handler


@pytest.mark.parametrize(
    ("weights", "frozen_epochs", "warned"),
    [
        (None, 2, True),  # densenet121 from scratch, frozen: stage 1 trains against random features
        (None, 0, False),  # nothing frozen: nothing to warn about
    ],
)
def test_random_backbone_frozen_warns(caplog, weights, frozen_epochs, warned):
    net = ColorizedClassifier(backbone="densenet121", num_classes=2, weights=weights)
    assert net.random_init_parts == ["backbone"]
    with caplog.at_level(logging.WARNING, logger="mimtl.handlers.finetune"):
        _run_one_epoch(net, frozen_epochs)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("starts from random weights" in m for m in messages) is warned


def test_pretrained_backbone_frozen_does_not_warn(caplog, tmp_path):
    """A backbone given a weight file is not random: freezing it is what stage 1 is for."""
    donor = ColorizedClassifier(backbone="densenet121", num_classes=2, weights=None)
    path = tmp_path / "densenet121.pth"
    torch.save(
        {k.removeprefix("backbone."): v for k, v in donor.state_dict().items() if k.startswith("backbone.")}, path
    )
    net = ColorizedClassifier(backbone="densenet121", num_classes=2, weights=str(path))
    assert net.random_init_parts == []
    with caplog.at_level(logging.WARNING, logger="mimtl.handlers.finetune"):
        _run_one_epoch(net, 2)
    assert not [r for r in caplog.records if "random weights" in r.getMessage()]
