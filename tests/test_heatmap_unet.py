"""HeatmapUNet: encoders, encoder initialisation (scratch / ImageNet / weight file / other checkpoint), TorchScript."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import FlexibleUNet
from torch import nn

import mimtl.bundle
from mimtl.networks import (
    DenseNetEncoder,
    EfficientNetLiteEncoder,
    HeatmapUNet,
    ImageNetResNetEncoder,
    create_backbone,
    get_efficientnet_lite_weights_path,
    load_efficientnet_lite_imagenet,
)

ENCODERS = ["efficientnet-lite0", "resnet18", "densenet121"]
CLS_CKPT = Path(__file__).resolve().parents[1] / "bundles" / "xray_color_classification" / "models" / "model.pt"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _perturb(module: nn.Module) -> nn.Module:
    """Non-trivial values everywhere (a fresh net has BN 1/0, running stats 0/1), so copies are really checked."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0.0, 0.1)
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)
    return module


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ------------------------------------------------------------------------------------------------ architecture
@pytest.mark.parametrize("encoder", ENCODERS)
def test_output_shape_parts_and_channels_last(encoder):
    net = HeatmapUNet(num_landmarks=5, encoder=encoder, in_channels=1).eval()
    assert net.encoder_init == "scratch"
    assert net.encoder is net.net.encoder and net.decoder is net.net.decoder
    assert net.segmentation_head is net.net.segmentation_head
    assert net.segmentation_head[0].out_channels == 5
    expected_type = {"efficientnet-lite0": EfficientNetLiteEncoder, "resnet18": ImageNetResNetEncoder}
    assert isinstance(net.encoder, expected_type.get(encoder, DenseNetEncoder))
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 5, 64, 96)
        feats = net.encoder(x)
        assert [f.shape[-1] for f in feats] == [48, 24, 12, 6, 3]  # strides 2 ... 32
        net_cl = net.to(memory_format=torch.channels_last)
        y_cl = net_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, atol=1e-5, rtol=1e-4)


def test_densenet_registered_in_flexible_unet():
    net = FlexibleUNet(in_channels=1, out_channels=2, backbone="densenet121")
    assert isinstance(net.encoder, DenseNetEncoder)
    assert net.encoder.feature_channels == (64, 256, 512, 1024, 1024)
    assert DenseNetEncoder.num_channels_per_output()[1:] == [(64, 256, 512, 1280, 1664), (64, 256, 512, 1792, 1920)]
    with pytest.raises(ValueError, match="weight"):
        DenseNetEncoder(pretrained=True)


