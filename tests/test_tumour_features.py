"""Stage 1 of the ACGAN method: the SegResNet, its encoder through the weights path, bottleneck pooling per case,
features + provenance on disk."""

from __future__ import annotations

import json

import pytest
import torch

from mimtl.data.feature_table import load_feature_table
from mimtl.engines.feature_extraction import extract_features, state_dict_sha256
from mimtl.networks.tumour_features import EmptyTumourMaskError, TumourFeatureExtractor, tumour_segresnet

TINY = {"init_filters": 8, "blocks_down": (1, 1), "blocks_up": (1,)}


def _case(seed: int, size: int = 16, tumour: bool = True):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(4, size, size, size, generator=g)
    mask = torch.zeros(1, size, size, size)
    if tumour:
        mask[:, 4:10, 5:11, 3:9] = 1
        image[:, 4:10, 5:11, 3:9] += 2
    return image, mask


def _batches(n=4, empty=()):
    items = [(*_case(i, tumour=i not in empty), f"case{i}", i % 2) for i in range(n)]
    return [
        {
            "image": torch.stack([items[i][0], items[i + 1][0]]),
            "label": torch.stack([items[i][1], items[i + 1][1]]),
            "name": [items[i][2], items[i + 1][2]],
            "grade_label": torch.tensor([items[i][3], items[i + 1][3]]),
        }
        for i in range(0, n, 2)
    ]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return tumour_segresnet(**TINY).eval()


def test_pooling_shapes_and_masking(net):
    image, mask = _case(0)
    x, m = image[None], mask[None]
    with torch.no_grad():
        f_mask = TumourFeatureExtractor(net, "mask")(x, m)
        f_glob = TumourFeatureExtractor(net, "global")(x, m)
        f_both = TumourFeatureExtractor(net, "both")(x, m)
        moved = TumourFeatureExtractor(net, "mask")(x, torch.roll(m, 5, dims=2))
    c = TumourFeatureExtractor(net).bottleneck_channels
    assert c == 16 and f_mask.shape == (1, c) and f_glob.shape == (1, c) and f_both.shape == (1, 2 * c)
    torch.testing.assert_close(f_both, torch.cat([f_mask, f_glob], 1))
    assert not torch.allclose(f_mask, f_glob) and not torch.allclose(f_mask, moved)  # the mask decides what is pooled
    assert TumourFeatureExtractor(net, "both").feature_names()[c] == "global_0"


def test_empty_mask_is_an_error_naming_the_case_or_a_documented_fallback(net):
    image, _ = _case(0)
    empty = torch.zeros(1, 1, 16, 16, 16)
    with pytest.raises(EmptyTumourMaskError, match="case BraTS_007: its tumour mask has no voxel"):
        TumourFeatureExtractor(net)(image[None], empty, ["BraTS_007"])
    fallback = TumourFeatureExtractor(net, empty_mask="global")
    with torch.no_grad():
        got = fallback(image[None], empty, ["BraTS_007"])
        torch.testing.assert_close(got, TumourFeatureExtractor(net, "global")(image[None]))
    assert fallback.empty_cases == ["BraTS_007"]
    with pytest.raises(ValueError, match="pooling must be one of"):
        TumourFeatureExtractor(net, pooling="max")


def test_features_written_with_provenance_and_deterministic(net, tmp_path):
    a = extract_features(
        TumourFeatureExtractor(net, "both"),
        _batches(),
        tmp_path / "a" / "features",
        progress=False,
        config={"pooling": "both"},
    )
    b = extract_features(
        TumourFeatureExtractor(net, "both"),
        _batches(),
        tmp_path / "b" / "features",
        progress=False,
        config={"pooling": "both"},
    )
    assert a.read_bytes() == b.read_bytes()  # same weights and data, same bytes
    prov = json.loads(a.with_suffix(".json").read_text())
    assert prov["case_ids"] == ["case0", "case1", "case2", "case3"] and prov["n_features"] == 32
    assert prov["model_sha256"] == state_dict_sha256(net) and prov["config"] == {"pooling": "both"}
    table = load_feature_table(a, label="label", expected_features=32)
    assert table.case_ids == prov["case_ids"] and table.labels.tolist() == [0, 1, 0, 1]
    other = tumour_segresnet(**TINY)
    assert state_dict_sha256(other) != prov["model_sha256"]


def test_prediction_mask_source_needs_no_label(net):
    image, _ = _case(1)
    ex = TumourFeatureExtractor(net, "mask", mask_source="prediction", empty_mask="global")
    with torch.no_grad():
        assert ex(image[None]).shape == (1, 16)


def test_encoder_loads_through_the_weights_path(net, tmp_path):
    """A whole SegResNet loads fully; a checkpoint with the encoder only (e.g. another bundle's) loads it and the
    decoder keeps its initialisation; a mismatched file is a WeightsError naming it."""
    from mimtl.networks.pretrained import WeightsError

    full = tmp_path / "full.pt"
    torch.save({"model": net.state_dict()}, full)
    loaded = tumour_segresnet(**TINY, weights=full)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    encoder_only = {f"encoder.{k}": v for k, v in net.state_dict().items() if k.startswith(("convInit", "down_layers"))}
    enc = tmp_path / "encoder.pt"
    torch.save(encoder_only, enc)
    torch.manual_seed(123)
    part = tumour_segresnet(**TINY, weights=enc)
    torch.testing.assert_close(
        part.state_dict()["down_layers.1.1.conv1.conv.weight"], net.state_dict()["down_layers.1.1.conv1.conv.weight"]
    )
    assert not torch.equal(part.state_dict()["conv_final.2.conv.weight"], net.state_dict()["conv_final.2.conv.weight"])
    wrong = tmp_path / "wrong.pt"
    torch.save(tumour_segresnet(init_filters=16, blocks_down=(1, 1), blocks_up=(1,)).state_dict(), wrong)
    with pytest.raises(WeightsError, match="wrong.pt"):
        tumour_segresnet(**TINY, weights=wrong)


def test_2d_slice_variant(tmp_path):
    net2d = tumour_segresnet(spatial_dims=2, **TINY).eval()
    x = torch.randn(2, 4, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 8:20] = 1
    with torch.no_grad():
        assert net2d(x).shape == (2, 4, 32, 32)
        assert TumourFeatureExtractor(net2d, "both")(x, mask).shape == (2, 32)
