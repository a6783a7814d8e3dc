"""LandmarkReport and LandmarkWriter on hand-made evaluator outputs (no network)."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from mimtl.handlers import LandmarkReport, LandmarkWriter

NAMES = ["a", "b"]


def _item(file: str, pred, true, spacing=None) -> dict:
    pred, true = torch.tensor(pred, dtype=torch.float64), torch.tensor(true, dtype=torch.float64)
    known = spacing is not None
    s = torch.tensor(spacing if known else [math.nan, math.nan], dtype=torch.float64)
    scale = s if known else torch.ones(2, dtype=torch.float64)
    image = MetaTensor(
        torch.zeros(1, 8, 8), meta={"filename_or_obj": file, "spacing_source": "test" if known else "unknown"}
    )
    return {
        "image": image,
        "pred_points": pred,
        "pred_coords": pred * scale,
        "pred_confidence": torch.tensor([0.9, 0.4]),
        "label_points": true,
        "label_coords": true * scale,
        "unit": "mm" if known else "px",
        "spacing": s,
    }


def _run(handler, items, batch=None):
    engine = SimpleNamespace(state=SimpleNamespace(output=items, batch=batch or [{} for _ in items]))
    handler.reset()
    handler(engine)
    return handler.write()


def test_report_in_mm_with_hand_computed_errors_and_calibration(tmp_path):
    items = [
        _item(f"f{i}.png", [[0.0, 0.0], [10.0, 10.0]], [[3.0 * i, 4.0 * i], [10.0, 10.0 + i]], [0.5, 0.5])
        for i in range(1, 11)
    ]
    conformal = tmp_path / "conformal.json"
    summary = _run(
        LandmarkReport(tmp_path, NAMES, thresholds=(2.0, 4.0), conformal_file=conformal, calibrate=True), items
    )
    # landmark a: errors 2.5 * i mm (5 * i px); landmark b: 0.5 * i mm
    assert summary["unit"] == "mm"
    assert summary["per_landmark"][0]["mre"] == pytest.approx(2.5 * 5.5)
    assert summary["per_landmark"][1]["mre"] == pytest.approx(0.5 * 5.5)
    assert summary["overall"]["sdr_2"] == pytest.approx(4 / 20)  # 1 of a (2.5 > 2: none) ... b: 0.5..2.0 -> 4
    radius = json.loads(conformal.read_text())["radius"]
    # 10 scores, 90 %: the ceil(11 * 0.9) = 10th smallest
    assert radius == pytest.approx([25.0, 5.0])
    assert summary["conformal_coverage"]["overall"] == 1.0
    rows = list(csv.DictReader(open(tmp_path / "landmark_errors.csv")))
    assert (
        len(rows) == 20
        and float(rows[0]["error_px"]) == pytest.approx(5.0)
        and float(rows[0]["error_mm"]) == pytest.approx(2.5)
    )


def test_report_falls_back_to_px_when_some_spacing_is_unknown(tmp_path, caplog):
    items = [
        _item("mm.png", [[0.0, 0.0], [1.0, 1.0]], [[3.0, 4.0], [1.0, 1.0]], [0.1, 0.1]),
        _item("px.png", [[0.0, 0.0], [1.0, 1.0]], [[6.0, 8.0], [1.0, 1.0]]),
    ]
    summary = _run(LandmarkReport(tmp_path, NAMES), items)
    assert summary["unit"] == "px" and summary["per_landmark"][0]["mre"] == pytest.approx(7.5)
    assert "errors reported in px" in caplog.text


def test_report_counts_missing_truth(tmp_path):
    items = [_item("a.png", [[0.0, 0.0], [1.0, 1.0]], [[3.0, 4.0], [math.nan, math.nan]], [1.0, 1.0])]
    summary = _run(LandmarkReport(tmp_path, NAMES), items)
    assert summary["overall"]["n_missing"] == 1 and summary["overall"]["mre"] == pytest.approx(5.0)


def test_writer_lists_failures_and_draws_overlays(tmp_path, caplog):
    film = tmp_path / "film.png"
    Image.fromarray(np.full((8, 8), 40, np.uint8)).save(film)
    conformal = tmp_path / "conformal.json"
    conformal.write_text(json.dumps({"coverage": 0.9, "unit": "px", "radius": [1.5, None], "n_calibration": 20}))
    writer = LandmarkWriter(tmp_path / "out", NAMES, conformal_file=conformal, overlay_size=64)
    good = _item(str(film), [[2.0, 3.0], [5.0, 6.0]], [[0.0, 0.0], [0.0, 0.0]])
    engine = SimpleNamespace(
        state=SimpleNamespace(output=[good, {"image": good["image"]}], batch=[{}, {"error": "truncated PNG"}])
    )
    writer.reset()
    writer(engine)
    writer.write()
    rows = list(csv.DictReader(open(tmp_path / "out" / "landmarks.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed: truncated PNG"]
    assert rows[0]["x_px"] == "2.000" and rows[0]["radius"] == "1.500" and rows[0]["radius_unit"] == "px"
    assert rows[1]["radius"] == ""  # too few calibration points for that landmark: no radius, not a made-up one
    report = json.loads((tmp_path / "out" / "landmarks.json").read_text())
    assert report["n_failed"] == 1 and report["images"][0]["spacing_source"] == "unknown"
    with Image.open(tmp_path / "out" / "overlays" / "film_landmarks.png") as im:
        assert im.size == (64, 64)
        rgb = np.asarray(im.convert("RGB")).astype(int)
    # 8x scale: point a ([x, y] = [2, 3]: column 2, row 3) is a red dot at pixel centre (19.5, 27.5)
    assert rgb[27, 19].tolist() == [255, 40, 40] and rgb[28, 20].tolist() == [255, 40, 40]
    yellow = np.argwhere((rgb == [255, 220, 0]).all(-1))  # its 1.5 px radius: a ring 12 px out
    distance = np.hypot(yellow[:, 0] - 27.5, yellow[:, 1] - 19.5)
    assert len(yellow) > 20 and abs(np.median(distance) - 12.0) < 1.0
    assert len(set(rgb[60, 2].tolist())) == 1  # the film itself, in gray


def test_writer_without_radii_says_so(tmp_path, caplog):
    LandmarkWriter(tmp_path, NAMES, conformal_file=tmp_path / "none.json", overlay=False)
    assert "no conformal radii" in caplog.text
    with pytest.raises(ValueError, match="3 radii for 2 landmarks"):
        (tmp_path / "c.json").write_text(json.dumps({"coverage": 0.9, "unit": "mm", "radius": [1, 2, 3]}))
        LandmarkWriter(tmp_path, NAMES, conformal_file=tmp_path / "c.json")


POINTS = {"wide": (50.0, 12.0), "tall": (7.0, 30.0)}  # [x, y] on the films below


def _overlay_pipeline():
    from monai.transforms import Compose, CopyItemsd, LoadImaged, Resized, SelectItemsd

    from mimtl.io import MedicalImageReader
    from mimtl.transforms import EnsureGrayscaled, StandardizeImageMetad

    return Compose(
        [
            LoadImaged(keys="image", reader=MedicalImageReader, ensure_channel_first=True, image_only=True),
            EnsureGrayscaled(keys="image"),
            StandardizeImageMetad(keys="image", prune=True),
            CopyItemsd(keys="image", names="overlay_image"),
            Resized(keys="overlay_image", spatial_size=[128, 128], mode="area"),
            Resized(keys="image", spatial_size=[16, 16]),
            SelectItemsd(keys=["image", "overlay_image"]),
        ]
    )


def _batches(data, batch_size):
    from monai.data import DataLoader, decollate_batch

    from mimtl.data import TolerantDataset

    shapes = {"image": [1, 16, 16], "overlay_image": [1, 128, 128]}
    dataset = TolerantDataset(data, _overlay_pipeline(), placeholder_shape=shapes)
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=0):
        items = decollate_batch(batch)
        outputs = []
        for it in items:
            name = it["image"].meta["filename_or_obj"]
            x, y = POINTS["wide" if name.endswith("wide.png") else "tall"]
            out = _item(name, [[x, y], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]])
            outputs.append({**out, "image": it["image"]})
        yield SimpleNamespace(state=SimpleNamespace(output=outputs, batch=items))


def test_writer_draws_on_the_copy_in_the_batch_without_reading_the_file(tmp_path, monkeypatch):
    """Films of two aspect ratios batch as fixed-size copies; the overlay matches one drawn from the file."""
    import mimtl.io

    rng = np.random.default_rng(0)
    wide, tall = tmp_path / "wide.png", tmp_path / "tall.png"
    Image.fromarray(rng.integers(0, 255, (60, 72), dtype=np.uint8)).save(wide)  # 72 wide, 60 high
    Image.fromarray(rng.integers(0, 255, (90, 40), dtype=np.uint8)).save(tall)
    broken = tmp_path / "broken.png"
    broken.write_bytes(wide.read_bytes()[:40])
    conformal = tmp_path / "conformal.json"
    conformal.write_text(json.dumps({"coverage": 0.9, "unit": "px", "radius": [1.5, None], "n_calibration": 20}))
    data = [{"image": str(f)} for f in (wide, tall)]

    reference = LandmarkWriter(tmp_path / "ref", NAMES, conformal_file=conformal, overlay_size=64)
    reference.reset()
    for engine in _batches(data, 2):
        reference(engine)
    assert reference.files_read == 2

    writer = LandmarkWriter(
        tmp_path / "out", NAMES, conformal_file=conformal, overlay_size=64, overlay_key="overlay_image"
    )
    writer.reset()
    with monkeypatch.context() as mp:
        mp.setattr(mimtl.io, "load_image", lambda *a, **k: pytest.fail("the film was read again"))
        for engine in _batches(data, 2):  # one batch: 72x60 and 40x90 films, copies of one size
            writer(engine)
    assert writer.files_read == 0
    for name, size, longest in (("wide", (64, 53), 72), ("tall", (28, 64), 90)):
        with (
            Image.open(tmp_path / "out" / "overlays" / f"{name}_landmarks.png") as im,
            Image.open(tmp_path / "ref" / "overlays" / f"{name}_landmarks.png") as ref,
        ):
            assert im.size == ref.size == size
            rgb, ref_rgb = np.asarray(im.convert("RGB")).astype(int), np.asarray(ref.convert("RGB")).astype(int)
        scale, (x, y) = 64 / longest, POINTS[name]
        cx, cy = round((x + 0.5) * scale - 0.5), round((y + 0.5) * scale - 0.5)
        assert rgb[cy, cx].tolist() == ref_rgb[cy, cx].tolist() == [255, 40, 40]  # the red dot, same place
        markers = [(rgb == c).all(-1) for c in ([255, 40, 40], [255, 220, 0])]
        ref_markers = [(ref_rgb == c).all(-1) for c in ([255, 40, 40], [255, 220, 0])]
        for mine, theirs in zip(markers, ref_markers, strict=True):
            assert (mine == theirs).mean() > 0.99  # dot and ring drawn alike
        film = ~(markers[0] | markers[1] | ref_markers[0] | ref_markers[1])
        assert np.abs(rgb - ref_rgb)[film].mean() < 25  # the same noise film, resampled another way (other: ~85)

    # a batch with a failed film still collates; its films' meta lost spatial_shape: they are read again
    writer.reset()
    for engine in _batches([{"image": str(wide)}, {"image": str(broken)}], 2):
        writer(engine)
    assert writer.files_read == 1 and [r["error"] != "" for r in writer.records] == [False, True]
    assert (tmp_path / "out" / "overlays" / "wide_landmarks.png").is_file()
