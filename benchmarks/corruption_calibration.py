#!/usr/bin/env python
"""Severity calibration of the corruption suite: ``python benchmarks/corruption_calibration.py``.

Reports mean SSIM and PSNR (MONAI's ``SSIMMetric`` / ``PSNRMetric``, intensities in [0, 1]) of
each corruption x severity against the clean film, over the demo segmentation test split
(``mimtl.sim.demo_path("segmentation")``, built on first use).

* ``--write`` writes the table into ``docs/corruptions.md`` (between the markers) and the
  contact sheet ``docs/corruptions_contact_sheet.png`` (one film, clean + 5 severities per row).
* ``--fit`` measures, on films of the validation split, mean SSIM over a grid of parameters of
  each corruption and interpolates the parameter of each severity's target mean SSIM (:data:`TARGET_SSIM`) and prints a
  ``SEVERITY_PARAMS`` table to paste into ``mimtl/transforms/corruptions.py``.

``tests/test_corruptions.py`` recomputes a few cells and compares them with the written table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric
from PIL import Image, ImageDraw
from tqdm import tqdm

from mimtl.sim import demo_path, prepare_demo
from mimtl.transforms.corruptions import CORRUPTIONS, SEVERITIES, SEVERITY_PARAMS, Corrupt

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "corruptions.md"
SHEET = ROOT / "docs" / "corruptions_contact_sheet.png"
BEGIN, END = "<!-- calibration:begin -->", "<!-- calibration:end -->"
#: Mean SSIM aimed at for severities 1..5, the same for every corruption.
TARGET_SSIM: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5)
#: Parameter search range, whether the corruption grows as the parameter falls, log-scale search, integer.
SEARCH: dict[str, tuple[float, float, bool, bool, bool]] = {
    "gaussian_noise": (0.001, 0.5, False, True, False),
    "shot_noise": (1.0, 1e5, True, True, False),
    "impulse_noise": (1e-4, 0.5, False, True, False),
    "speckle_noise": (0.001, 2.0, False, True, False),
    "poisson_noise": (10.0, 1e7, True, True, False),
    "pixel_dropout": (1e-4, 0.5, False, True, False),
    "gaussian_blur": (0.2, 40.0, False, True, False),
    "glass_blur": (0.2, 16.0, False, True, False),
    "defocus_blur": (0.3, 40.0, False, True, False),
    "motion_blur": (1.0, 160.0, False, True, False),
    "zoom_blur": (0.01, 1.5, False, True, False),
    "fog": (0.02, 8.0, False, True, False),
    "contrast": (0.01, 1.0, True, True, False),
    "brightness": (0.0, 0.95, False, False, False),
    "saturate": (1.0, 8.0, False, True, False),
    "jpeg_compression": (1.0, 95.0, True, True, True),
    "elastic_transform": (0.02, 40.0, False, True, False),
}


def load_films(split: str = "test", n: int | None = None) -> list[tuple[str, np.ndarray]]:
    """``(file name, (1, H, W) float32 in [0, 1])`` of the demo segmentation films of ``split``."""
    root = Path(prepare_demo(demo_path("segmentation")))
    items = json.loads((root / "datalist.json").read_text())[split][:n]
    films = []
    for item in items:
        path = root / item["image"]
        films.append((path.name, np.asarray(Image.open(path), dtype=np.float32)[None] / 255.0))
    return films


def quality(films: Sequence[tuple[str, np.ndarray]], name: str, severity: int, parameter: float | None = None) -> dict:
    """Mean SSIM and PSNR (dB) of ``name`` at ``severity`` over ``films``."""
    corrupt = Corrupt(name, severity, parameter=parameter)
    clean = torch.stack([torch.from_numpy(x) for _, x in films])
    out = torch.stack([torch.from_numpy(corrupt(x, image_id=i)) for i, x in films])
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, reduction="none")(out, clean)
    psnr = PSNRMetric(max_val=1.0, reduction="none")(out, clean)
    return {"ssim": float(ssim.mean()), "psnr": float(psnr.mean())}


def table(films: Sequence[tuple[str, np.ndarray]], progress: bool = True) -> dict[str, list[dict]]:
    """``{corruption: [quality at severity 1..5]}``."""
    cells = [(n, s) for n in CORRUPTIONS for s in SEVERITIES]
    out: dict[str, list[dict]] = {n: [] for n in CORRUPTIONS}
    for name, severity in tqdm(cells, desc="calibration", disable=not progress):
        out[name].append(quality(films, name, severity))
    return out


def markdown(results: dict[str, list[dict]], n_films: int) -> str:
    """The calibration table: parameter, SSIM and PSNR per severity."""
    lines = [
        f"Mean over the {n_films} films of the demo segmentation test split (256 x 256, seed 0). "
        "Each cell: parameter / SSIM / PSNR (dB).",
        "",
        "| corruption | " + " | ".join(f"severity {s}" for s in SEVERITIES) + " |",
        "|---|" + "---|" * len(SEVERITIES),
    ]
    for name in CORRUPTIONS:
        cells = [
            f"{p:g} / {q['ssim']:.3f} / {q['psnr']:.1f}"
            for p, q in zip(SEVERITY_PARAMS[name], results[name], strict=True)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = [np.mean([results[n][s]["ssim"] for n in CORRUPTIONS]) for s in range(len(SEVERITIES))]
    spread = [np.ptp([results[n][s]["ssim"] for n in CORRUPTIONS]) for s in range(len(SEVERITIES))]
    lines.append("| **mean SSIM** | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    lines.append("| **SSIM range** | " + " | ".join(f"{r:.3f}" for r in spread) + " |")
    return "\n".join(lines)


def parse_table(text: str) -> dict[str, list[dict]]:
    """Read the table written by :func:`markdown` back: ``{corruption: [{parameter, ssim, psnr}]}``."""
    body = text.split(BEGIN, 1)[1].split(END, 1)[0]
    out = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in CORRUPTIONS:
            values = [[float(v) for v in c.split("/")] for c in cells[1:]]
            out[cells[0]] = [{"parameter": p, "ssim": s, "psnr": q} for p, s, q in values]
    return out


def write_doc(results: dict[str, list[dict]], n_films: int, path: Path = DOC) -> None:
    text = path.read_text()
    block = f"{BEGIN}\n{markdown(results, n_films)}\n{END}"
    path.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S))


def contact_sheet(film: tuple[str, np.ndarray], path: Path = SHEET, size: int = 96, label_width: int = 120) -> None:
    """All 17 corruptions x (clean + 5 severities) of one film, ``size`` px per image, 8-bit PNG."""
    name, x = film
    rows, cols = len(CORRUPTIONS), 1 + len(SEVERITIES)
    sheet = Image.new("L", (label_width + cols * size, 16 + rows * size), 255)
    draw = ImageDraw.Draw(sheet)
    for j in range(cols):
        draw.text((label_width + j * size + 4, 2), "clean" if j == 0 else f"severity {j}", fill=0)
    for i, corruption in enumerate(CORRUPTIONS):
        draw.text((4, 16 + i * size + size // 2 - 6), corruption, fill=0)
        for j in range(cols):
            out = Corrupt(corruption, j)(x, image_id=name)
            tile = Image.fromarray(np.rint(out[0] * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
            sheet.paste(tile, (label_width + j * size, 16 + i * size))
    sheet.save(path, optimize=True)


def _fit_one(films: Sequence, name: str, targets: Sequence[float], points: int = 14) -> tuple[float, ...]:
    """Mean SSIM on a grid of ``points`` parameters over the search range (at severity 3's seed),
    then the parameter of each target by interpolation (log-scale where the search is)."""
    lo, hi, _decreasing, log, integer = SEARCH[name]
    grid = np.geomspace(lo, hi, points) if log else np.linspace(lo, hi, points)
    if integer:
        grid = np.unique(np.rint(grid))
    ssim = np.array([quality(films, name, 3, float(p))["ssim"] for p in grid])
    axis = np.log(grid) if log else grid
    order = np.argsort(ssim)  # np.interp wants increasing x; SSIM is monotone in the parameter
    fitted = []
    for target in targets:
        v = float(np.interp(target, ssim[order], axis[order]))
        v = math.exp(v) if log else v
        fitted.append(float(round(v)) if integer else float(f"{v:.2g}"))
    return tuple(fitted)


def fit(
    films: Sequence, targets: Sequence[float] = TARGET_SSIM, names: Sequence[str] = CORRUPTIONS
) -> dict[str, tuple[float, ...]]:
    """Parameters giving the target mean SSIM per severity (2 significant digits)."""
    params = {}
    for name in tqdm(names, desc="fit"):
        params[name] = _fit_one(films, name, targets)
        print(f'    "{name}": {params[name]},', flush=True)
    return params


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write docs/corruptions.md and the contact sheet")
    parser.add_argument("--fit", action="store_true", help="fit SEVERITY_PARAMS on validation films and print them")
    parser.add_argument("--fit-films", type=int, default=8, help="validation films used by --fit")
    parser.add_argument("--only", nargs="+", choices=CORRUPTIONS, default=CORRUPTIONS, help="corruptions to fit")
    args = parser.parse_args(argv)
    if args.fit:
        fit(load_films("validation", args.fit_films), names=args.only)
        return
    films = load_films("test")
    results = table(films)
    print(markdown(results, len(films)))
    if args.write:
        write_doc(results, len(films))
        contact_sheet(films[0])
        print(f"wrote {DOC} and {SHEET}", file=sys.stderr)


if __name__ == "__main__":
    main()
