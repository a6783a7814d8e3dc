"""The one pretrained-weights path: reading, unwrapping, stem adaptation, matching by name / position, errors."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import mimtl.bundle
from mimtl.bundle import BundleError, load_checkpoint
from mimtl.bundle.bundle import read_checkpoint
from mimtl.networks import (
    ColorizedClassifier,
    EfficientNetLite,
    EfficientNetLiteEncoder,
    HeatmapUNet,
    WeightsError,
    adapt_input_conv,
    create_backbone,
    get_efficientnet_lite_weights_path,
    load_efficientnet_lite_imagenet,
    load_pretrained,
    read_state_dict,
)
from mimtl.networks.pretrained import NOT_GIVEN, deprecated_alias, parse_weights


class _Tiny(nn.Module):
    """conv (stem) + BN + linear classifier: small enough to write files by hand."""

    def __init__(self, in_channels: int = 3, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)


def _filled(module: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return module


def _same(a: dict, b: dict, skip: tuple[str, ...] = ()) -> None:
    for k, v in a.items():
        if not k.startswith(skip):
            assert torch.equal(v, b[k]), k


# ------------------------------------------------------------------------------------------------ matching by name
def test_name_matching_with_a_key_map(tmp_path):
    src = _filled(_Tiny())
    # another layout: "features.0" for the conv, "features.1" for the BN, "head" for the classifier
    renamed = {"conv": "features.0", "bn": "features.1", "fc": "head"}
    file_state = {}
    for k, v in src.state_dict().items():
        layer, _, tensor = k.partition(".")
        file_state[f"{renamed[layer]}.{tensor}"] = v
    torch.save(file_state, tmp_path / "other_layout.pt")
    back = {v: k for k, v in renamed.items()}

    def key_map(key: str) -> str | None:
        layer, _, tensor = key.rpartition(".")
        return f"{back[layer]}.{tensor}" if layer in back else key

    dst = _Tiny()
    result = load_pretrained(dst, tmp_path / "other_layout.pt", key_map=key_map)
    _same(dst.state_dict(), src.state_dict())
    assert result.describe() == "7/7 tensors at top level" and not result.missing and not result.unexpected
    # a mapping works too; a key map returning None drops the key (a per-network filter)
    dst2 = _Tiny(num_classes=9)
    tensors = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    mapping = {f"{v}.{t}": f"{k}.{t}" for k, v in renamed.items() for t in tensors}
    with pytest.warns(UserWarning, match=r"2 of the 7 tensors of _Tiny are not loaded .*missing keys: fc\.weight"):
        result = load_pretrained(
            dst2, file_state, key_map=lambda k: None if k.startswith("head.") else mapping.get(k, k), min_match=0.5
        )
    bn = ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert result.loaded == ["conv.weight", *bn] and result.unexpected == []


def test_prefixes_optional_groups_and_optional_buffers(tmp_path):
    src = _filled(_Tiny())
    # a checkpoint of a larger model holding the part under "backbone.net.", without num_batches_tracked
    ckpt = {f"backbone.net.{k}": v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    ckpt["color.conv.weight"] = torch.zeros(3, 1, 3, 3)
    dst = _Tiny()
    result = load_pretrained(dst, {"model": ckpt}, prefixes=("", "backbone.net."), optional_groups=("fc.",))
    assert result.prefix == "backbone.net." and result.describe() == "7/7 tensors under 'backbone.net.'"
    _same(dst.state_dict(), src.state_dict(), skip=("bn.num_batches_tracked",))
    # a classifier of another size is skipped as a group (and its file tensors are not "unexpected")
    other = _Tiny(num_classes=2)
    fresh_fc = other.fc.weight.detach().clone()
    result = load_pretrained(other, ckpt, prefixes="any", optional_groups=("fc.",))
    assert result.skipped == ["fc.weight", "fc.bias"] and result.unexpected == []
    assert torch.equal(other.fc.weight, fresh_fc) and torch.equal(other.conv.weight, src.conv.weight)


# ------------------------------------------------------------------------------------------------ by position
def test_position_matching_only_when_opted_in(tmp_path):
    src = _filled(_Tiny())
    # no names in common, and (as in torchvision files) no num_batches_tracked
    tensors = [v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")]
    scrambled = {f"layer_{i:02d}": v for i, v in enumerate(tensors)}
    torch.save(scrambled, tmp_path / "anonymous.pt")
    with pytest.raises(WeightsError, match=r"anonymous\.pt' into _Tiny: 0/7 of its tensors matched by name"):
        load_pretrained(_Tiny(), tmp_path / "anonymous.pt")
    dst = _Tiny()
    result = load_pretrained(dst, tmp_path / "anonymous.pt", match="position")
    assert result.describe() == "7/7 tensors by position"
    _same(dst.state_dict(), src.state_dict(), skip=("bn.num_batches_tracked",))  # counters are never paired
    # position pairing still checks every shape
    with pytest.raises(WeightsError, match=r"shape mismatches .*layer_05 \(4, 8\) vs fc\.weight \(3, 8\)"):
        load_pretrained(_Tiny(num_classes=3), tmp_path / "anonymous.pt", match="position")
    with pytest.raises(ValueError, match="'name' or 'position'"):
        load_pretrained(_Tiny(), tmp_path / "anonymous.pt", match="order")
    # the networks expose the opt-in as weights_match
    values = [v for v in create_backbone("resnet18").net.state_dict().values() if v.is_floating_point()]
    torch.save({f"t{i:03d}": v for i, v in enumerate(values)}, tmp_path / "resnet_anon.pt")
    with pytest.raises(ValueError, match="0/100"):
        create_backbone("resnet18", weights=tmp_path / "resnet_anon.pt")
    create_backbone("resnet18", weights=tmp_path / "resnet_anon.pt", weights_match="position")


# ------------------------------------------------------------------------------------------------ errors
def test_error_names_the_file_and_the_keys(tmp_path):
    src = _filled(_Tiny())
    state = dict(src.state_dict())
    state["bn.weight"] = torch.ones(5)  # shape mismatch
    del state["conv.weight"]  # missing
    for i in range(7):
        state[f"extra.{i}.weight"] = torch.zeros(1)  # unexpected, more than are shown
    torch.save(state, tmp_path / "wrong.pt")
    with pytest.raises(WeightsError) as info:
        load_pretrained(_Tiny(), tmp_path / "wrong.pt", name="the tiny net", hint="Expected a tiny net.")
    msg = str(info.value)
    assert f"cannot load {str(tmp_path / 'wrong.pt')!r} into the tiny net: 5/7 of its tensors matched" in msg
    assert "missing keys: conv.weight (1)" in msg
    assert "shape mismatches (file vs model): bn.weight (5,) vs bn.weight (8,) (1)" in msg
    assert re.search(r"unexpected keys: extra\.0\.weight, .*extra\.4\.weight, \.\.\. \(7 in all\)", msg)
    assert msg.endswith("Expected a tiny net.")
    assert isinstance(info.value, ValueError)  # WeightsError is a ValueError
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_pretrained(_Tiny(), tmp_path / "nothing.pt")


# ------------------------------------------------------------------------------------------------ stem adaptation
def test_adapt_input_conv_for_1_2_and_3_channels():
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    assert adapt_input_conv(w, 3) is w
    gray = adapt_input_conv(w, 1)
    assert gray.shape == (8, 1, 3, 3) and torch.equal(gray, w.sum(1, keepdim=True))
    two = adapt_input_conv(w, 2)
    assert two.shape == (8, 2, 3, 3) and torch.equal(two[:, 0], two[:, 1])
    torch.testing.assert_close(two[:, :1] * 2, w.sum(1, keepdim=True))
    # what it is for: an image with C equal channels gives what the RGB stem gives for it in RGB
    x = torch.randn(1, 1, 9, 9, dtype=torch.float64)
    rgb = nn.functional.conv2d(x.repeat(1, 3, 1, 1), w.double())
    for c, adapted in [(1, gray), (2, two)]:  # up to the float32 rounding of the summed kernel
        out = nn.functional.conv2d(x.repeat(1, c, 1, 1), adapted.double())
        torch.testing.assert_close(out, rgb, atol=1e-5, rtol=1e-4)
    # a gray stem into an RGB model spreads evenly; 3D kernels work the same way
    assert torch.equal(adapt_input_conv(gray, 3), gray.repeat(1, 3, 1, 1) / 3)
    assert adapt_input_conv(torch.ones(4, 3, 2, 2, 2), 1).shape == (4, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="convolution kernel"):
        adapt_input_conv(torch.ones(4, 3), 1)


def test_stem_adapted_when_loading(tmp_path):
    src = _filled(_Tiny(in_channels=3))
    torch.save(src.state_dict(), tmp_path / "rgb.pt")
    for c in (1, 2):
        dst = _Tiny(in_channels=c)
        load_pretrained(dst, tmp_path / "rgb.pt")
        assert torch.equal(dst.conv.weight, adapt_input_conv(src.conv.weight, c))
    with pytest.raises(WeightsError, match=r"conv\.weight \(8, 3, 3, 3\) vs conv\.weight \(8, 1, 3, 3\)"):
        load_pretrained(_Tiny(in_channels=1), tmp_path / "rgb.pt", adapt_stem=False)


# ------------------------------------------------------------------------------------------------ reading
@pytest.mark.parametrize("wrap", ["bare", "model", "state_dict", "network", "nested", "module", "epoch"])
def test_unwrapping_containers_and_module_prefix(tmp_path, wrap):
    state = _filled(_Tiny()).state_dict()
    obj = {
        "bare": state,
        "model": {"model": state, "optimizer": {"state": {}, "param_groups": []}},
        "state_dict": {"state_dict": state, "epoch": 3},
        "network": {"network": state},
        "nested": {"model": {"state_dict": state}},
        "module": {"state_dict": {f"module.{k}": v for k, v in state.items()}},  # DataParallel / DDP
        "epoch": {"model": state, "epoch": torch.tensor(3)},  # a wrapper entry wins over stray tensors
    }[wrap]
    torch.save(obj, tmp_path / "ckpt.pt")
    read = read_state_dict(tmp_path / "ckpt.pt")
    assert list(read) == list(state)
    _same(read, state)
    # mimtl.bundle reads checkpoints through the same function
    assert list(load_checkpoint(tmp_path / "ckpt.pt")) == list(state)


def test_containers_without_one_state_dict_are_refused(tmp_path):
    state = _Tiny().state_dict()
    torch.save({"a": state, "b": state}, tmp_path / "two.pt")
    with pytest.raises(WeightsError, match=r"two\.pt.*say which holds the network"):
        read_state_dict(tmp_path / "two.pt")
    assert list(read_state_dict(tmp_path / "two.pt", key="b")) == list(state)
    with pytest.raises(BundleError, match="say which"):
        load_checkpoint(tmp_path / "two.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_state.pt")
    with pytest.raises(WeightsError, match=r"no_state\.pt.*holds no state dict"):
        read_state_dict(tmp_path / "no_state.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"notes\.txt.*as weights"):
        read_state_dict(tmp_path / "notes.txt")


class _Payload:
    """Unpickling this would call ``_touch`` (code in a pickle): weights_only must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path: str) -> None:
    Path(path).write_text("pickled code ran")


