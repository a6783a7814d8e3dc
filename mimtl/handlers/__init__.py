"""Ignite handlers for mimtl's engines (attach them via a workflow's ``handlers``/``val_handlers``)."""

from mimtl.handlers.classification import ClassificationWriter, GradCAMWriter, resolve_thresholds
from mimtl.handlers.finetune import StagedFineTuning

__all__ = ["ClassificationWriter", "GradCAMWriter", "StagedFineTuning", "resolve_thresholds"]
