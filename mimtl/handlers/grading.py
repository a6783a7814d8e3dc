"""Per-case results of tumour grading inference: grade, probabilities, volume, mask and overlay.

:class:`TumourGradeWriter` reads, for every case of a MONAI ``SupervisedEvaluator`` whose network is a
:class:`~mimtl.networks.tumour_grader.TumourGrader`, the output item's ``pred`` =
``(seg_logits (C, D, H, W), grade_probs (K,))`` (``decollate: true``, no postprocessing) and writes

* one row of ``grades.csv``: ``file``, ``status`` (``ok`` or ``failed: <reason>`` for a case
  :class:`~mimtl.data.TolerantDataset` could not use), ``grade``, ``probability`` (of that grade),
  ``p_<class>`` per grade, ``tumour_ml`` (predicted tumour volume from the image's voxel size),
  ``mask``, ``overlay`` and ``note`` (e.g. no tumour predicted: the grade then comes from the whole
  volume's features); the CSV is rewritten atomically after every iteration and complete at ``COMPLETED``;
* ``masks/<case>_seg.nii.gz``: the label map in the network's grid, with the (transformed) image's
  affine and the channel indices mapped back to ``label_values`` (BraTS 0, 1, 2, 4);
* ``overlays/<case>.png``: the axial slice with the largest predicted tumour area of the
  ``overlay_channel`` sequence (T1ce by default) in gray, each tumour class in a colour, and the
  grade with its probability written on it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from mimtl.handlers._common import OutputWriter, font, save_atomic, to_uint8

__all__ = ["GRADE_COLUMNS", "TumourGradeWriter"]

#: The fixed columns of ``grades.csv`` (``p_<class>`` columns follow ``probability``).
GRADE_COLUMNS = ("file", "status", "grade", "probability", "tumour_ml", "mask", "overlay", "note")

# label 1 (necrosis / non-enhancing), 2 (oedema), 4 (enhancing), then more
_COLOURS = [(60, 140, 230), (250, 200, 40), (230, 60, 60), (80, 200, 120), (200, 90, 220), (240, 140, 60)]
_SEQUENCE_SUFFIX = re.compile(r"[_\-](flair|t1|t1ce|t1c|t1n|t2|t2f|t2w|seg)$", re.IGNORECASE)


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


def _affine(item: Mapping, out: Mapping, key: str, pred: Any) -> np.ndarray | None:
    for value in (item.get(key), out.get(key), pred):
        affine = getattr(value, "affine", None)
        if affine is not None:
            affine = _numpy(affine).astype(np.float64)
            if affine.shape == (4, 4) and np.all(np.isfinite(affine)):
                return affine
    return None


class TumourGradeWriter(OutputWriter):
    """``grades.csv``, NIfTI masks and overlay PNGs of a tumour grading run (see the module doc).

    Args:
        output_dir: where the files go.
        class_names: the grade of each column of ``grade_probs`` (e.g. ``[LGG, HGG]``; a grade head's
            ``info["class_names"]``).
        image_key: the batch key of the image (its MetaTensor gives the affine, the file and the overlay).
        save_masks: write ``masks/<case>_seg.nii.gz``.
        overlays: write ``overlays/<case>.png``.
        label_values: the label value of each segmentation channel (channel 0 = background).
        overlay_channel: the image channel drawn in gray (2 = T1ce in the order flair, t1, t1ce, t2).
        pred_key: the output key of ``(seg_logits, grade_probs)``.
        error_key: :class:`~mimtl.data.TolerantDataset`'s failure key.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[Any],
        image_key: str = "image",
        save_masks: bool = True,
        overlays: bool = True,
        label_values: Sequence[int] = (0, 1, 2, 4),
        overlay_channel: int = 2,
        pred_key: str = "pred",
        error_key: str = "error",
    ) -> None:
        super().__init__(output_dir, image_key=image_key, error_key=error_key)
        self.class_names = [f"{c}" for c in class_names]
        if len(self.class_names) < 2:
            raise ValueError(f"TumourGradeWriter: class_names needs 2 or more grades, got {self.class_names}")
        self.save_masks = bool(save_masks)
        self.overlays = bool(overlays)
        self.label_values = np.asarray([int(v) for v in label_values])
        self.overlay_channel = int(overlay_channel)
        self.pred_key = pred_key
        self.rows: list[dict[str, Any]] = []

    @property
    def columns(self) -> list[str]:
        fixed = list(GRADE_COLUMNS)
        at = fixed.index("probability") + 1
        return fixed[:at] + [f"p_{c}" for c in self.class_names] + fixed[at:]

    def reset(self, engine: Any = None) -> None:
        super().reset(engine)
        self.rows = []

    @staticmethod
    def case_name(item: Mapping, file: str) -> str:
        """The case id: the listing's ``name``, else the file's stem without a sequence suffix."""
        name = item.get("name")
        if isinstance(name, str) and name:
            return name
        base = PurePath(file).name if file else "case"
        stem = base[: -len(".nii.gz")] if base.lower().endswith(".nii.gz") else PurePath(base).stem
        return _SEQUENCE_SUFFIX.sub("", stem) or "case"

    def __call__(self, engine: Any) -> None:
        for item, out, filename, error in self.items(engine):
            listed = item.get("file")
            file = listed if isinstance(listed, str) and listed else filename
            row: dict[str, Any] = {"file": file}
            if error:
                row["status"] = self.failed_status(error)
                self.rows.append(row)
                continue
            try:
                row.update(self.case(item, out, self.case_name(item, file)))
                row["status"] = "ok"
            except (ValueError, IndexError, TypeError) as e:  # a malformed prediction: this row fails, not the run
                row = {"file": file, "status": self.failed_status(f"{type(e).__name__}: {e}")}
            self.rows.append(row)
        self.write()

    def case(self, item: Mapping, out: Mapping, name: str) -> dict[str, Any]:
        """The cells of one case (writes its mask and overlay)."""
        pred = out.get(self.pred_key)
        if not isinstance(pred, (list, tuple)) or len(pred) != 2:
            raise ValueError(f"{self.pred_key!r} must be (seg_logits, grade_probs), got {type(pred).__name__}")
        seg, probs = pred
        probs = _numpy(probs).astype(np.float64).reshape(-1)
        if probs.size != len(self.class_names):
            raise ValueError(f"{probs.size} grade probabilities for {len(self.class_names)} class names")
        logits = _numpy(seg)
        if logits.ndim != 4:
            raise ValueError(f"seg_logits must be (C, D, H, W), got shape {logits.shape}")
        if logits.shape[0] > len(self.label_values):
            raise ValueError(f"{logits.shape[0]} segmentation channels for label_values {self.label_values.tolist()}")
        index = logits.argmax(axis=0)
        labels = self.label_values[index].astype(np.uint8)
        k = int(probs.argmax())
        cells: dict[str, Any] = {
            "grade": self.class_names[k],
            "probability": f"{probs[k]:.4f}",
            **{f"p_{c}": f"{p:.4f}" for c, p in zip(self.class_names, probs)},
        }
        affine = _affine(item, out, self.image_key, seg)
        tumour = index > 0
        if affine is not None:
            voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
            cells["tumour_ml"] = f"{tumour.sum() * voxel_mm3 / 1000.0:.3f}"
        if not tumour.any():
            cells["note"] = "no tumour predicted: graded from the whole volume's features"
        stem = self.item_path(f"{name}.nii.gz", "").name
        if self.save_masks:
            path = self.output_dir / "masks" / f"{stem}_seg.nii.gz"
            self._save_mask(path, labels, affine)
            cells["mask"] = str(path)
        if self.overlays:
            image = item.get(self.image_key, out.get(self.image_key))
            if image is not None:
                path = self.output_dir / "overlays" / f"{stem}.png"
                self._draw(path, _numpy(image), index, f"{cells['grade']} {probs[k]:.2f}")
                cells["overlay"] = str(path)
        return cells

    @staticmethod
    def _save_mask(path: Path, labels: np.ndarray, affine: np.ndarray | None) -> None:
        import gzip

        import nibabel as nib

        image = nib.Nifti1Image(labels, affine if affine is not None else np.eye(4))
        image.header.set_data_dtype(np.uint8)
        image.set_qform(image.affine, code=1)
        image.set_sform(image.affine, code=1)
        data = gzip.compress(image.to_bytes(), mtime=0)  # the temporary name has no .nii.gz for nibabel
        save_atomic(path, lambda tmp: Path(tmp).write_bytes(data))

    def _draw(self, path: Path, image: np.ndarray, index: np.ndarray, text: str) -> None:
        from PIL import Image, ImageDraw

        if image.ndim == 4:
            channel = min(max(self.overlay_channel, 0), image.shape[0] - 1)
            volume = image[channel]
        else:
            volume = image
        if volume.shape != index.shape:
            raise ValueError(f"image {volume.shape} and segmentation {index.shape} differ in shape")
        # axial = the last axis (MONAI reads x, y, z); the slice with the most tumour voxels
        area = (index > 0).sum(axis=(0, 1))
        z = int(area.argmax()) if area.any() else volume.shape[2] // 2
        gray = to_uint8(volume[:, :, z].astype(np.float32))
        rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
        for c in range(1, int(index.max()) + 1):
            m = index[:, :, z] == c
            rgb[m] = 0.45 * rgb[m] + 0.55 * np.asarray(_COLOURS[(c - 1) % len(_COLOURS)], np.float32)
        rgb = np.rot90(rgb.astype(np.uint8))  # rows = y, anterior up
        picture = Image.fromarray(np.ascontiguousarray(rgb))
        scale = max(1, int(np.ceil(256 / max(1, min(picture.size)))))
        if scale > 1:
            picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
        draw = ImageDraw.Draw(picture)
        size = max(12, picture.height // 20)
        draw.text((6, 4), text, fill=(255, 255, 255), font=font(size), stroke_width=2, stroke_fill=(0, 0, 0))
        save_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))

    def write(self, engine: Any = None) -> Path:
        """``grades.csv`` with every row so far (atomic)."""
        return self.write_csv(self.table_path("grades", ".csv"), self.rows, self.columns)
