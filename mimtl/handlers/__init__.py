"""Ignite handlers for mimtl's engines (attach them via a workflow's ``handlers``/``val_handlers``)."""

from mimtl.handlers._common import OutputWriteError
from mimtl.handlers.checkpoint import AtomicCheckpointSaver
from mimtl.handlers.classification import ClassificationWriter, GradCAMWriter, resolve_thresholds
from mimtl.handlers.domain import DomainCheck
from mimtl.handlers.finetune import StagedFineTuning
from mimtl.handlers.grading import TumourGradeWriter
from mimtl.handlers.landmarks import LandmarkReport, LandmarkWriter, load_conformal
from mimtl.handlers.loss_curves import LossCurveWriter
from mimtl.handlers.resume import ResumableCheckpoint, ResumeError, TrainingInterrupted
from mimtl.handlers.segmentation import SegmentationWriter, cardiothoracic_ratio
from mimtl.handlers.tile_ae import ReconstructionWriter

__all__ = [
    "AtomicCheckpointSaver",
    "ClassificationWriter",
    "DomainCheck",
    "GradCAMWriter",
    "LandmarkReport",
    "LandmarkWriter",
    "LossCurveWriter",
    "OutputWriteError",
    "ReconstructionWriter",
    "ResumableCheckpoint",
    "ResumeError",
    "SegmentationWriter",
    "StagedFineTuning",
    "TrainingInterrupted",
    "TumourGradeWriter",
    "cardiothoracic_ratio",
    "load_conformal",
    "resolve_thresholds",
]
