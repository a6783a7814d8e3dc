"""Key-metric comparisons for MONAI workflows (``metric_cmp_fn``)."""

from __future__ import annotations

__all__ = ["lower_is_better"]


def lower_is_better(current: float, best: float) -> bool:
    """``metric_cmp_fn`` for error metrics (MRE, loss): a new best when the value went down.

    MONAI's default compares with ``>``; a config names this one as
    ``metric_cmp_fn: {_target_: mimtl.engines.lower_is_better, _mode_: callable}``.
    """
    return current < best
