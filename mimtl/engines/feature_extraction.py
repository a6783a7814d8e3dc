"""Extract one feature vector per case and write it with its labels and provenance.

:func:`extract_features` runs a :class:`~mimtl.networks.tumour_features.TumourFeatureExtractor`
over a data loader of dict batches (``image``, ``label`` = tumour mask, a case-id key and a grade key)
in eval mode without gradients, and writes

* ``<out>.npz``: ``features`` (n, d) float32, ``label`` (n,), ``case_ids``, ``feature_names`` (the
  table :func:`mimtl.data.feature_table.load_feature_table` reads, ``label="label"``);
* ``<out>.json``: provenance: the SHA-256 of the network's weights (:func:`state_dict_sha256`), the
  case ids in order, the pooling, the cases whose empty mask fell back to global pooling, the
  config given and the mimtl/MONAI/torch versions.

Both are written atomically; the same weights and data give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimtl.networks.tumour_features import TumourFeatureExtractor

__all__ = ["extract_features", "state_dict_sha256"]


def state_dict_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over the module's state dict (keys in order, each tensor's dtype, shape and bytes)."""
    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _ids(value: Any, n: int) -> list:
    if isinstance(value, torch.Tensor):
        return value.view(-1).tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value] * n


def extract_features(
    extractor: TumourFeatureExtractor,
    loader: Iterable[Mapping[str, Any]],
    output: str | os.PathLike,
    image_key: str = "image",
    mask_key: str = "label",
    case_key: str = "name",
    grade_key: str = "grade_label",
    device: str | torch.device = "cpu",
    config: Mapping | None = None,
    progress: bool = True,
) -> Path:
    """Features of every case of ``loader`` to ``<output>.npz`` + provenance ``<output>.json``; returns the npz path."""
    from tqdm.auto import tqdm

    from mimtl import __version__
    from mimtl.handlers._common import save_atomic, write_atomic

    device = torch.device(device)
    extractor = extractor.to(device).eval()
    extractor.empty_cases = []
    feats, labels, ids = [], [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc="features", unit="batch", disable=not progress):
            image = batch[image_key].to(device)
            n = image.shape[0]
            case_ids = _ids(batch[case_key], n) if case_key in batch else list(range(len(ids), len(ids) + n))
            mask = (
                batch[mask_key].to(device)
                if extractor.pooling != "global" and extractor.mask_source == "label"
                else None
            )
            feats.append(extractor(image, mask, case_ids).float().cpu().numpy())
            labels += _ids(batch[grade_key], n)
            ids += case_ids
    features = np.concatenate(feats).astype(np.float32)
    out = Path(output)
    npz = out.with_suffix(".npz")

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            buffer = io.BytesIO()
            np.savez(
                buffer,
                features=features,
                label=np.asarray(labels),
                case_ids=np.asarray([str(i) for i in ids]),
                feature_names=np.asarray(extractor.feature_names()),
            )
            f.write(buffer.getvalue())

    save_atomic(npz, save)
    import monai

    provenance = {
        "features": npz.name,
        "n_cases": len(ids),
        "n_features": int(features.shape[1]),
        "case_ids": [str(i) for i in ids],
        "model_sha256": state_dict_sha256(extractor.network),
        "pooling": extractor.pooling,
        "mask_source": extractor.mask_source,
        "empty_mask_fallback_cases": [str(c) for c in extractor.empty_cases],
        "config": dict(config or {}),
        "versions": {"mimtl": __version__, "monai": monai.__version__, "torch": torch.__version__},
    }
    write_atomic(out.with_suffix(".json"), json.dumps(provenance, indent=1, default=str) + "\n")
    return npz