def test_weights_only_refuses_custom_classes(tmp_path):
    marker = tmp_path / "ran.txt"
    torch.save({"conv.weight": torch.zeros(1), "payload": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match=r"evil\.pt.*weights_only=True.*never pickled code or custom classes"):
        load_pretrained(_Tiny(), tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt"):  # through a network's option too
        create_backbone("resnet18", weights=tmp_path / "evil.pt")
    with pytest.raises(BundleError, match=r"evil\.pt.*never pickled code"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ the option
def test_bundle_names_are_not_resolved_by_networks():
    hint = re.escape("mimtl.bundle.weights_path('bundle:xray_color_classification')")
    with pytest.raises(ValueError, match=hint):
        HeatmapUNet(2, weights="bundle:xray_color_classification")
    with pytest.raises(ValueError, match=hint):
        create_backbone("efficientnet-lite0", weights="bundle:xray_color_classification")
    with pytest.raises(ValueError, match=hint):
        ColorizedClassifier("gray", "efficientnet-lite0", weights="bundle:xray_color_classification")
    with pytest.raises(ValueError, match=re.escape("weights: {_target_: mimtl.bundle.weights_path, spec:")):
        parse_weights("bundle:other")


def test_one_spelling_of_the_option(tmp_path):
    assert parse_weights(None) is None and parse_weights("scratch") is None and parse_weights("Scratch") is None
    assert parse_weights("imagenet") == "imagenet" and parse_weights("ImageNet") == "imagenet"
    (tmp_path / "w.pt").write_bytes(b"")
    assert parse_weights(tmp_path / "w.pt") == str(tmp_path / "w.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        parse_weights(tmp_path / "missing.pt", owner="create_backbone")
    assert create_backbone("resnet18", weights="scratch").name == "resnet18"
    assert HeatmapUNet(2, weights="scratch").encoder_init == "scratch"


def test_deprecated_alias():
    assert deprecated_alias("imagenet", None, NOT_GIVEN, "encoder_weights", "Net") == "imagenet"
    with pytest.warns(DeprecationWarning, match=r"Net\(encoder_weights=\.\.\.\) is deprecated: use weights="):
        assert deprecated_alias(None, None, "imagenet", "encoder_weights", "Net") == "imagenet"
    with pytest.raises(TypeError, match="not both"):
        deprecated_alias("imagenet", None, None, "encoder_weights", "Net")


def _fake_bundle(root: Path, name: str, weights: bool) -> Path:
    bundle = root / name
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"name": name, "version": "0.1"}))
    if weights:
        (bundle / "models").mkdir()
        torch.save(_Tiny().state_dict(), bundle / "models" / "model.pt")
    return bundle


def test_bundle_weights_path(tmp_path, monkeypatch):
    _fake_bundle(tmp_path, "trained_one", weights=True)
    _fake_bundle(tmp_path, "untrained_one", weights=False)
    monkeypatch.setenv("MIMTL_BUNDLE_PATH", str(tmp_path))
    path = mimtl.bundle.weights_path("bundle:trained_one")
    assert path == str((tmp_path / "trained_one" / "models" / "model.pt").resolve())
    assert list(read_state_dict(path)) == list(_Tiny().state_dict())
    for value in (None, "imagenet", "scratch", "/some/file.pt", tmp_path):  # everything else passes through
        assert mimtl.bundle.weights_path(value) is value
    with pytest.raises(BundleError, match="No bundle named 'no_such_bundle'. Known bundles: .*trained_one"):
        mimtl.bundle.weights_path("bundle:no_such_bundle")
    with pytest.raises(BundleError, match=r"'untrained_one' .*has no trained weights: .*model\.pt does not exist"):
        mimtl.bundle.weights_path("bundle:untrained_one")
    with pytest.raises(BundleError, match="names no bundle"):
        mimtl.bundle.weights_path("bundle:")


# ------------------------------------------------------------------------------------------------ shipped numerics
def _digest(state: dict, skip: tuple[str, ...] = ()) -> str:
    m = hashlib.sha256()
    for k, v in state.items():
        if any(s in k for s in skip):
            continue
        m.update(k.encode())
        m.update(str(tuple(v.shape)).encode())
        m.update(str(v.dtype).encode())
        m.update(v.detach().contiguous().numpy().tobytes())
    return m.hexdigest()[:16]


def _old_positional_load(model: nn.Module, variant: str) -> dict[str, torch.Tensor]:
    """The loader before the one weights path, condensed: the packaged file's tensors paired with the model's in
    registration order (body, head, fc), the RGB stem summed and spread over the model's input channels."""
    source = torch.load(get_efficientnet_lite_weights_path(variant), map_location="cpu", weights_only=True)
    target = model.state_dict()
    src = [k for k in source if not k.startswith(("_conv_head.", "_bn1.", "_fc."))]
    tgt = [k for k in target if not k.startswith(("head.", "fc."))]
    if "head.0.weight" in target:
        src += [k for k in source if k.startswith(("_conv_head.", "_bn1.", "_fc."))]
        tgt += [k for k in target if k.startswith(("head.", "fc."))]
    out = {}
    for t, s in zip(tgt, src, strict=True):
        value = source[s]
        if t == tgt[0] and value.shape[1] != target[t].shape[1]:
            c = target[t].shape[1]
            value = value.sum(dim=1, keepdim=True).repeat(1, c, 1, 1) / c
        out[t] = value
    return out


#: digests of the tensors the loader gave before the one weights path (3 channels: plain copies of the file)
_BEFORE = {"lite0-full": "5aa4771d2e40bf44", "lite0-encoder": "7f4b286d168460ec"}


def test_packaged_imagenet_weights_are_the_same_tensors_as_before():
    full = EfficientNetLite("lite0", num_classes=1000)
    assert load_efficientnet_lite_imagenet(full, "lite0") == []
    assert _digest(full.state_dict()) == _BEFORE["lite0-full"]
    encoder = EfficientNetLiteEncoder("lite0", in_channels=3, pretrained=True)
    assert _digest(encoder.state_dict()) == _BEFORE["lite0-encoder"]
    for c in (1, 2, 3):  # the stem adaptation reproduces the old arithmetic bit for bit
        for model in (
            EfficientNetLite("lite0", in_channels=c, num_classes=1000),
            EfficientNetLiteEncoder("lite0", in_channels=c),
        ):
            expected = _old_positional_load(model, "lite0")
            load_efficientnet_lite_imagenet(model, "lite0")
            state = model.state_dict()
            assert set(expected) == set(state)
            for k, v in expected.items():
                assert torch.equal(state[k], v), (c, k)
    # the networks built on it: HeatmapUNet's encoder and the classifier's backbone
    expected = _old_positional_load(EfficientNetLiteEncoder("lite0", in_channels=1), "lite0")
    _same(HeatmapUNet(2, in_channels=1, weights="imagenet").encoder.state_dict(), expected)
    backbone = ColorizedClassifier("deconv", "efficientnet-lite0", num_classes=5).backbone
    expected = _old_positional_load(EfficientNetLite("lite0", num_classes=1000), "lite0")
    _same({k[len("net.") :]: v for k, v in backbone.state_dict().items()}, expected, skip=("fc.",))
