"""A failed file in a batch must not change what the good films beside it get."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from mimtl.data import ERROR_KEY, tolerant_collate


def _good(i: int) -> dict:
    meta = {
        "filename_or_obj": f"f{i}.png",
        "original_affine": np.diag([0.5, 0.5, 1.0, 1.0]),
        "spacing": np.array([0.5, 0.5]),
    }
    return {"image": MetaTensor(torch.full((1, 4, 4), float(i)), meta=meta), ERROR_KEY: ""}


def _failed() -> dict:
    return {
        "image": MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "bad.png"}),
        ERROR_KEY: "ImageReadError: x",
    }


def test_good_items_keep_their_metadata_beside_a_placeholder():
    batch = tolerant_collate([_good(1), _failed(), _good(2)])
    meta = batch["image"].meta
    assert {"original_affine", "spacing"} <= set(meta)
    np.testing.assert_allclose(np.asarray(meta["spacing"])[[0, 2]], [[0.5, 0.5], [0.5, 0.5]])
    assert list(meta["filename_or_obj"]) == ["f1.png", "bad.png", "f2.png"]
    assert list(batch[ERROR_KEY]) == ["", "ImageReadError: x", ""]


def test_monai_collate_alone_drops_them():
    """Why tolerant_collate exists: MONAI keeps only the shared keys."""
    from monai.data import list_data_collate

    assert "original_affine" not in list_data_collate([_good(1), _failed()])["image"].meta


#: overrides of the inference config (the check below that the test fails without the fix sets one)
COLLATE: dict = {}


@pytest.mark.slow
def test_landmark_points_do_not_move_when_a_broken_file_shares_the_batch(tmp_path):
    """The shipped landmark model on 3 films, with and without a broken file in the same batch."""
    from mimtl.bundle import load_bundle

    films = tmp_path / "films"
    films.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((300, 240)) * 255).astype(np.uint8)).save(films / f"film{i}.png")
    rows = {}
    for case in ("clean", "with_broken"):
        if case == "with_broken":
            (films / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        out = tmp_path / case
        wf = load_bundle("xray_landmark_detection").workflow(
            "inference",
            configure_logging=False,
            input=str(films),
            output_dir=str(out),
            overlay=False,
            pixel_spacing=0.5,
            num_workers=0,
            **COLLATE,
        )
        wf.initialize()
        try:
            wf.run()
        finally:
            wf.finalize()
        with open(out / "landmarks.csv", newline="") as f:
            rows[case] = {(os.path.basename(r["file"]), r.get("landmark", "")): r for r in csv.DictReader(f)}
    clean, mixed = rows["clean"], rows["with_broken"]
    assert any(k[0] == "broken.png" for k in mixed)
    for key, row in clean.items():
        for column in ("x_px", "y_px", "x_mm", "y_mm"):
            if column in row:
                assert mixed[key][column] == row[column], (key, column)
