"""``mimtl demo``: the main job on the embedded default data, in one command.

Runs every shipped bundle's evaluation and inference with its pretrained weights, checks that
the natural-image (ImageNet) weights mimtl ships are real, prints one results table and says
where the pictures are. It grows as bundles land.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mimtl.utils import read_metrics

__all__ = ["PHOTO_CLASSES", "DemoRow", "imagenet_photo_check", "read_metrics", "run_demo"]

#: scikit-image photos and the ImageNet-1k classes they belong to (index: name).
PHOTO_CLASSES = {
    "chelsea": {281: "tabby cat", 282: "tiger cat", 285: "Egyptian cat"},
    "coffee": {967: "espresso", 968: "cup", 504: "coffee mug"},
    "rocket": {657: "missile", 744: "projectile", 812: "space shuttle"},
}


@dataclass
class DemoRow:
    """One line of the demo's results table."""

    what: str
    result: str
    ok: bool
    pictures: str = ""


def imagenet_photo_check(out_dir: Path) -> DemoRow:
    """Classify natural photos with EfficientNet-Lite0 and its shipped ImageNet weights.

    Writes a contact sheet of the photos with their top-1 class index and whether it is right.
    """
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from mimtl.networks import IMAGENET_LITE_MEAN, IMAGENET_LITE_STD, efficientnet_lite0

    try:
        import skimage.data
    except ImportError:  # the photos ship with scikit-image (the `demo` extra, in `all`)
        return DemoRow(
            "EfficientNet-Lite0 ImageNet weights",
            "not checked: scikit-image is not installed (pip install 'mimtl[demo]' or scikit-image)",
            False,
        )
    net = efficientnet_lite0(pretrained=True).eval()
    mean = torch.tensor(IMAGENET_LITE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_LITE_STD).view(3, 1, 1)
    tiles, correct = [], 0
    for name, classes in PHOTO_CLASSES.items():
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        side = min(photo.size)  # centre crop to a square, then 224 x 224
        left, top = (photo.width - side) // 2, (photo.height - side) // 2
        photo = photo.crop((left, top, left + side, top + side)).resize((224, 224), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(photo, dtype=np.float32)).permute(2, 0, 1)
        with torch.no_grad():
            top5 = net(((x - mean) / std)[None])[0].topk(5).indices.tolist()
        hit = bool(set(top5) & set(classes))
        correct += hit
        label = classes.get(top5[0], f"class {top5[0]}")
        draw = ImageDraw.Draw(photo)
        draw.rectangle((0, 0, 224, 18), fill=(0, 0, 0))
        draw.text((4, 3), f"{name}: {label} ({'ok' if hit else 'WRONG'})", fill=(0, 255, 0) if hit else (255, 0, 0))
        tiles.append(photo)
    sheet = Image.new("RGB", (224 * len(tiles), 224))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (224 * i, 0))
    out_dir.mkdir(parents=True, exist_ok=True)
    sheet.save(out_dir / "imagenet_check.png")
    n = len(PHOTO_CLASSES)
    return DemoRow(
        "EfficientNet-Lite0 ImageNet weights",
        f"{correct}/{n} photos in their class (top-5)",
        correct == n,
        str(out_dir / "imagenet_check.png"),
    )


def _metrics_summary(folder: Path) -> str:
    try:
        metrics = read_metrics(folder)
    except FileNotFoundError as e:
        return str(e)
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()) or "metrics.csv is empty"


def run_bundle_demo(bundle, out_dir: Path) -> list[DemoRow]:
    """Evaluate and infer with one bundle's shipped weights."""
    if not bundle.has_weights:
        return [DemoRow(bundle.name, "no weights shipped: skipped", False)]
    rows = []
    for config in ("evaluate", "inference"):
        target = out_dir / bundle.name / config
        # pictures where a bundle can draw them (e.g. Grad-CAM overlays)
        pictures = {"gradcam": True} if config == "inference" and "gradcam" in bundle.parser(config).config else {}
        try:
            wf = bundle.workflow(config, output_dir=str(target), configure_logging=False, **pictures)
            wf.initialize()
            wf.run()
            wf.finalize()
        except Exception as e:
            from mimtl.errors import root_cause

            cause = root_cause(e)
            rows.append(DemoRow(f"{bundle.name} {config}", f"failed: {type(cause).__name__}: {cause}", False))
            continue
        result = _metrics_summary(target) if config == "evaluate" else f"{sum(1 for _ in target.rglob('*'))} files"
        rows.append(DemoRow(f"{bundle.name} {config}", result, True, str(target)))
    return rows


def demo_data_rows(tasks: list[str] | None = None) -> list[DemoRow]:
    """Build (or find in the cache) each demo data set; one row per set with its contact sheet."""
    import json
    import time

    from mimtl.sim.demo import DEMO_TASKS, demo_datalist

    rows = []
    for task in DEMO_TASKS if tasks is None else tasks:
        print(f"demo data: {task} ...", flush=True)
        start = time.perf_counter()
        try:
            datalist = demo_datalist(task)
        except Exception as e:
            rows.append(DemoRow(f"demo data {task}", f"failed: {type(e).__name__}: {e}", False))
            continue
        seconds = time.perf_counter() - start
        content = json.loads(datalist.read_text())
        sizes = "/".join(str(len(content.get(k, []))) for k in ("training", "validation", "test"))
        how = f"built in {seconds:.0f} s" if seconds > 1 else "cached"
        rows.append(
            DemoRow(
                f"demo data {task}", f"train/val/test {sizes} ({how})", True, str(datalist.parent / "contact_sheet.png")
            )
        )
    return rows


def run_demo(out_dir: str | Path = "demo_output", with_imagenet: bool = True, with_data: bool = True) -> list[DemoRow]:
    """Run the whole demo and print its table; returns the rows."""
    from mimtl.bundle import list_bundles

    out_dir = Path(out_dir)
    rows = [imagenet_photo_check(out_dir)] if with_imagenet else []
    rows += demo_data_rows() if with_data else []
    bundles = list_bundles()
    for bundle in bundles:
        print(f"running {bundle.name} {bundle.version} ...", flush=True)
        rows += run_bundle_demo(bundle, out_dir)
    if not bundles:
        rows.append(DemoRow("bundles", "none shipped yet: bundles land in bundles/ as their issues are done", True))
    from mimtl.utils import format_table

    print(format_table([("", "what", "result")] + [("ok" if r.ok else "FAIL", r.what, r.result) for r in rows]))
    print(f"\nPictures and outputs: {out_dir.resolve()}")
    for r in rows:
        if r.pictures and r.pictures.endswith(".png"):
            print(f"  {r.what}: {r.pictures}")
    return rows
