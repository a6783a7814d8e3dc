"""Ignite handlers that turn a landmark evaluator's output into files a user can read.

Both read the per-item outputs of :class:`~mimtl.transforms.DecodeLandmarksd` (points on the
original film in pixels and in mm, confidence, unit) from ``engine.state.output``.

* :class:`LandmarkReport` (evaluate / calibrate): radial errors per image and landmark as CSV,
  MRE and SDR per landmark and overall as CSV + JSON, the coverage of the conformal radii, and,
  when calibrating, the radii themselves (split conformal prediction on this data set).
* :class:`LandmarkWriter` (inference): a CSV and a JSON of the points (px and mm, confidence,
  conformal radius) per image and an overlay PNG with numbered points and their radius circles.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import min_version, optional_import

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
from mimtl.metrics.conformal import conformal_radius, empirical_coverage
from mimtl.metrics.landmarks import landmark_summary, radial_errors

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["LandmarkReport", "LandmarkWriter", "load_conformal"]

logger = logging.getLogger(__name__)

# overlay palette indices of the marker colours (after the film's grays, see overlay_canvas)
_MARKER_COLOURS = [(255, 220, 0), (255, 40, 40), (80, 255, 80)]
_RADIUS, _POINT, _LABEL = OVERLAY_GRAYS, OVERLAY_GRAYS + 1, OVERLAY_GRAYS + 2  # yellow, red, green


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _unit(value: Any) -> str:
    return value if isinstance(value, str) else f"{value[0] if isinstance(value, (list, tuple)) else value}"


def _fmt(value: float, digits: int = 3) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def load_conformal(path: str | os.PathLike | None, landmark_names: Sequence[str]) -> dict[str, Any] | None:
    """Read conformal radii written by :class:`LandmarkReport` (``calibrate=True``); None if no file.

    Raises:
        ValueError: the file names other landmarks than the model's.
    """
    if path is None or not Path(path).is_file():
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if len(data.get("radius", [])) != len(landmark_names):
        raise ValueError(
            f"{path}: {len(data.get('radius', []))} radii for {len(landmark_names)} landmarks; "
            "recalibrate with the calibrate workflow."
        )
    data["radius"] = [float("inf") if r is None else float(r) for r in data["radius"]]
    return data


class _LandmarkOutput(OutputWriter):
    """Collects the decoded landmarks of every item of a run (``self.records``), one dict each."""

    def __init__(
        self, output_dir: str | os.PathLike, landmark_names: Sequence[str], image_key: str, error_key: str
    ) -> None:
        super().__init__(output_dir, image_key=image_key, error_key=error_key)
        self.landmark_names = [f"{n}" for n in landmark_names]
        self.records: list[dict[str, Any]] = []

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the items of the last run."""
        super().reset(engine)
        self.records = []

    def __call__(self, engine: Engine) -> None:
        """Collect the items of one iteration."""
        self.collect(engine)

    def collect(self, engine: Engine) -> list[tuple[dict[str, Any], Mapping, Mapping]]:
        """Add the records of one iteration; return each new record with its batch and output item."""
        new = []
        for item, out, name, error in self.items(engine):
            record: dict[str, Any] = {"file": name, "error": error, "domain": self.domain_of(item, out)}
            if not error:
                image = out.get(self.image_key, item.get(self.image_key))
                meta = getattr(image, "meta", {}) or {}
                record.update(
                    pred_points=_numpy(out["pred_points"]),
                    pred_coords=_numpy(out["pred_coords"]),
                    confidence=_numpy(out["pred_confidence"]),
                    unit=_unit(out.get("unit", "px")),
                    spacing=_numpy(out.get("spacing", [math.nan, math.nan])),
                    spacing_source=f"{meta.get('spacing_source', '')}",
                )
                if "label_points" in out:
                    record.update(label_points=_numpy(out["label_points"]), label_coords=_numpy(out["label_coords"]))
            self.records.append(record)
            new.append((record, item, out))
        return new


