"""The issue-15 bundles' own method, end to end on tiny data (xray_tile_ae_pretraining -> xray_lung_segmentation).

What every bundle meets (train learns, evaluate, inference, ``mimtl run``, 2-process gloo, export,
verify, models/ untouched, bad films refused) is tests/test_bundle_contract.py; this module checks
what is particular to these two, on the same tiny data and shared runs: the T-AE encoder handed to
the segmentation network through ``encoder_weights``, masks written in each film's own geometry by
the sliding window + ``Invertd``, the per-film areas (px, mm^2) and cardiothoracic ratio, and a
failed file listed as a row. Nothing reads the demo data of the user cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_checks import assert_bundle_untouched, isolated_environment, monai_bundle_run, rows, snapshot
from bundle_checks import assert_ok as _ok
from bundle_checks import lung_film as _film
from PIL import Image

from mimtl.bundle import load_bundle, load_checkpoint

pytestmark = pytest.mark.slow
SEG, TAE = "xray_lung_segmentation", "xray_tile_ae_pretraining"
BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


@pytest.fixture(scope="module", autouse=True)
def _environment(tmp_path_factory):
    with isolated_environment(tmp_path_factory.mktemp("empty_cache"), [SEG, TAE]):
        yield


def test_tae_checkpoint_initialises_the_segmentation_encoder(bundle_runs):
    """The T-AE bundle's model.pt, given as encoder_weights, fills the segmentation encoder tensor for tensor."""
    tae_ckpt = bundle_runs.trained(TAE).ckpt
    data = bundle_runs.data(SEG)
    net = (
        load_bundle(SEG)
        .parser("train", **{**data.train, "encoder_weights": str(tae_ckpt)})
        .get_parsed_content("network_def", instantiate=True)
    )
    tae_state = load_checkpoint(tae_ckpt)
    encoder = net.encoder.state_dict()
    assert net.encoder_init.startswith(f"file:{tae_ckpt}") and "'encoder.'" in net.encoder_init
    for key, value in encoder.items():
        assert torch.equal(value, tae_state[f"encoder.{key}"]), key


def test_inference_writes_masks_in_each_films_geometry_with_areas_and_ctr(bundle_runs, tmp_path):
    """A film 3x taller and 2x wider than the training grid: slid over, masks back at its size; mm^2 from
    the configured spacing; a broken file is a failed row, the others go on."""
    ckpt = bundle_runs.trained(SEG).ckpt
    data = bundle_runs.data(SEG)
    films = tmp_path / "films"
    films.mkdir()
    img, _ = _film(99)
    Image.fromarray(np.kron(img, np.ones((3, 2), np.uint8))).save(films / "big.png")  # 192 rows x 128 columns
    Image.fromarray(img).save(films / "small.png")
    (films / "broken.png").write_bytes(b"not a png")
    import nibabel as nib

    nib.save(nib.Nifti1Image(img.T.astype(np.float32), np.diag([0.3, 0.3, 1.0, 1.0])), films / "film.nii.gz")
    out = tmp_path / "out"
    before = snapshot(BUNDLES / SEG)
    result = monai_bundle_run(SEG, "inference", data.inference_settings(ckpt, out, input=str(films), pixel_spacing=0.2))
    _ok(result)
    got = {Path(r["file"]).name: r for r in rows(out / "segmentation.csv")}
    assert list(got) == ["big.png", "broken.png", "film.nii.gz", "small.png"]
    # a NIfTI film: its masks as NIfTI with its affine, areas in mm2 from its own spacing (0.3 mm)
    nifti = nib.load(out / "masks" / "film_mask.nii.gz")
    assert nifti.shape[:2] == (64, 64) and np.allclose(np.diag(nifti.affine)[:2], 0.3)
    heart = int(np.asarray(nifti.dataobj)[..., -1].sum())
    assert int(got["film.nii.gz"]["heart_px"]) == heart
    assert float(got["film.nii.gz"]["heart_mm2"]) == pytest.approx(heart * 0.09, abs=0.06)
    assert got["broken.png"]["status"].startswith("failed: ") and "broken.png" in result.stdout + result.stderr
    for name, shape in (("big", (192, 128)), ("small", (64, 64))):
        row = got[f"{name}.png"]
        assert row["status"] == "ok"
        mask = np.asarray(Image.open(out / "masks" / f"{name}_mask.png"))
        assert mask.shape == (*shape, 3) and set(np.unique(mask)) <= {0, 255}  # channel k = structure k
        for k, structure in enumerate(["left_lung", "right_lung", "heart"]):
            area = int((mask[..., k] > 0).sum())
            assert int(row[f"{structure}_px"]) == area
            assert float(row[f"{structure}_mm2"]) == pytest.approx(area * 0.04, abs=0.06)
        assert "ctr" in row
        assert (out / "overlays" / f"{name}_overlay.png").is_file()
    assert not (out / "masks" / "broken_mask.png").exists()
    assert_bundle_untouched(BUNDLES / SEG, before, bundle_runs.trained(SEG).out)
