"""Ignite handlers for mimtl's engines (attach them via a workflow's ``handlers``/``val_handlers``)."""

from mimtl.handlers._common import OutputWriteError
from mimtl.handlers.classification import ClassificationWriter, GradCAMWriter, resolve_thresholds
from mimtl.handlers.domain import DomainCheck
from mimtl.handlers.finetune import StagedFineTuning
from mimtl.handlers.landmarks import LandmarkReport, LandmarkWriter, load_conformal
from mimtl.handlers.resume import ResumableCheckpoint, ResumeError, TrainingInterrupted

__all__ = [
    "ClassificationWriter",
    "DomainCheck",
    "GradCAMWriter",
    "LandmarkReport",
    "LandmarkWriter",
    "OutputWriteError",
    "ResumableCheckpoint",
    "ResumeError",
    "StagedFineTuning",
    "TrainingInterrupted",
    "load_conformal",
    "resolve_thresholds",
]
