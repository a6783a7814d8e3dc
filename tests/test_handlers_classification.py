"""Inference on a user's folder: every file gets a CSV row (failed ones with the reason), Grad-CAM for the good ones."""

import csv
import json
import logging

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.networks.nets import DenseNet
from monai.transforms import Activationsd, Compose, Lambdad, LoadImaged, NormalizeIntensityd, Resized, ScaleIntensityd
from monai.visualize import GradCAM
from PIL import Image

from mimtl.data import TolerantDataset
from mimtl.data.datalist import list_images
from mimtl.data.dataset import error_reason
from mimtl.handlers import ClassificationWriter, GradCAMWriter, resolve_thresholds
from mimtl.transforms import EnsureGrayscaled

LABELS = ["Atelectasis", "Cardiomegaly", "Edema"]
LAYER = "features.denseblock2"
SIZE = 64
GOOD = ("a_gray8.png", "b_gray16.png", "c_rgb_gray.png", "h_slice.nii.gz")
FAILED = {
    "d_colour.png": "colour image",
    "e_nan.nii.gz": "NaN",
    "f_volume.nii.gz": "3D volume",
    "g_truncated.png": "truncated",
}


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    """A user's folder: 8/16-bit PNG, gray-as-RGB PNG, colour PNG, NaN NIfTI, CT volume, truncated PNG, 2D NIfTI."""
    import nibabel as nib

    root = tmp_path_factory.mktemp("films")
    yy, xx = np.mgrid[:40, :48]
    body = np.exp(-(((yy - 20) / 12.0) ** 2 + ((xx - 24) / 15.0) ** 2))  # a bright blob on dark
    g8 = np.round(body * 220).astype(np.uint8)
    Image.fromarray(g8).save(root / "a_gray8.png")
    Image.fromarray(np.round(body[::-1] * 60000).astype(np.uint16)).save(root / "b_gray16.png")
    Image.fromarray(np.stack([g8.T[:, ::-1]] * 3, -1)).save(root / "c_rgb_gray.png")
    Image.fromarray(np.stack([g8, 255 - g8, g8 // 2], -1)).save(root / "d_colour.png")
    nan = body.astype(np.float32)
    nan[5, 6] = np.nan
    nib.save(nib.Nifti1Image(nan[..., None], np.eye(4)), root / "e_nan.nii.gz")
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).random((20, 24, 8)).astype(np.float32), np.eye(4)),
        root / "f_volume.nii.gz",
    )
    (root / "g_truncated.png").write_bytes((root / "a_gray8.png").read_bytes()[:60])
    nib.save(nib.Nifti1Image(body[..., None].astype(np.float32) * 3 + 1, np.eye(4)), root / "h_slice.nii.gz")
    return root


def preprocessing():
    return Compose(
        [
            LoadImaged(keys="image", ensure_channel_first=True),
            EnsureGrayscaled(keys="image"),
            Resized(keys="image", spatial_size=(SIZE, SIZE)),
            ScaleIntensityd(keys="image", minv=0.0, maxv=1.0),
            NormalizeIntensityd(keys="image", subtrahend=0.5028, divisor=0.2902),
        ]
    )


def tiny_net(out_channels=len(LABELS), seed=0):
    torch.manual_seed(seed)
    return DenseNet(
        spatial_dims=2, in_channels=1, out_channels=out_channels, init_features=8, growth_rate=4, block_config=(2, 2)
    )


def evaluator(films, net, handlers, multi_label=True, num_workers=2, decollate=True):
    data = list_images(films, on_error="keep")
    dataset = TolerantDataset(data, preprocessing(), placeholder_shape=[1, SIZE, SIZE])
    loader = DataLoader(dataset, batch_size=2, shuffle=False, num_workers=num_workers)
    if decollate:
        post = Activationsd(keys="pred", sigmoid=multi_label, softmax=not multi_label)
    else:  # MONAI's transforms take one channel-first item: on a batch, softmax would run over dim 0
        post = Lambdad(keys="pred", func=lambda x: torch.softmax(x, 1) if not multi_label else torch.sigmoid(x))
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=net,
        postprocessing=post,
        val_handlers=handlers,
        decollate=decollate,
    )


