"""Data for training and inference: datalists, the tolerant dataset, up-front validation.

Public data-set adapters are in :mod:`mimtl.data.adapters` (imported on demand, not here).
"""

from __future__ import annotations

from mimtl.data.datalist import (
    IMAGE_SUFFIXES,
    ON_ERROR,
    check_labels,
    datalist_labels,
    list_images,
    load_datalist,
    subsample,
)
from mimtl.data.dataset import ERROR_KEY, TolerantDataset, error_reason, tolerant_collate
from mimtl.data.masks import check_mask, label_values, load_segmentation_datalist
from mimtl.data.mri_cases import RaiseCaseError, list_mri_cases
from mimtl.data.validate import DataValidationError, check_image_file, validate_datalist

__all__ = [
    "ERROR_KEY",
    "IMAGE_SUFFIXES",
    "ON_ERROR",
    "DataValidationError",
    "RaiseCaseError",
    "TolerantDataset",
    "check_image_file",
    "check_labels",
    "check_mask",
    "datalist_labels",
    "error_reason",
    "label_values",
    "list_images",
    "list_mri_cases",
    "load_datalist",
    "load_segmentation_datalist",
    "subsample",
    "tolerant_collate",
    "validate_datalist",
]
