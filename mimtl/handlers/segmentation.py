"""Per-film measurements of a segmentation run: structure areas (px, mm^2), cardiothoracic ratio, overlays.

:class:`SegmentationWriter` reads, for every film of an inference run, the binary masks the
postprocessing gave in the **film's own geometry** (after ``Invertd``) and writes one row per film
to ``segmentation.csv`` (and a summary to ``segmentation.json``: counts, failed files, flagged films):

* ``<structure>_px`` and, where the pixel spacing is known, ``<structure>_mm2`` for every output channel;
* ``ctr``, the cardiothoracic ratio, when a heart and lungs are segmented: the heart's largest
  horizontal extent over the thorax's largest inner width (the widest row across both lungs);
* ``status`` (``ok`` or ``failed: <reason>`` for a file :class:`~mimtl.data.TolerantDataset` could
  not use), and the overlay PNG of the film with each structure's outline coloured;
* ``masks/<film>_mask.png`` (channel k = structure k, 255 inside) and, for a NIfTI film, its masks
  as NIfTI too, with the film's affine;
* with a :class:`~mimtl.handlers.DomainCheck` before it, ``in_domain``, ``domain_score`` and
  ``domain_reason`` after ``status``; a flagged film says so in red on its overlay, and under
  ``on_out_of_domain: skip`` its row keeps the verdict with status ``withheld: out of domain`` and
  no areas, masks or overlay.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mimtl.handlers._common import (
    OVERLAY_GRAYS,
    OVERLAY_PNG,
    WITHHELD,
    OutputWriter,
    font,
    overlay_canvas,
    save_atomic,
    to_uint8,
)

__all__ = ["SegmentationWriter", "cardiothoracic_ratio", "horizontal_extent"]

_COLOURS = [(230, 60, 60), (60, 140, 230), (250, 200, 40), (80, 200, 120), (200, 90, 220), (240, 140, 60)]
_ALERT = (255, 40, 40)  # the out-of-domain line


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def horizontal_extent(mask: np.ndarray, axis: int = 1) -> int:
    """Pixels between the first and last foreground column (``axis`` = the horizontal one), 0 when empty."""
    cols = np.flatnonzero(np.asarray(mask).any(axis=1 - axis))
    return int(cols[-1] - cols[0] + 1) if cols.size else 0


def cardiothoracic_ratio(heart: np.ndarray, lungs: np.ndarray) -> float:
    """Heart width over the widest row across the lungs (NaN when either is empty).

    ``heart`` and ``lungs`` are ``(rows, columns)`` binary masks of a frontal film; the thorax width is
    measured per row, from the first to the last lung pixel, and its maximum taken.
    """
    heart, lungs = np.asarray(heart, bool), np.asarray(lungs, bool)
    widths = [horizontal_extent(row[None], axis=1) for row in lungs if row.any()]
    thorax = max(widths, default=0)
    width = horizontal_extent(heart, axis=1)
    return width / thorax if thorax and width else float("nan")


class SegmentationWriter(OutputWriter):
    """``segmentation.csv`` (areas, CTR, status per film) and overlay PNGs of an inference run.

    Args:
        output_dir: where the files go.
        structures: the name of each output channel (``left_lung``, ``right_lung``, ``heart``).
        lungs: the structures that make up the thorax for the CTR (default: names containing "lung").
        heart: the structure measured against it (default: "heart" when among ``structures``).
        pred_key: the output key of the masks (``(K, H, W)`` binary, in the film's geometry).
        overlay: write ``overlays/<film>_overlay.png``.
        masks: write ``masks/<film>_mask.png`` (uint8, 255 inside; MONAI's ``SaveImage``).
        nifti: for a NIfTI input, also write ``masks/<film>_mask.nii.gz`` in its geometry (affine kept).
        image_key: the batch key of the image (its metadata names the file and gives the spacing).
        error_key: :class:`~mimtl.data.TolerantDataset`'s failure key.
        overlay_key: the batch key of a smaller copy of the film to draw the overlay on (the masks
            are scaled to it); None, or a batch without it: the film is read again from its file.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        structures: Sequence[str],
        lungs: Sequence[str] | None = None,
        heart: str | None = None,
        pred_key: str = "pred",
        overlay: bool = True,
        masks: bool = True,
        nifti: bool = True,
        image_key: str = "image",
        error_key: str = "error",
        overlay_key: str | None = None,
    ) -> None:
        super().__init__(output_dir, image_key=image_key, error_key=error_key)
        self.overlay_key = overlay_key
        self.structures = [f"{s}" for s in structures]
        self.lungs = [s for s in (lungs if lungs is not None else self.structures) if "lung" in s or lungs is not None]
        self.heart = heart if heart is not None else ("heart" if "heart" in self.structures else None)
        self.pred_key = pred_key
        self.overlay = overlay
        self.masks = masks
        self.nifti = nifti
        self.rows: list[dict[str, Any]] = []

    def reset(self, engine: Any = None) -> None:
        super().reset(engine)
        self.rows = []

    def __call__(self, engine: Any) -> None:
        for item, out, name, error in self.items(engine):
            domain = self.domain_of(item, out)
            row: dict[str, Any] = {"file": name, **self.domain_cells(domain)}
            if error:
                row["status"] = self.failed_status(error)
                self.rows.append(row)
                continue
            if domain.get("withheld"):
                row["status"] = WITHHELD
                self.rows.append(row)
                continue
            masks = _numpy(out[self.pred_key]).astype(bool)
            if masks.ndim == 4:  # (K, H, W, 1): a 2D film stored as 3D
                masks = masks[..., 0]
            row.update(self.measure(masks, self._spacing(item, out)))
            row["status"] = "ok"
            if self.masks:
                self._save_masks(out[self.pred_key], ".png")
            if self.nifti and name.lower().endswith((".nii", ".nii.gz")):
                self._save_masks(out[self.pred_key], ".nii.gz")
            if self.overlay:
                reason = domain.get("domain_reason", "") if domain.get("in_domain") == "false" else ""
                copy = item.get(self.overlay_key, out.get(self.overlay_key)) if self.overlay_key else None
                self._draw(name, masks, reason, copy)
            self.rows.append(row)

    def _spacing(self, item: Mapping, out: Mapping) -> np.ndarray | None:
        for source in (item, out):
            meta = getattr(source.get(self.image_key), "meta", None) or {}
            if meta.get("spacing_known") and meta.get("spacing") is not None:
                spacing = _numpy(meta["spacing"]).astype(float).reshape(-1)[:2]
                if spacing.size == 2 and np.all(np.isfinite(spacing)) and np.all(spacing > 0):
                    return spacing
        return None

    def measure(self, masks: np.ndarray, spacing: np.ndarray | None) -> dict[str, Any]:
        """The cells of one film: areas (px, mm^2 when ``spacing`` is known) and the CTR.

        ``masks`` is ``(K, x, y)``, MONAI's reading order of a 2D file.
        """
        masks = masks.transpose(0, 2, 1)  # MONAI reads (x, y): to rows = y, columns = x, as the film is seen
        cells: dict[str, Any] = {}
        pixel_mm2 = float(np.prod(spacing)) if spacing is not None else None
        for k, name in enumerate(self.structures):
            area = int(masks[k].sum())
            cells[f"{name}_px"] = area
            cells[f"{name}_mm2"] = f"{area * pixel_mm2:.1f}" if pixel_mm2 is not None else ""
        if self.heart in self.structures and self.lungs:
            lungs = np.any([masks[self.structures.index(s)] for s in self.lungs], axis=0)
            ctr = cardiothoracic_ratio(masks[self.structures.index(self.heart)], lungs)
            cells["ctr"] = "" if np.isnan(ctr) else f"{ctr:.3f}"
        return cells

    def _film(self, name: str, copy: Any) -> np.ndarray:
        """The gray film ``(x, y)`` to draw on: the batch's copy under ``overlay_key`` when there is
        one (the file is then decoded once), else the file read again."""
        if copy is not None:
            film = _numpy(copy).astype(np.float32)
            if film.ndim == 3 and film.shape[0] == 1:
                return film[0]
        from monai.transforms import LoadImage

        from mimtl.io import MedicalImageReader

        film = np.asarray(LoadImage(reader=MedicalImageReader, image_only=True)(name), dtype=np.float32)
        return film[..., 0] if film.ndim == 3 else film

    def _save_masks(self, pred: Any, ext: str) -> None:
        """``masks/<film>_mask<ext>`` in the film's geometry (the masks after ``Invertd`` carry its
        metadata): ``.png`` channel k = structure k, 255 inside; ``.nii.gz`` 0/1 with the film's affine."""
        from monai.transforms import SaveImage

        SaveImage(
            output_dir=self.output_dir / "masks",
            output_postfix="mask",
            output_ext=ext,
            output_dtype=np.uint8,
            scale=255 if ext == ".png" else None,
            separate_folder=False,
            print_log=False,
            resample=False,
        )(pred)

    def _draw(self, name: str, masks: np.ndarray, out_of_domain: str = "", copy: Any = None) -> None:
        film = self._film(name, copy)
        if film.shape != masks.shape[1:]:  # drawn on the batch's smaller copy: the masks follow it
            scaled = torch.nn.functional.interpolate(
                torch.from_numpy(masks[None].astype(np.float32)), size=film.shape, mode="area"
            )
            masks = scaled[0].numpy() >= 0.5
        # arrays are (x, y) in MONAI's reading order: transposed to rows = y for the picture
        gray = np.ascontiguousarray(to_uint8(film).T)
        edges = []
        for k in range(masks.shape[0]):
            m = masks[k].T
            edges.append(m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)))
        colours = [_COLOURS[k % len(_COLOURS)] for k in range(len(edges))]
        picture = overlay_canvas(gray, [*colours, _ALERT], edges)
        if out_of_domain:  # the domain check's verdict, in red on the film
            from PIL import ImageDraw

            size = max(10, gray.shape[1] // 45)
            ImageDraw.Draw(picture).text(
                (4, 4), f"OUT OF DOMAIN: {out_of_domain}", fill=OVERLAY_GRAYS + len(colours), font=font(size)
            )
        path = self.item_path(name, "_overlay.png", folder="overlays")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(path, lambda tmp: picture.save(tmp, **OVERLAY_PNG))

    def write(self, engine: Any = None) -> Any:
        columns = ["file", "status", *self.domain_columns(self.rows)]
        columns += ["ctr"] if any("ctr" in r for r in self.rows) else []
        columns += [f"{s}_{u}" for s in self.structures for u in ("px", "mm2")]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.write_csv(self.table_path("segmentation", ".csv"), self.rows, columns)
        failed = self.failures(self.rows)
        summary = {
            "csv": path.name,
            "n_images": len(self.rows),
            "n_ok": sum(r.get("status") == "ok" for r in self.rows),
            "n_failed": len(failed),
            "failed": failed,
            "structures": self.structures,
            **self.domain_summary(self.rows),
        }
        self.write_json(path.with_suffix(".json"), summary)
        return path