def expected_probs(films, net, names, softmax=False):
    pre = preprocessing()
    x = torch.stack([pre({"image": str(films / n)})["image"].as_tensor() for n in names])
    training = net.training
    with torch.no_grad():
        logits = net.eval()(x)
    net.train(training)
    return (torch.softmax(logits, 1) if softmax else torch.sigmoid(logits)).numpy()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(films, tmp_path_factory):
    """One real SupervisedEvaluator run with both writers (DataLoader workers, batch 2)."""
    out = tmp_path_factory.mktemp("out")
    net = tiny_net()
    thresholds = {"Atelectasis": 0.3, "Edema": 0.6}
    writer = ClassificationWriter(out, LABELS, thresholds=thresholds)
    cams = GradCAMWriter(net, LAYER, out / "gradcam", LABELS, thresholds=thresholds, max_labels=2)
    evaluator(films, net, [writer, cams]).run()
    return out, net, writer, cams


def test_csv_lists_every_file_in_order_with_failure_reasons(films, run):
    out, net, writer, _ = run
    rows = read_csv(out / "predictions.csv")
    assert list(rows[0]) == ["file", *(f"prob_{n}" for n in LABELS), *(f"pred_{n}" for n in LABELS), "status"]
    assert [r["file"] for r in rows] == [str(p) for p in sorted(films.iterdir())]  # one row per input, in order
    for row in rows:
        name = row["file"].rsplit("/", 1)[-1]
        if name in FAILED:
            assert row["status"].startswith("failed: ") and FAILED[name] in row["status"], row
            assert all(row[f"prob_{n}"] == "" and row[f"pred_{n}"] == "" for n in LABELS)
        else:
            assert row["status"] == "ok"
    good = [r for r in rows if r["status"] == "ok"]
    assert [r["file"].rsplit("/", 1)[-1] for r in good] == list(GOOD)
    probs = np.array([[float(r[f"prob_{n}"]) for n in LABELS] for r in good])
    assert ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs, expected_probs(films, net, GOOD), atol=2e-6)
    thresholds = np.array([0.3, 0.5, 0.6])
    decisions = np.array([[int(r[f"pred_{n}"]) for n in LABELS] for r in good])
    np.testing.assert_array_equal(decisions, (probs >= thresholds).astype(int))
    reasons = {r["file"].rsplit("/", 1)[-1]: r["status"] for r in rows if r["status"] != "ok"}
    assert reasons["g_truncated.png"] == "failed: OSError: image file is truncated"
    assert "ImageFormatError: is a 3D volume of shape (20, 24, 8)" in reasons["f_volume.nii.gz"]


def test_summary_json(run):
    out, *_ = run
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["n_images"] == 8 and summary["n_ok"] == 4 and summary["n_failed"] == 4
    assert summary["thresholds"] == {"Atelectasis": 0.3, "Cardiomegaly": 0.5, "Edema": 0.6}
    assert summary["label_names"] == LABELS and summary["csv"] == "predictions.csv"
    assert sorted(f["file"].rsplit("/", 1)[-1] for f in summary["failed"]) == sorted(FAILED)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # written atomically


def test_gradcam_pngs_for_good_images_only(run, films):
    out, net, _, cams = run
    pngs = sorted(p.name for p in (out / "gradcam").iterdir())
    assert pngs == sorted(n.split(".")[0] + "_gradcam.png" for n in GOOD)
    probs = expected_probs(films, net, GOOD)
    for name, p in zip(GOOD, probs, strict=True):
        with Image.open(out / "gradcam" / (name.split(".")[0] + "_gradcam.png")) as im:
            n_panels = len(cams.select(p))
            assert 1 <= n_panels <= 2 and im.mode == "RGB"
            assert im.width == 256 * n_panels and 256 < im.height < 300  # square panels + a title strip
            pixels = np.asarray(im)
            assert pixels[40:].std() > 5  # an image, not a blank panel
    # the network is left as it was: training mode, grads enabled, no hooks
    assert net.training and all(p.requires_grad and p.grad is None for p in net.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())


