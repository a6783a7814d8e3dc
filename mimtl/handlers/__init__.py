"""Ignite handlers for mimtl's engines (attach them via a workflow's ``handlers``/``val_handlers``)."""

from mimtl.handlers.classification import ClassificationWriter, GradCAMWriter, resolve_thresholds
from mimtl.handlers.finetune import StagedFineTuning
from mimtl.handlers.landmarks import LandmarkReport, LandmarkWriter, load_conformal

__all__ = [
    "ClassificationWriter",
    "GradCAMWriter",
    "LandmarkReport",
    "LandmarkWriter",
    "StagedFineTuning",
    "load_conformal",
    "resolve_thresholds",
]