def test_resnet_encoder_has_torchvision_layout():
    # MONAI registers resnet18 with zero-padding shortcuts (no downsample tensors); torchvision has 1x1-conv ones
    keys = HeatmapUNet(2, encoder="resnet18").encoder.state_dict()
    assert tuple(keys["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    assert "layer2.0.downsample.0.bias" not in keys and "fc.weight" not in keys


def test_input_checks():
    net = HeatmapUNet(2, encoder="resnet18").eval()
    with pytest.raises(ValueError, match=re.escape("multiples of 32, got input shape [1, 1, 48, 64]")):
        net(torch.randn(1, 1, 48, 64))
    with pytest.raises(ValueError, match="spatial dims"):
        net(torch.randn(1, 64, 64))
    scripted = torch.jit.script(net)
    with pytest.raises(torch.jit.Error, match=re.escape("got input shape [1, 1, 64, 40]")):
        scripted(torch.randn(1, 1, 64, 40))
    with pytest.raises(ValueError, match="unknown encoder 'vgg16'"):
        HeatmapUNet(2, encoder="vgg16")
    with pytest.raises(ValueError, match="num_landmarks"):
        HeatmapUNet(0)


# ------------------------------------------------------------------------------------------------ TorchScript
@pytest.mark.parametrize("encoder", ENCODERS)
def test_torchscript_round_trip(encoder):
    # an ADN of another order scripted first in the same process must not change the decoder's ADNs
    # (TorchScript shares one compiled type between Sequentials whose children differ only in order)
    other = Convolution(
        2, 8, 8, act=("relu", {"inplace": True}), norm=("batch", {"eps": 1e-3}), dropout=0.0, adn_ordering="AND"
    )
    torch.jit.script(other)
    net = _perturb(HeatmapUNet(3, encoder=encoder, in_channels=1)).eval()
    x = torch.randn(1, 1, 64, 64)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(scripted(x), expected, atol=1e-6, rtol=1e-5)
        if encoder == "efficientnet-lite0":  # save / load of the compiled module too
            buffer = io.BytesIO()
            torch.jit.save(scripted, buffer)
            buffer.seek(0)
            torch.testing.assert_close(torch.jit.load(buffer)(x), expected, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ ImageNet / scratch
def test_imagenet_weights_are_the_packaged_ones():
    scratch = HeatmapUNet(3, weights=None)
    imagenet = HeatmapUNet(3, weights="imagenet")
    assert imagenet.encoder_init == "imagenet:efficientnet-lite0"
    assert HeatmapUNet(3, weights="scratch").encoder_init == "scratch"
    reference = EfficientNetLiteEncoder("lite0", in_channels=1)
    load_efficientnet_lite_imagenet(reference, "lite0")
    _assert_same_state(imagenet.encoder, reference)
    assert not torch.equal(scratch.encoder.stem[1].weight, imagenet.encoder.stem[1].weight)
    # the packaged file itself (efficientnet-pytorch names): matched by name through the key map, same tensors
    from_file = HeatmapUNet(3, weights=get_efficientnet_lite_weights_path("lite0"))
    assert from_file.encoder_init.endswith("(240/240 tensors at top level)")
    _assert_same_state(from_file.encoder, reference)
    # pairing by layer order is an opt-in, and gives the same tensors here (num_batches_tracked aside)
    by_position = HeatmapUNet(3, weights=get_efficientnet_lite_weights_path("lite0"), weights_match="position")
    assert by_position.encoder_init.endswith("(240/240 tensors by position)")
    for k, v in reference.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(by_position.encoder.state_dict()[k], v), k


def test_encoder_weights_is_a_deprecated_alias():
    with pytest.warns(DeprecationWarning, match=r"encoder_weights=\.\.\.\) is deprecated: use weights="):
        old = HeatmapUNet(3, encoder_weights="imagenet")
    assert old.encoder_init == "imagenet:efficientnet-lite0"
    with pytest.warns(DeprecationWarning):
        assert HeatmapUNet(3, encoder_weights=None).encoder_init == "scratch"
    with pytest.raises(TypeError, match="not both"):
        HeatmapUNet(3, weights="imagenet", encoder_weights=None)


def test_imagenet_refused_without_offline_weights():
    with pytest.raises(ValueError, match="state-dict file"):
        HeatmapUNet(3, encoder="resnet18", weights="imagenet")
    with pytest.raises(ValueError, match="state-dict file"):
        HeatmapUNet(3, encoder="densenet121", weights="imagenet")


# ------------------------------------------------------------------------------------------------ in-domain transfer
@pytest.mark.skipif(not CLS_CKPT.is_file(), reason="classification bundle weights not present")
def test_encoder_from_classification_bundle_checkpoint():
    ckpt = torch.load(CLS_CKPT, map_location="cpu", weights_only=True)
    net = HeatmapUNet(3, encoder="efficientnet-lite0", in_channels=1, weights=str(CLS_CKPT))
    assert net.encoder_init == f"file:{CLS_CKPT} (240/240 tensors under 'backbone.net.')"
    enc = net.encoder.state_dict()
    # RGB stem behind the color module, summed for the gray input
    assert ckpt["backbone.net.stem.1.weight"].shape[1] == 3
    torch.testing.assert_close(enc["stem.1.weight"], ckpt["backbone.net.stem.1.weight"].sum(1, keepdim=True))
    for key in [
        "stem.2.running_var",
        "stages.3.1.dw_conv.weight",
        "stages.6.0.project_norm.bias",
        "stages.5.3.expand.1.num_batches_tracked",
    ]:
        assert torch.equal(enc[key], ckpt["backbone.net." + key]), key
    # the same through the bundle name, resolved by mimtl.bundle (networks do not resolve bundles)
    by_name = HeatmapUNet(3, in_channels=1, weights=mimtl.bundle.weights_path("bundle:xray_color_classification"))
    _assert_same_state(by_name.encoder, net.encoder)
    with pytest.raises(ValueError, match=re.escape("mimtl.bundle.weights_path('bundle:xray_color_classification')")):
        HeatmapUNet(3, in_channels=1, weights="bundle:xray_color_classification")


@pytest.mark.parametrize("wrap", ["bare", "model", "network", "module"])
def test_encoder_from_heatmap_unet_checkpoint(tmp_path, wrap):
    src = _perturb(HeatmapUNet(4, encoder="resnet18", in_channels=1))
    state = src.state_dict()
    if wrap == "module":  # DataParallel prefix
        state = {f"module.{k}": v for k, v in state.items()}
    elif wrap != "bare":  # MONAI CheckpointSaver: one entry per saved object
        state = {wrap: state, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}
    path = tmp_path / "model.pt"
    torch.save(state, path)
    dst = HeatmapUNet(2, encoder="resnet18", in_channels=1, weights=path)
    # the DataParallel "module." prefix is removed when the file is read
    assert dst.encoder_init == f"file:{path} (100/100 tensors under 'net.encoder.')"
    _assert_same_state(dst.encoder, src.encoder)  # num_batches_tracked included
    assert not torch.equal(
        dst.decoder.blocks[0].convs.conv_0.conv.weight, src.decoder.blocks[0].convs.conv_0.conv.weight
    )


def test_partial_match_warns_and_loads(tmp_path):
    src = _perturb(HeatmapUNet(2, encoder="efficientnet-lite0"))
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("net.encoder.stages.6.")}
    torch.save(state, tmp_path / "partial.pt")
    with pytest.warns(UserWarning, match=r"15 of the 240 tensors .* stages\.6\.0"):
        dst = HeatmapUNet(2, weights=tmp_path / "partial.pt")
    assert "225/240" in dst.encoder_init
    assert torch.equal(dst.encoder.stages[5][0].dw_conv.weight, src.encoder.stages[5][0].dw_conv.weight)


# ------------------------------------------------------------------------------------------------ natural-image files
def test_torchvision_resnet18_file(tmp_path):
    # torchvision layout: the MONAI adapter of create_backbone has torchvision's names; no num_batches_tracked
    src = _perturb(create_backbone("resnet18", num_classes=1000))
    tv = {k[len("net.") :]: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(tv) == 102 and tuple(tv["layer3.0.downsample.0.weight"].shape) == (256, 128, 1, 1)
    assert tuple(tv["fc.weight"].shape) == (1000, 512)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(tv, path)
    gray = HeatmapUNet(3, encoder="resnet18", in_channels=1, weights=str(path)).eval()
    rgb = HeatmapUNet(3, encoder="resnet18", in_channels=3, weights=str(path)).eval()
    assert gray.encoder_init == f"file:{path} (100/100 tensors at top level)"
    assert torch.equal(rgb.encoder.layer4[1].bn2.running_mean, tv["layer4.1.bn2.running_mean"])
    torch.testing.assert_close(gray.encoder.conv1.weight, tv["conv1.weight"].sum(1, keepdim=True), atol=0, rtol=0)
    # so a gray image gives the same features as that image in RGB. In float64 with a fixed input:
    # the only difference left is the float32 rounding of the summed stem weight (up to ~3e-5 by layer4)
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(gray.double().encoder(x), rgb.double().encoder(x.repeat(1, 3, 1, 1)), strict=True):
            torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_torchvision_densenet121_file(tmp_path):
    src = _perturb(create_backbone("densenet121", num_classes=1000))
    tv = {}
    for key, value in src.state_dict().items():  # MONAI -> torchvision names, written out by hand
        key = key[len("net.") :]
        if key.endswith("num_batches_tracked"):
            continue
        key = key.replace("class_layers.out.", "classifier.")
        key = re.sub(r"(denselayer\d+)\.layers\.", r"\1.", key)
        tv[key] = value
    assert tuple(tv["features.denseblock2.denselayer3.norm1.weight"].shape) == (192,)
    torch.save({"state_dict": tv}, tmp_path / "densenet121.pth")
    net = HeatmapUNet(3, encoder="densenet121", in_channels=1, weights=tmp_path / "densenet121.pth")
    assert "(604/604 tensors at top level)" in net.encoder_init
    enc = net.encoder.state_dict()
    ref = src.net.state_dict()
    assert torch.equal(
        enc["features.denseblock3.denselayer7.layers.conv2.weight"],
        ref["features.denseblock3.denselayer7.layers.conv2.weight"],
    )
    torch.testing.assert_close(enc["features.conv0.weight"], ref["features.conv0.weight"].sum(1, keepdim=True))


# ------------------------------------------------------------------------------------------------ errors
def test_wrong_files_are_refused_naming_the_file(tmp_path):
    random = tmp_path / "random_tensors.pt"
    torch.save({"a.weight": torch.randn(3, 3), "b.bias": torch.randn(7)}, random)
    with pytest.raises(ValueError, match=r"random_tensors\.pt.*0/240 .*missing keys: stem\.1\.weight"):
        HeatmapUNet(3, weights=random)
    # a real checkpoint, but of another encoder
    other = tmp_path / "lite0_unet.pt"
    torch.save(HeatmapUNet(3).state_dict(), other)
    with pytest.raises(ValueError, match=r"lite0_unet\.pt' into the resnet18 encoder: 0/100"):
        HeatmapUNet(3, encoder="resnet18", weights=other)
    not_torch = tmp_path / "notes.txt"
    not_torch.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        HeatmapUNet(3, weights=not_torch)
    no_state = tmp_path / "no_state.pt"
    torch.save({"epoch": 3, "lr": 0.1}, no_state)
    with pytest.raises(ValueError, match=r"no_state\.pt.*holds no state dict"):
        HeatmapUNet(3, weights=no_state)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        HeatmapUNet(3, weights=str(tmp_path / "missing.pth"))