def test_gradcam_maps_match_monai_gradcam():
    net = tiny_net()
    writer = GradCAMWriter(net, LAYER, "unused", LABELS)
    x = torch.randn(1, SIZE, SIZE)
    maps = writer.compute(x, [1, 0])
    assert maps.shape == (2, SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    reference = GradCAM(tiny_net(), LAYER, postprocessing=lambda m: m)  # same seed, same weights
    for k, c in enumerate([1, 0]):
        raw = reference(x[None], class_idx=c)[0, 0].detach().numpy()
        scaled = (raw - raw.min()) / (raw.max() - raw.min()) if raw.max() > raw.min() else np.zeros_like(raw)
        np.testing.assert_allclose(maps[k], scaled, atol=1e-5)


def test_gradcam_under_inference_mode_restores_network_state():
    net = tiny_net().eval()
    net.features.conv0.weight.requires_grad_(False)  # a frozen part
    saved_grad = torch.ones_like(net.class_layers.out.weight)
    net.class_layers.out.weight.grad = saved_grad
    writer = GradCAMWriter(net, LAYER, "unused", LABELS)
    with torch.inference_mode():
        x = MetaTensor(torch.randn(1, SIZE, SIZE))  # an inference tensor, as the evaluator's batch
        maps = writer.compute(x, [2])
    assert maps.shape == (1, SIZE, SIZE) and np.isfinite(maps).all()
    assert not net.training and not net.features.conv0.weight.requires_grad
    assert all(p.requires_grad for n, p in net.named_parameters() if n != "features.conv0.weight")
    assert net.class_layers.out.weight.grad is saved_grad


def test_select_labels():
    writer = GradCAMWriter(tiny_net(), LAYER, "unused", LABELS, thresholds=[0.5, 0.5, 0.5], max_labels=2)
    assert writer.select(np.array([0.9, 0.6, 0.7])) == [0, 2]  # above threshold, most probable first, max 2
    assert writer.select(np.array([0.1, 0.3, 0.2])) == [1]  # none: the top label


def test_duplicate_stems_get_unique_names(tmp_path):
    writer = GradCAMWriter(tiny_net(), LAYER, tmp_path, LABELS)
    names = [writer._output_path(p).name for p in ("/a/x.png", "/b/x.png", "/c/x.nii.gz", "/d/x_2.png")]
    assert names == ["x_gradcam.png", "x_2_gradcam.png", "x_3_gradcam.png", "x_2_2_gradcam.png"]


def test_gradcam_options():
    with pytest.raises(ValueError, match="not a layer of DenseNet.*class_layers"):
        GradCAMWriter(tiny_net(), "features.nope", "unused", LABELS)
    disabled = GradCAMWriter(tiny_net(), "features.nope", "unused", LABELS, enabled=False)  # not checked when off
    engine = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[], network=tiny_net())
    disabled.attach(engine)
    assert not engine.has_event_handler(disabled)


def test_multiclass_without_decollate(films, tmp_path):
    """Softmax output, batched (decollate=False) state, no workers: predicted_class column."""
    net = tiny_net(out_channels=3, seed=1)
    writer = ClassificationWriter(tmp_path, ["normal", "bacterial", "viral"], multi_label=False, filename="classes.csv")
    evaluator(films, net, [writer], multi_label=False, num_workers=0, decollate=False).run()
    rows = read_csv(tmp_path / "classes.csv")
    assert len(rows) == 8 and "predicted_class" in rows[0]
    good = [r for r in rows if r["status"] == "ok"]
    probs = expected_probs(films, net, GOOD, softmax=True)
    np.testing.assert_allclose([[float(r[f"prob_{n}"]) for n in writer.label_names] for r in good], probs, atol=2e-6)
    assert [r["predicted_class"] for r in good] == [writer.label_names[i] for i in probs.argmax(1)]
    assert all(r["predicted_class"] == "" for r in rows if r["status"] != "ok")


def test_logits_without_postprocessing_are_flagged(caplog):
    writer = ClassificationWriter("unused", LABELS)

    class State:
        batch = [{"image": MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "a.png"}), "error": ""}]
        output = [{"pred": torch.tensor([-2.0, 0.5, 3.0])}]

    with caplog.at_level(logging.WARNING, logger="mimtl.handlers.classification"):
        writer(type("Engine", (), {"state": State})())
    assert "Activationsd" in caplog.text and writer.rows[0]["file"] == "a.png"
    State.output = [{"pred": torch.tensor([0.5, 0.5])}]
    with pytest.raises(ValueError, match="2 outputs per image but 3 label_names"):
        writer(type("Engine", (), {"state": State})())


