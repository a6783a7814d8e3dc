"""Segmentation parts of issue 15: the network's reconstruction switch, the loss, the label transforms,
the segmentation datalist checks and the per-film measurements. (The bundle's workflows run in
tests/test_bundle_contract.py on the tiny data of tests/bundle_checks.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mimtl.data import DataValidationError, load_segmentation_datalist
from mimtl.handlers import SegmentationWriter, cardiothoracic_ratio
from mimtl.losses import SegReconLoss
from mimtl.networks import AuxReconSegNet
from mimtl.transforms import ApplyToValidd, LabelMapToChannels, LabelMapToChannelsd


# ---------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("decoder", ["unet", "psp"])
def test_reconstruction_off_leaves_no_trace(decoder):
    torch.manual_seed(0)
    off = AuxReconSegNet(3, decoder=decoder, reconstruction=False)
    on = AuxReconSegNet(3, decoder=decoder, reconstruction=True)
    assert not any(k.startswith("recon") for k in off.state_dict())
    assert any(k.startswith("recon_decoder.") for k in on.state_dict())
    assert sum(p.numel() for p in on.parameters()) > sum(p.numel() for p in off.parameters())
    # the scripted graph of the network without it holds no reconstruction operation
    graph = str(torch.jit.script(off).inlined_graph)
    assert "recon_decoder" not in graph and "recon_head" not in graph
    assert "recon_decoder" in str(torch.jit.script(on).inlined_graph)  # (the check can see it)
    x = torch.rand(2, 1, 64, 96)
    assert off.train()(x).shape == (2, 3, 64, 96)
    assert on.train()(x).shape == (2, 4, 64, 96)  # K masks + the reconstruction, in training
    assert on.eval()(x).shape == (2, 3, 64, 96)  # masks only for inference and export
    # the same weights give the same masks with and without the branch
    off.load_state_dict({k: v for k, v in on.state_dict().items() if not k.startswith("recon")}, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(off.eval()(x), on.eval()(x))


def test_wrong_input_size_names_the_stride():
    with pytest.raises(ValueError, match="multiples of 32"):
        AuxReconSegNet(2)(torch.rand(1, 1, 50, 64))
    with pytest.raises(ValueError, match="decoder must be one of"):
        AuxReconSegNet(2, decoder="fpn")


# ---------------------------------------------------------------------------------------- loss
def test_seg_recon_loss_on_known_inputs_and_no_threshold_before_it():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    logits = torch.where(target > 0, 20.0, -20.0)  # confident and right: Dice ~0, BCE ~0
    assert SegReconLoss()(logits, target).item() < 1e-3
    wrong = -logits
    assert SegReconLoss()(wrong, target).item() > 10  # BCE of 20 logits + Dice ~1
    # reconstruction: target image 0.5 everywhere, reconstruction logit 0 -> sigmoid 0.5: no recon loss
    image = torch.full((1, 1, 4, 4), 0.5)
    pred = torch.cat([logits, torch.zeros(1, 1, 4, 4)], 1)
    seg_only = SegReconLoss()(logits, target)
    both = SegReconLoss(reconstruction=True, reconstruction_weight=0.1)
    assert both(pred, torch.cat([target, image], 1)).item() == pytest.approx(seg_only.item(), abs=1e-6)
    # image 1: |0.5 - 1| = 0.5 (L1), 0.25 (MSE): + 0.1 * 0.75
    value = both(pred, torch.cat([target, torch.ones_like(image)], 1)).item()
    assert value == pytest.approx(seg_only.item() + 0.075, abs=1e-5)
    with pytest.raises(ValueError, match="differ"):
        both(pred, target)


def test_the_segmentation_head_gets_a_gradient_from_the_loss():
    net = AuxReconSegNet(2, reconstruction=True).train()
    x = torch.rand(2, 1, 64, 64)
    target = torch.cat([(torch.rand(2, 2, 64, 64) > 0.5).float(), x], 1)
    SegReconLoss(reconstruction=True)(net(x), target).backward()
    assert net.seg_head[0].weight.grad.abs().sum() > 0
    assert net.recon_head[0].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------- transforms
def test_label_map_to_channels():
    label = torch.tensor([[[0, 1], [2, 3]]])
    out = LabelMapToChannels([1, 2, 3])(label)
    assert out.shape == (3, 2, 2) and out.dtype == torch.float32
    assert out[0].tolist() == [[0, 1], [0, 0]] and out[2].tolist() == [[0, 0], [0, 1]]
    merged = LabelMapToChannelsd("label", [[1, 2]])({"label": label})["label"]
    assert merged.tolist() == [[[0, 1], [1, 0]]]
    with pytest.raises(ValueError, match="one-channel"):
        LabelMapToChannels([1])(torch.zeros(2, 2, 2))


def test_apply_to_valid_passes_failed_items_through():
    def boom(d):
        raise AssertionError("called on a failed item")

    failed = {"pred": torch.zeros(1), "error": "ImageReadError: broken"}
    assert ApplyToValidd(boom)(failed) == failed
    assert ApplyToValidd(lambda d: {**d, "pred": d["pred"] + 1})({"pred": torch.zeros(1), "error": ""})["pred"] == 1


# ---------------------------------------------------------------------------------------- datalist checks
LABELS = {"0": "background", "1": "left lung", "2": "right lung", "3": "heart"}


def _pair(root, name, image_shape=(20, 24), label=None):
    Image.fromarray(np.full(image_shape, 100, np.uint8)).save(root / f"{name}.png")
    if label is None:
        label = np.zeros(image_shape, np.uint8)
        label[5:10, 5:10] = 1
    Image.fromarray(label).save(root / f"{name}_mask.png")
    return {"image": f"{name}.png", "label": f"{name}_mask.png"}


def _datalist(root, items, labels=LABELS):
    path = root / "datalist.json"
    path.write_text(json.dumps({"labels": labels, "training": items}))
    return path


def test_a_good_segmentation_datalist_loads(tmp_path):
    items = load_segmentation_datalist(_datalist(tmp_path, [_pair(tmp_path, "a"), _pair(tmp_path, "b")]))
    assert [i["label"] for i in items] == [str(tmp_path / "a_mask.png"), str(tmp_path / "b_mask.png")]


def test_every_bad_mask_is_named_with_its_reason(tmp_path):
    bad_values = np.zeros((20, 24), np.uint8)
    bad_values[2:8, 2:8] = 128  # a smoothed / non-label value
    items = [
        _pair(tmp_path, "good"),
        _pair(tmp_path, "size", label=np.ones((10, 24), np.uint8)),
        _pair(tmp_path, "values", label=bad_values),
        _pair(tmp_path, "empty", label=np.zeros((20, 24), np.uint8)),
    ]
    with pytest.raises(DataValidationError) as err:
        load_segmentation_datalist(_datalist(tmp_path, items))
    message = str(err.value)
    assert "3 problem(s)" in message and "good" not in message
    assert (
        f"mask {tmp_path / 'size_mask.png'} is (24, 10) pixels but its image {tmp_path / 'size.png'} is (24, 20)"
        in message
    )
    assert f"mask {tmp_path / 'values_mask.png'} holds values other than its label values [0, 1, 2, 3]: 128" in message
    assert f"mask {tmp_path / 'empty_mask.png'} is empty" in message
    # an empty mask is accepted when asked for
    assert len(load_segmentation_datalist(_datalist(tmp_path, [items[0], items[3]]), allow_empty=True)) == 2


def test_a_volume_as_image_is_named_as_such(tmp_path):
    import nibabel as nib

    item = _pair(tmp_path, "a")
    nib.save(nib.Nifti1Image(np.zeros((24, 20, 6), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    item["image"] = "vol.nii.gz"
    with pytest.raises(DataValidationError, match=f"image {tmp_path / 'vol.nii.gz'} is a 3D volume of shape"):
        load_segmentation_datalist(_datalist(tmp_path, [item]))


def test_binary_masks_without_a_label_mapping_may_be_0_1_or_0_255(tmp_path):
    mask = np.zeros((20, 24), np.uint8)
    mask[3:9, 3:9] = 255
    path = _datalist(tmp_path, [_pair(tmp_path, "a", label=mask)], labels=None)
    assert len(load_segmentation_datalist(path)) == 1
    with pytest.raises(DataValidationError, match="label values \\[0, 1\\]"):
        load_segmentation_datalist(path, values=[0, 1])


def test_an_image_without_mask_in_a_training_datalist_is_named(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "lonely.png")
    path = _datalist(tmp_path, [_pair(tmp_path, "a"), {"image": "lonely.png"}])
    with pytest.raises(DataValidationError, match="entry 1: image lonely.png has no mask \\('label' key\\)"):
        load_segmentation_datalist(path)


def test_a_missing_mask_file_is_named(tmp_path):
    item = _pair(tmp_path, "a")
    (tmp_path / "a_mask.png").unlink()
    with pytest.raises(DataValidationError, match="a_mask.png"):
        load_segmentation_datalist(_datalist(tmp_path, [item]))


# ---------------------------------------------------------------------------------------- measurements
def test_cardiothoracic_ratio_of_known_shapes():
    lungs = np.zeros((40, 60), bool)
    lungs[5:35, 5:25] = True  # right lung, columns 5..24
    lungs[5:35, 35:55] = True  # left lung, columns 35..54: thorax 50 px wide
    heart = np.zeros((40, 60), bool)
    heart[25:35, 20:40] = True  # 20 px wide
    assert cardiothoracic_ratio(heart, lungs) == pytest.approx(20 / 50)
    assert np.isnan(cardiothoracic_ratio(np.zeros_like(heart), lungs))


def test_writer_measures_areas_in_mm2_and_the_ctr(tmp_path):
    writer = SegmentationWriter(tmp_path, structures=["left_lung", "right_lung", "heart"])
    masks = np.zeros((3, 40, 60), bool)  # (K, rows, columns) as seen ...
    masks[0, 5:35, 35:55] = True
    masks[1, 5:35, 5:25] = True
    masks[2, 25:35, 20:40] = True
    cells = writer.measure(masks.transpose(0, 2, 1), np.array([0.5, 0.5]))  # ... given in MONAI's (x, y) order
    assert cells["left_lung_px"] == 600 and cells["left_lung_mm2"] == "150.0"
    assert cells["heart_px"] == 200 and cells["ctr"] == "0.400"
    unknown = writer.measure(masks.transpose(0, 2, 1), None)
    assert unknown["heart_mm2"] == "" and unknown["heart_px"] == 200


def test_encoder_bn_momentum_is_a_switch_outside_the_checkpoint():
    """EfficientNet's TF-style momentum (0.01) by default; 0.1 on request, for every encoder batch
    norm only; the weights and buffers (what checkpoints hold) are the same either way."""
    from mimtl.networks import AuxReconSegNet, TileAutoencoder
    from mimtl.networks.encoders import set_bn_momentum

    def momenta(module):
        return {m.momentum for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}

    default = AuxReconSegNet(out_channels=2)
    fast = AuxReconSegNet(out_channels=2, encoder_bn_momentum=0.1)
    assert momenta(default.encoder) == {0.01} and momenta(fast.encoder) == {0.1}
    assert momenta(fast.unet_decoder) == momenta(default.unet_decoder)
    assert default.state_dict().keys() == fast.state_dict().keys()
    assert momenta(TileAutoencoder(encoder_bn_momentum=0.1).encoder) == {0.1}
    with pytest.raises(ValueError, match="momentum"):
        set_bn_momentum(default, 0.0)
    # with 0.1 a few training-mode passes over new data move the running mean most of the way
    x = torch.full((2, 1, 64, 64), 3.0)
    for net in (default, fast):
        net.train()
        with torch.no_grad():
            for _ in range(10):
                net.encoder(x)
    first_bn = next(m for m in fast.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    slow_bn = next(m for m in default.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert first_bn.running_var.mean() != slow_bn.running_var.mean()
    assert abs(float(first_bn.running_mean.abs().mean())) > 5 * abs(float(slow_bn.running_mean.abs().mean()))
