"""Contact sheets: a grid of samples with their masks, points and labels drawn, to check a data set at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["contact_sheet"]

#: Outline colours for label values 1, 2, 3, ... of a mask (RGB).
MASK_COLOURS = ((255, 80, 80), (80, 160, 255), (255, 210, 60), (90, 220, 120), (220, 110, 255), (255, 150, 60))


def _to_rgb(image: np.ndarray, window: tuple[float, float] | None = None) -> Image.Image:
    a = np.asarray(image, dtype=np.float32)
    if window is not None:
        lo, hi = window
    else:
        lo, hi = np.nanpercentile(a, (0.5, 99.5)) if a.size else (0.0, 1.0)
    a = np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)
    return Image.fromarray((a * 255).astype(np.uint8)).convert("RGB")


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:-1, 1:-1] = (
        (mask[1:-1, 1:-1] == mask[:-2, 1:-1])
        & (mask[1:-1, 1:-1] == mask[2:, 1:-1])
        & (mask[1:-1, 1:-1] == mask[1:-1, :-2])
        & (mask[1:-1, 1:-1] == mask[1:-1, 2:])
    )
    return (mask > 0) & ~inner.astype(bool)


def contact_sheet(
    images: Sequence[np.ndarray],
    captions: Sequence[str] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    points: Sequence[np.ndarray | None] | None = None,
    columns: int = 6,
    tile: int = 192,
    out: str | Path | None = None,
    window: tuple[float, float] | None = None,
) -> Image.Image:
    """Draw ``images`` on a grid; optionally outline ``masks`` and number ``points``.

    Args:
        images: 2D arrays in display orientation (rows = y, columns = x), any intensity range
            (shown between the 0.5 and 99.5 percentiles).
        captions: one short text per image (labels, grade, ...).
        masks: integer label maps of the same shape as their image; each label is outlined in
            its own colour.
        points: ``(N, 2)`` arrays of ``(x, y)`` pixel coordinates in the image; NaN rows (missing
            landmarks) are skipped.
        columns: tiles per row.
        tile: tile side in pixels (images are resized to fit, keeping their aspect ratio).
        out: if given, the sheet is saved there as PNG.
        window: ``(black, white)`` intensities shown for every image instead of each image's own
            percentiles (to compare brightness and contrast across images).
    """
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * (tile + 14)), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, image in enumerate(images):
        h, w = np.asarray(image).shape[:2]
        scale = tile / max(h, w)
        rgb = np.asarray(_to_rgb(image, window)).copy()
        if masks is not None and masks[i] is not None:
            mask = np.asarray(masks[i]).astype(np.int64)
            for value in np.unique(mask[mask > 0]):
                rgb[_outline((mask == value).astype(np.uint8))] = MASK_COLOURS[(int(value) - 1) % len(MASK_COLOURS)]
        thumb = Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        x0, y0 = (i % columns) * tile, (i // columns) * (tile + 14)
        sheet.paste(thumb, (x0, y0))
        if points is not None and points[i] is not None:
            for k, (px, py) in enumerate(np.asarray(points[i], dtype=float)):
                if np.isfinite(px) and np.isfinite(py):
                    cx, cy = x0 + px * scale, y0 + py * scale
                    draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=(0, 255, 0))
                    draw.text((cx + 3, cy - 5), str(k + 1), fill=(255, 255, 0))
        if captions is not None:
            draw.text((x0 + 2, y0 + tile + 1), captions[i][: tile // 6], fill=(230, 230, 230))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        sheet.save(out)
    return sheet