def test_resolve_thresholds():
    assert resolve_thresholds(None, LABELS) == [0.5, 0.5, 0.5]
    assert resolve_thresholds(0.3, LABELS) == [0.3, 0.3, 0.3]
    assert resolve_thresholds([0.1, 0.2, 0.3], LABELS) == [0.1, 0.2, 0.3]
    assert resolve_thresholds({"Edema": 0.7, "0": 0.2}, LABELS) == [0.2, 0.5, 0.7]
    with pytest.raises(ValueError, match="unknown labels"):
        resolve_thresholds({"Fracture": 0.5}, LABELS)
    with pytest.raises(ValueError, match="2 thresholds for 3 labels"):
        resolve_thresholds([0.5, 0.5], LABELS)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        resolve_thresholds(1.5, LABELS)


# --- TolerantDataset ------------------------------------------------------------------------


def test_tolerant_dataset_items(films, caplog):
    data = [{"image": str(films / n)} for n in ("a_gray8.png", "d_colour.png", "missing.png")]
    ds = TolerantDataset(
        data, preprocessing(), placeholder_shape=(1, SIZE, SIZE), placeholder_values={"label": torch.zeros(3)}
    )
    with caplog.at_level(logging.WARNING, logger="mimtl.data.dataset"):
        items = [ds[i] for i in range(3)] + [ds[1]]
    assert items[0]["error"] == "" and items[0]["image"].shape == (1, SIZE, SIZE)
    bad = items[1]
    assert bad["error"].startswith("ImageFormatError: is a colour image") and "label" in bad
    assert isinstance(bad["image"], MetaTensor) and bad["image"].meta["filename_or_obj"] == data[1]["image"]
    assert bad["image"].shape == (1, SIZE, SIZE) and not bad["image"].any()
    assert items[2]["error"] and "missing.png" in items[2]["image"].meta["filename_or_obj"]
    assert caplog.text.count("d_colour.png") == 1  # logged once per item
    assert "cannot be used, listed as failed" in caplog.text


def test_tolerant_dataset_collates_in_worker_processes(films):
    data = list_images(films, on_error="keep")
    ds = TolerantDataset(data, preprocessing(), placeholder_shape=(1, SIZE, SIZE))
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    errors = [e for b in batches for e in b["error"]]
    names = [n for b in batches for n in b["image"].meta["filename_or_obj"]]
    assert names == [d["image"] for d in data] and len(errors) == 8
    assert sum(bool(e) for e in errors) == len(FAILED)
    assert all(b["image"].shape[1:] == (1, SIZE, SIZE) for b in batches)


def test_tolerant_dataset_shape_per_key(films):
    """A placeholder per image key (the network input and a film copy for overlays), each its own shape."""
    data = [{"image": str(films / "d_colour.png")}]
    ds = TolerantDataset(data, preprocessing(), placeholder_shape={"image": [1, SIZE, SIZE], "copy": [1, 8, 6]})
    item = ds[0]
    assert ds.keys == ("image", "copy") and item["image"].shape == (1, SIZE, SIZE) and item["copy"].shape == (1, 8, 6)
    assert item["copy"].meta["filename_or_obj"] == data[0]["image"] and item["error"]
    with pytest.raises(ValueError, match=r"no shape for \['other'\]"):
        TolerantDataset(data, placeholder_shape={"image": [1, 4, 4]}, keys=["image", "other"])


def test_error_reason_unwraps_monai_and_keeps_one_line():
    try:
        try:
            raise OSError("image file\n is   truncated")
        except OSError as inner:
            raise RuntimeError("applying transform <LoadImaged>") from inner
    except RuntimeError as e:
        assert error_reason(e) == "OSError: image file is truncated"
    assert error_reason(ValueError("x" * 500)).endswith("...") and len(error_reason(ValueError("x" * 500))) < 320
