"""Folding eval-mode batch norms into the convolutions before them (mimtl.inferers.fold)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mimtl
from mimtl.inferers import AcceleratedInferer
from mimtl.inferers.fold import fold_batch_norms


def _trained_norms(net: nn.Module) -> nn.Module:
    """Give every norm running statistics and an affine map far from the identity."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return net.eval()


def _norms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_conv_then_norm_folds_to_the_same_function():
    net = _trained_norms(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)
        )
    )
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
        assert fold_batch_norms(net, x) == 2
        assert _norms(net) == 0 and isinstance(net[1], nn.Identity)
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)


class _Reused(nn.Module):
    """The convolution's output also feeds a skip connection: folding the norm would change it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


def test_a_conv_output_used_elsewhere_is_left_alone():
    net = _trained_norms(_Reused())
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = net(x)
        assert fold_batch_norms(net, x) == 0
        assert isinstance(net.norm, nn.BatchNorm2d)
        torch.testing.assert_close(net(x), expected)


def test_norm_before_conv_and_hooked_modules_are_not_folded():
    net = _trained_norms(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    seen = []
    net[2].register_forward_hook(lambda m, a, out: seen.append(out))
    assert fold_batch_norms(net, torch.randn(1, 3, 8, 8)) == 0
    assert _norms(net) == 2 and len(seen) == 1


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)), torch.randn(1, 1, 4, 4))


@pytest.mark.parametrize("name", ["xray_color_classification", "xray_landmark_detection", "xray_lung_segmentation"])
def test_bundle_networks_fold_every_norm_after_a_conv_and_keep_their_output(name):
    parser = mimtl.load_bundle(name).parser("inference")
    net = _trained_norms(parser.get_parsed_content("network_def"))
    size = int(parser.get_parsed_content("image_size"))
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        expected = net(x)
        before = _norms(net)
        folded = fold_batch_norms(net, x[:1])
        assert folded > 0 and _norms(net) == before - folded
        got = net(x)
    expected = expected if isinstance(expected, torch.Tensor) else expected[0]
    got = got if isinstance(got, torch.Tensor) else got[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_inferer_folds_once_in_eval_mode_only():
    net = _trained_norms(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)))
    inferer = AcceleratedInferer(amp=False, fold_batch_norm=True)
    x = torch.randn(2, 1, 8, 8)
    net.train()
    inferer(x, net)
    assert _norms(net) == 1  # a training forward keeps its norms
    net.eval()
    with torch.no_grad():
        expected = AcceleratedInferer(amp=False)(x, net)
        out = inferer(x, net)
    assert _norms(net) == 0
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name",
    ["xray_color_classification", "xray_landmark_detection", "xray_lung_segmentation", "xray_tile_ae_pretraining"],
)
def test_only_inference_folds(name):
    bundle = mimtl.load_bundle(name)
    assert bundle.parser("inference").get_parsed_content("inferer").fold_batch_norm
    assert not bundle.parser("train").get_parsed_content("inferer").fold_batch_norm


def test_inferer_folds_on_a_window_when_a_sliding_window_cuts_the_film():
    from monai.inferers import SlidingWindowInferer

    net = _trained_norms(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))).to(
        memory_format=torch.channels_last
    )
    film = torch.randn(1, 1, 16, 40)
    with torch.no_grad():
        expected = SlidingWindowInferer(roi_size=(16, 16), overlap=0.25)(film, net)
        inner = SlidingWindowInferer(roi_size=(16, 16), overlap=0.25)
        out = AcceleratedInferer(amp=False, channels_last=True, fold_batch_norm=True, inner=inner)(film, net)
    assert _norms(net) == 0
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_loading_weights_again_unfolds_and_the_next_run_folds_again():
    """A workflow run twice loads its checkpoint into the folded network at its second start."""
    from mimtl.inferers.fold import is_folded, unfold_batch_norms

    net = _trained_norms(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    inferer = AcceleratedInferer(amp=False, fold_batch_norm=True)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected = net(x)
        inferer(x, net)
        assert is_folded(net) and _norms(net) == 0
        net.load_state_dict(state)  # the checkpoint's names: the originals are back first
        assert not is_folded(net) and _norms(net) == 1
        torch.testing.assert_close(net(x), expected)
        torch.testing.assert_close(inferer(x, net), expected, rtol=1e-5, atol=1e-5)
        assert is_folded(net)
        assert unfold_batch_norms(net) and not unfold_batch_norms(net)
        assert list(net.state_dict()) == list(state)


@pytest.mark.slow
def test_an_inference_workflow_runs_twice(tmp_path):
    """The second run's CheckpointLoader loads into the network the first run folded."""
    from mimtl.bundle.domain import split_files
    from mimtl.inferers.fold import is_folded

    bundle = mimtl.load_bundle("xray_color_classification")
    films = split_files(bundle, "test")[:3]
    wf = bundle.workflow("inference", configure_logging=False, input=films, output_dir=str(tmp_path), num_workers=0)
    wf.initialize()
    for _ in range(2):
        wf.evaluator.run()
        assert is_folded(wf.evaluator.network)
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + len(films)
