"""Public medical data sets, in their published on-disk layouts, as MONAI datalists.

Each adapter reads a downloaded data set where it lies and returns a Decathlon-style dict
``{"training": [...], "validation": [...], "test": [...], ...}`` of MONAI datalist items with
absolute paths; :func:`write_datalist` writes it as JSON with paths relative to the JSON file.
The official split is used where the data set has one, else a seeded, deterministic split
(stratified where there are labels, by patient where there are patients). A folder that is not
the expected layout raises :class:`~mimtl.data.validate.DataValidationError` naming what was
expected and where. See ``docs/adapters.md``.

Importing this package also registers :class:`JSRTReader` (raw JSRT ``.IMG``) with MONAI's
``LoadImage``.

Example::

    from mimtl.data.adapters import adapt

    datalist = adapt("chexpert", "/data/chexpert", out="chexpert.json", uncertain="ones")
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimtl.data.adapters._common import SPLITS, seeded_split, write_datalist
from mimtl.data.adapters.brats import BRATS_GRADES, BRATS_MODALITIES, brats_datalist
from mimtl.data.adapters.cephalometric import ISBI2015_LANDMARKS, isbi2015_ceph_datalist, read_landmark_txt
from mimtl.data.adapters.chest_landmarks import SHENZHEN_LANDMARK_NAMES, shenzhen_landmarks_datalist
from mimtl.data.adapters.chexpert import (
    CHEXPERT_COMPETITION_LABELS,
    CHEXPERT_HEADER,
    CHEXPERT_OBSERVATIONS,
    chexpert_datalist,
)
from mimtl.data.adapters.hand_atlas import hand_atlas_datalist
from mimtl.data.adapters.jsrt import (
    SCR_LABELS,
    SCR_STRUCTURES,
    JSRTReader,
    convert_jsrt,
    jsrt_datalist,
    read_jsrt,
    write_scr_label_map,
)
from mimtl.data.adapters.montgomery import (
    MONTGOMERY_LABELS,
    MONTGOMERY_SPACING,
    montgomery_datalist,
    read_montgomery_reading,
)
from mimtl.data.adapters.nih import NIH_LABELS, nih_chestxray14_datalist
from mimtl.data.adapters.pneumonia import pneumonia_datalist
from mimtl.data.adapters.shenzhen import read_clinical_reading, shenzhen_datalist

__all__ = [
    "ADAPTERS",
    "ALIASES",
    "BRATS_GRADES",
    "BRATS_MODALITIES",
    "CHEXPERT_COMPETITION_LABELS",
    "CHEXPERT_HEADER",
    "CHEXPERT_OBSERVATIONS",
    "ISBI2015_LANDMARKS",
    "MONTGOMERY_LABELS",
    "MONTGOMERY_SPACING",
    "NIH_LABELS",
    "SCR_LABELS",
    "SCR_STRUCTURES",
    "SHENZHEN_LANDMARK_NAMES",
    "SPLITS",
    "JSRTReader",
    "adapt",
    "brats_datalist",
    "chexpert_datalist",
    "convert_jsrt",
    "hand_atlas_datalist",
    "isbi2015_ceph_datalist",
    "jsrt_datalist",
    "montgomery_datalist",
    "nih_chestxray14_datalist",
    "pneumonia_datalist",
    "read_clinical_reading",
    "read_jsrt",
    "read_landmark_txt",
    "read_montgomery_reading",
    "seeded_split",
    "shenzhen_datalist",
    "shenzhen_landmarks_datalist",
    "write_datalist",
    "write_scr_label_map",
]

#: Adapter name (as the command line takes it) -> function ``f(root, **options) -> datalist``.
ADAPTERS: dict[str, Callable[..., dict[str, Any]]] = {
    "chexpert": chexpert_datalist,
    "chestxray14": nih_chestxray14_datalist,
    "pneumonia": pneumonia_datalist,
    "isbi2015_ceph": isbi2015_ceph_datalist,
    "hand_atlas": hand_atlas_datalist,
    "shenzhen": shenzhen_datalist,
    "montgomery": montgomery_datalist,
    "shenzhen_landmarks": shenzhen_landmarks_datalist,
    "jsrt": jsrt_datalist,
    "brats": brats_datalist,
}

#: Other names :func:`adapt` accepts.
ALIASES: dict[str, str] = {
    "nih": "chestxray14",
    "nih_chestxray14": "chestxray14",
    "chest_xray_pneumonia": "pneumonia",
    "kermany": "pneumonia",
    "isbi2015": "isbi2015_ceph",
    "cephalometric": "isbi2015_ceph",
    "digital_hand_atlas": "hand_atlas",
    "jsrt_scr": "jsrt",
    "montgomery_county": "montgomery",
    "chest_landmarks": "shenzhen_landmarks",
}


def adapt(name: str, root: str | os.PathLike, out: str | os.PathLike | None = None, **options: Any) -> dict:
    """Run the adapter ``name`` on the data set at ``root``; write the datalist JSON when ``out`` is given.

    Args:
        name: a key of :data:`ADAPTERS` or :data:`ALIASES` (case, spaces, ``-`` and ``_`` do not matter).
        root: the downloaded data set's folder.
        out: the JSON file to write (paths in it relative to its folder), or None.
        options: the adapter's keyword options (see each adapter's docstring).

    Returns:
        The datalist dict (absolute paths).

    Raises:
        ValueError: an unknown adapter name or option (the message lists the valid ones).
        DataValidationError: ``root`` is not the data set's published layout.
    """

    def squeeze(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    names = {squeeze(k): k for k in ADAPTERS} | {squeeze(k): v for k, v in ALIASES.items()}
    key = names.get(squeeze(name))
    if key is None:
        raise ValueError(
            f"no data set adapter {name!r}; available: {', '.join(ADAPTERS)} (also: {', '.join(ALIASES)})."
        )
    function = ADAPTERS[key]
    accepted = [p for p in inspect.signature(function).parameters if p != "root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"adapter {key!r} has no option(s) {', '.join(unknown)}; its options: {', '.join(accepted)}.")
    datalist = function(root, **options)
    if out is not None:
        write_datalist(datalist, Path(out))
    return datalist