class LandmarkReport(_LandmarkOutput):
    """Radial errors, MRE / SDR and conformal coverage of a labelled set, written at completion.

    Files in ``output_dir`` (atomic writes; under ``torch.distributed`` each rank its own):

    * ``landmark_errors.csv``: one row per image and landmark: predicted and true pixel
      coordinates on the original film, radial error in px and (when the spacing is known) mm,
      confidence, and whether the truth lies inside the conformal radius;
    * ``landmark_metrics.csv``: MRE, its sd and SDR at each threshold per landmark and ``overall``;
    * ``landmark_summary.json``: the same and the coverage of the conformal radii.

    Errors are in mm when every image has a known pixel spacing, else in px (said in ``unit``).
    Missing ground-truth landmarks are counted (``n_missing``), never scored.

    With ``calibrate=True`` it also computes per-landmark split-conformal radii at ``coverage``
    from these errors and writes them to ``conformal_file`` (run it on the validation split, then
    evaluate on test to see the coverage hold). Otherwise an existing ``conformal_file`` is read
    and its coverage on this set reported.

    Args:
        output_dir: folder of the CSV/JSON files.
        landmark_names: landmark names in model output order.
        thresholds: SDR radii, in the unit of the errors.
        conformal_file: JSON of conformal radii (read, or written when calibrating); None: none.
        calibrate: compute and write the radii.
        coverage: share of true points the radii should hold (calibration).
        image_key: image key (its meta names the file).
        error_key: key of :class:`~mimtl.data.TolerantDataset`'s failure reason.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        landmark_names: Sequence[str],
        thresholds: Sequence[float] = (2.0, 2.5, 3.0, 4.0),
        conformal_file: str | os.PathLike | None = None,
        calibrate: bool = False,
        coverage: float = 0.9,
        image_key: str = "image",
        error_key: str = "error",
    ) -> None:
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}.")
        super().__init__(output_dir, landmark_names, image_key, error_key)
        self.thresholds = [float(t) for t in thresholds]
        self.conformal_file = None if conformal_file is None else Path(conformal_file)
        self.calibrate = calibrate
        self.coverage = float(coverage)
        self.last_summary: dict[str, Any] = {}

    def _errors(self, items: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, str]:
        pred = torch.as_tensor(np.stack([it["pred_points"] for it in items]))
        true = torch.as_tensor(np.stack([it["label_points"] for it in items]))
        px = radial_errors(pred, true, None).numpy()
        if all(it["unit"] == "mm" for it in items):
            pred = torch.as_tensor(np.stack([it["pred_coords"] for it in items]))
            true = torch.as_tensor(np.stack([it["label_coords"] for it in items]))
            return px, radial_errors(pred, true, None).numpy(), "mm"
        return px, px, "px"

    def write(self, engine: Engine | None = None) -> dict[str, Any]:
        """Compute the metrics, write the files, return the summary."""
        items = [it for it in self.records if not it["error"] and "label_points" in it]
        failed = [{"file": it["file"], "reason": it["error"]} for it in self.records if it["error"]]
        if not items:
            raise ValueError("LandmarkReport: no labelled predictions to score (is 'label' in the evaluator output?).")
        n_landmarks = items[0]["pred_points"].shape[0]
        if n_landmarks != len(self.landmark_names):
            raise ValueError(f"the model predicts {n_landmarks} landmarks but {len(self.landmark_names)} are named.")
        px, errors, unit = self._errors(items)
        if unit == "px" and any(it["unit"] == "mm" for it in items):
            logger.warning("pixel spacing unknown for some images: errors reported in px for all of them.")
        summary = landmark_summary(torch.as_tensor(errors), self.thresholds, self.landmark_names, unit=unit)
        summary["n_images"] = len(items)
        summary["failed"] = failed
        if unit == "mm":
            summary["mre_px"] = float(np.nanmean(np.where(np.isfinite(px), px, np.nan)))
        conformal = None
        if self.calibrate:
            radius = np.asarray(conformal_radius(errors, self.coverage), dtype=np.float64)
            conformal = {
                "coverage": self.coverage,
                "unit": unit,
                "radius": [None if not math.isfinite(r) else round(float(r), 4) for r in radius],
                "landmark_names": self.landmark_names,
                "n_calibration": len(items),
                "method": "split conformal, per landmark, score = radial error",
            }
            if self.conformal_file is not None:
                self.write_json(self.conformal_file, conformal)
                logger.info(
                    "conformal radii (%.0f %% coverage, %s) written to %s",
                    100 * self.coverage,
                    unit,
                    self.conformal_file,
                )
            summary["conformal"] = conformal
            conformal = {**conformal, "radius": [float(r) for r in radius]}
        elif self.conformal_file is not None:
            conformal = load_conformal(self.conformal_file, self.landmark_names)
        if conformal is not None and conformal["unit"] == unit:
            radius = np.asarray(conformal["radius"], dtype=np.float64)
            summary["conformal_coverage"] = {
                "target": conformal["coverage"],
                "unit": unit,
                "radius": [None if not math.isfinite(r) else r for r in radius.tolist()],
                **empirical_coverage(errors, radius),
            }
        elif conformal is not None:
            logger.warning("conformal radii are in %s, errors in %s: coverage not reported.", conformal["unit"], unit)
        self._write_files(items, px, errors, unit, summary, conformal)
        self.last_summary = summary
        overall = summary["overall"]
        logger.info(
            "landmarks: MRE %.3f %s (sd %.3f) on %d images; %s",
            overall["mre"],
            unit,
            overall["mre_sd"],
            len(items),
            ", ".join(f"SDR@{t:g} {overall[f'sdr_{t:g}']:.3f}" for t in self.thresholds),
        )
        return summary

    def _write_files(
        self, items: list[dict], px: np.ndarray, errors: np.ndarray, unit: str, summary: dict, conformal: dict | None
    ) -> None:
        radius = None if conformal is None or conformal["unit"] != unit else conformal["radius"]
        rows = []
        for it, e_px, e in zip(items, px, errors, strict=True):
            for k, name in enumerate(self.landmark_names):
                p, t = it["pred_points"][k], it["label_points"][k]
                rows.append(
                    {
                        "file": it["file"],
                        "landmark": k,
                        "name": name,
                        "pred_x": _fmt(p[0]),
                        "pred_y": _fmt(p[1]),
                        "true_x": _fmt(t[0]),
                        "true_y": _fmt(t[1]),
                        "error_px": _fmt(e_px[k]),
                        f"error_{unit}": _fmt(e[k]) if unit == "mm" else _fmt(e_px[k]),
                        "confidence": _fmt(float(it["confidence"][k])),
                        "inside_radius": "" if radius is None or not math.isfinite(e[k]) else int(e[k] <= radius[k]),
                    }
                )
        columns = ["file", "landmark", "name", "pred_x", "pred_y", "true_x", "true_y", "error_px"]
        columns += (["error_mm"] if unit == "mm" else []) + ["confidence", "inside_radius"]
        self.write_csv(self.table_path("landmark_errors", ".csv"), rows, columns)
        metric_cols = ["landmark", "mre", "sd", *(f"sdr_{t:g}" for t in self.thresholds), "n"]
        per = summary["per_landmark"]
        metric_rows = [{"landmark": p["name"], **{c: p.get(c, "") for c in metric_cols[1:]}} for p in per]
        overall = summary["overall"]
        metric_rows.append(
            {
                "landmark": "overall",
                "mre": overall["mre"],
                "sd": overall["mre_sd"],
                **{f"sdr_{t:g}": overall[f"sdr_{t:g}"] for t in self.thresholds},
                "n": overall["n_points"],
            }
        )
        self.write_csv(self.table_path("landmark_metrics", ".csv"), metric_rows, metric_cols)
        self.write_json(self.table_path("landmark_summary", ".json"), summary)


class LandmarkWriter(_LandmarkOutput):
    """Write predicted landmarks for a pipeline: CSV + JSON of points, and an overlay PNG per image.

    ``landmarks.csv`` has one row per image and landmark: ``file, landmark, name, x_px, y_px``
    (original file, array index order: x = column for 2D films), ``x_mm, y_mm`` (empty when the
    pixel spacing is unknown), ``unit``, ``spacing_source``, ``confidence``, ``radius`` and
    ``radius_unit`` (the conformal radius, from ``conformal_file``), ``status``. Files that could
    not be read are listed with the reason. ``landmarks.json`` holds the same per image. With
    ``overlay=True``, ``overlays/<name>_landmarks.png`` shows the film with the numbered points
    and, where known, the radius circle in which the true point lies with the calibrated coverage.

    The overlay is drawn on a small copy of the film that travels in the batch under
    ``overlay_key`` (the preprocessing keeps it before the network's resize; the file is then
    decoded once), e.g.::

        - {_target_: CopyItemsd, keys: image, names: overlay_image}
        - {_target_: Resized, keys: overlay_image, spatial_size: [512, 512], mode: area}

    The copy may be squeezed into any fixed size (a fixed one lets films of every aspect ratio,
    and :class:`~mimtl.data.TolerantDataset`'s placeholders, batch together): its meta
    ``spatial_shape``, the film's size in the file, restores the proportions, and the points,
    which are in pixels of the file, are scaled by the ratio of sizes. Without the copy (no
    ``overlay_key``, or not in the batch), a copy smaller than the overlay, or one whose meta lost
    ``spatial_shape`` (MONAI batches only the meta keys all items share, so a batch with a failed
    file has none), the film is read again from its file.

    Args:
        output_dir: output folder.
        landmark_names: names in model output order.
        conformal_file: radii from the calibrate workflow (None or missing file: no radii, said in the output).
        overlay: draw the overlay PNGs.
        overlay_size: longest side of an overlay in pixels (None: the film's size, read from the file).
        transpose: the arrays are ``[x, y]`` (MONAI's PIL and mimtl's DICOM readers): transpose to show.
        image_key: image key (its meta names the file).
        error_key: key of :class:`~mimtl.data.TolerantDataset`'s failure reason.
        overlay_key: the batch key of the film's copy to draw on (None: read every film again).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        landmark_names: Sequence[str],
        conformal_file: str | os.PathLike | None = None,
        overlay: bool = True,
        overlay_size: int | None = 512,
        transpose: bool = True,
        image_key: str = "image",
        error_key: str = "error",
        overlay_key: str | None = None,
    ) -> None:
        super().__init__(output_dir, landmark_names, image_key, error_key)
        self.conformal_file = conformal_file
        self.conformal = load_conformal(conformal_file, self.landmark_names)
        if self.conformal is None:
            logger.warning("no conformal radii (%s): points are written without a radius.", conformal_file)
        self.overlay = overlay
        self.overlay_size = overlay_size
        self.transpose = transpose
        self.overlay_key = overlay_key
        self.files_read = 0  # overlays that had to read their film again

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the items and overlay names of the last run."""
        super().reset(engine)
        self.files_read = 0

    def _radius_px(self, item: dict[str, Any]) -> tuple[list[float], str]:
        """Radii in the conformal file's unit, and the same in pixels of the film for drawing."""
        if self.conformal is None:
            return [math.nan] * len(self.landmark_names), ""
        radius = list(self.conformal["radius"])
        if self.conformal["unit"] == "mm":
            if item["unit"] != "mm":
                return [math.nan] * len(radius), "mm"
            return radius, "mm"
        return radius, "px"

    def __call__(self, engine: Engine) -> None:
        """Collect the points of one iteration and draw their overlays."""
        # overlays are drawn here, between batches: a background thread was slower on 2 cores, where
        # it takes a core from the forward pass's threads (benchmarks/xray_landmark_detection.py)
        for record, item, out in self.collect(engine):
            if self.overlay and not record["error"] and not record["domain"].get("withheld"):
                copy = None
                if self.overlay_key is not None:
                    copy = item.get(self.overlay_key, out.get(self.overlay_key))
                try:
                    record["overlay"] = str(self.draw(record, copy))
                except Exception as e:  # an overlay must never cost the table of points
                    logger.warning("%s: no overlay (%s)", record["file"], e)

    def _canvas_size(self, h: int, w: int) -> tuple[float, tuple[int, int]]:
        """The scale from the film to its overlay, and the overlay's (width, height)."""
        scale = 1.0 if self.overlay_size is None else self.overlay_size / max(h, w)
        return scale, (max(1, round(w * scale)), max(1, round(h * scale)))

    def _film_from_copy(self, copy: Any) -> tuple[np.ndarray, float] | None:
        """The overlay's gray film (height, width) from the batch's copy and its scale, or None if the copy won't do."""
        from PIL import Image

        meta = getattr(copy, "meta", None) or {}
        shape = meta.get("spatial_shape")
        if self.overlay_size is None or copy is None or shape is None:
            return None
        shape = [int(v) for v in np.asarray(shape.cpu() if isinstance(shape, torch.Tensor) else shape).ravel()]
        pixels = _numpy(copy).astype(np.float32)
        pixels = pixels.reshape(pixels.shape[-2:]) if pixels.ndim > 2 and pixels.shape[0] == 1 else pixels
        if len(shape) != 2 or pixels.ndim != 2 or min(shape) < 1:
            return None
        h, w = (shape[1], shape[0]) if self.transpose else (shape[0], shape[1])
        scale, size = self._canvas_size(h, w)
        gray = to_uint8(pixels.T if self.transpose else pixels)
        if gray.shape[0] < size[1] or gray.shape[1] < size[0]:  # a blurred overlay: read the film instead
            return None
        if (gray.shape[1], gray.shape[0]) != size:
            gray = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR))
        return gray, scale

    def _film_from_file(self, name: str) -> tuple[np.ndarray, float]:
        """The overlay's gray film (height, width) read from its file, and its scale."""
        from PIL import Image

        from mimtl.io import load_image

        self.files_read += 1
        pixels = np.asarray(load_image(name), dtype=np.float32)
        pixels = pixels.reshape(pixels.shape[-2:]) if pixels.ndim > 2 else pixels
        gray = to_uint8(pixels.T if self.transpose else pixels)
        scale, size = self._canvas_size(*gray.shape)
        return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR)), scale

    def draw(self, item: dict[str, Any], copy: Any = None) -> Path:
        """Draw the overlay of one item, on ``copy`` (the batch's copy of the film) if it will do; return its path."""
        from PIL import ImageDraw

        film = self._film_from_copy(copy) if copy is not None else None
        film, scale = film if film is not None else self._film_from_file(item["file"])
        size = (film.shape[1], film.shape[0])
        canvas = overlay_canvas(film, _MARKER_COLOURS)
        draw = ImageDraw.Draw(canvas)
        text_font = font(max(10, size[0] // 45))
        radius, unit = self._radius_px(item)
        spacing = item["spacing"]
        dot = max(2.0, size[0] / 200)
        for k, (x, y) in enumerate(item["pred_points"]):
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            if not self.transpose:
                x, y = y, x
            cx, cy = (x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5
            r = radius[k]
            if math.isfinite(r):
                r_px = r / float(np.mean(spacing)) if unit == "mm" else r
                rr = r_px * scale
                draw.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), outline=_RADIUS, width=max(1, size[0] // 400))
            draw.ellipse((cx - dot, cy - dot, cx + dot, cy + dot), fill=_POINT)
            # a black rim keeps the number readable on bright bone
            draw.text(
                (cx + dot + 2, cy - dot - 2), f"{k + 1}", fill=_LABEL, font=text_font, stroke_width=1, stroke_fill=0
            )
        domain = item.get("domain") or {}
        if domain.get("in_domain") == "false":  # the domain check's verdict, in red on the film
            draw.text(
                (4, 4),
                f"OUT OF DOMAIN: {domain['domain_reason']}",
                fill=_POINT,
                font=text_font,
                stroke_width=1,
                stroke_fill=0,
            )
        path = self.item_path(item["file"], "_landmarks.png", folder="overlays")
        return save_atomic(path, lambda tmp: canvas.save(tmp, **OVERLAY_PNG))

    def write(self, engine: Engine | None = None) -> Path:
        """Write ``landmarks.csv`` and ``landmarks.json``; return the CSV path."""
        rows, files = [], []
        for item in self.records:
            domain = item.get("domain") or {}
            cells, verdict = self.domain_cells(domain), self.domain_json(domain)
            if item["error"]:
                rows.append({"file": item["file"], "status": self.failed_status(item["error"]), **cells})
                files.append({"file": item["file"], "status": "failed", "reason": item["error"], **verdict})
                continue
            if domain.get("withheld"):  # out of domain under on_out_of_domain: skip: the flag, no points
                rows.append({"file": item["file"], "status": WITHHELD, **cells})
                files.append({"file": item["file"], "status": WITHHELD, **verdict, "landmarks": []})
                continue
            radius, radius_unit = self._radius_px(item)
            points = []
            for k, name in enumerate(self.landmark_names):
                p, c = item["pred_points"][k], item["pred_coords"][k]
                mm = item["unit"] == "mm"
                entry = {
                    "landmark": k,
                    "name": name,
                    "x_px": _fmt(p[0]),
                    "y_px": _fmt(p[1]),
                    "x_mm": _fmt(c[0]) if mm else "",
                    "y_mm": _fmt(c[1]) if mm else "",
                    "confidence": _fmt(float(item["confidence"][k])),
                    "radius": _fmt(radius[k]),
                    "radius_unit": radius_unit if math.isfinite(radius[k]) else "",
                }
                points.append(entry)
                rows.append(
                    {
                        "file": item["file"],
                        **entry,
                        "unit": item["unit"],
                        "spacing_source": item["spacing_source"],
                        "status": "ok",
                        **cells,
                    }
                )
            files.append(
                {
                    "file": item["file"],
                    "status": "ok",
                    **verdict,
                    "unit": item["unit"],
                    "spacing_mm": [None if not math.isfinite(s) else float(s) for s in item["spacing"]],
                    "spacing_source": item["spacing_source"]
                    or ("unknown: coordinates in pixels" if item["unit"] == "px" else ""),
                    "overlay": item.get("overlay"),
                    "landmarks": [
                        {
                            k: (float(v) if isinstance(v, str) and v and k not in ("name", "radius_unit") else v)
                            for k, v in e.items()
                        }
                        for e in points
                    ],
                }
            )
        columns = [
            "file",
            "landmark",
            "name",
            "x_px",
            "y_px",
            "x_mm",
            "y_mm",
            "unit",
            "spacing_source",
            "confidence",
            "radius",
            "radius_unit",
            "status",
            *self.domain_columns(rows),
        ]
        path = self.write_csv(self.table_path("landmarks", ".csv"), rows, columns)
        report = {
            "n_images": len(files),
            "n_failed": sum(f["status"] == "failed" for f in files),
            **(
                {
                    "n_out_of_domain": sum(f.get("in_domain") is False for f in files),
                    "n_withheld": sum(f["status"] == WITHHELD for f in files),
                }
                if self.domain_columns(rows)
                else {}
            ),
            "landmark_names": self.landmark_names,
            "conformal": None
            if self.conformal is None
            else {k: self.conformal[k] for k in ("coverage", "unit", "n_calibration") if k in self.conformal},
            "coordinates": "pixels of the original file, array index order (x = column, y = row for 2D films); "
            "mm = pixels * spacing when the spacing is known",
            "images": files,
        }
        self.write_json(self.table_path("landmarks", ".json"), report)
        n_failed = report["n_failed"]
        (logger.warning if n_failed else logger.info)(
            "landmarks of %d images written to %s%s",
            len(files),
            path,
            f"; {n_failed} failed (listed)" if n_failed else "",
        )
        return path
