"""AcceleratedInferer: its switches change layout and precision, never the result beyond bf16 rounding."""

from __future__ import annotations

import logging

import pytest
import torch

from mimtl.inferers import AcceleratedInferer
from mimtl.inferers import accelerated as acc


class _Probe(torch.nn.Module):
    """Records the autocast state and memory format it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((torch.is_autocast_enabled("cpu"), x.is_contiguous(memory_format=torch.channels_last)))
        return self.conv(x)


@pytest.mark.parametrize("native, expected", [(True, True), (False, False)])
def test_auto_uses_bf16_only_where_the_cpu_has_it(monkeypatch, caplog, native, expected):
    monkeypatch.setattr(acc, "_cpu_flag", lambda name: native and name == "_is_avx512_bf16_supported")
    net, inferer = _Probe(), AcceleratedInferer(amp="auto", channels_last=True)
    x = torch.rand(2, 1, 8, 8)
    with caplog.at_level(logging.INFO, logger="mimtl.inferers.accelerated"):
        out1, out2 = inferer(x, net), inferer(x, net)
    assert net.seen == [(expected, True), (expected, True)]
    assert out1.dtype == torch.float32 and torch.equal(out1, out2)
    decisions = [r.getMessage() for r in caplog.records if "amp=auto" in r.getMessage()]
    assert len(decisions) == 1  # logged once, not per batch
    assert ("AVX-512 BF16" in decisions[0]) if native else ("without native bf16" in decisions[0])


@pytest.mark.parametrize("amp", [True, False])
def test_explicit_amp_wins_over_the_hardware(monkeypatch, amp):
    monkeypatch.setattr(acc, "_cpu_flag", lambda name: not amp)  # the opposite of what is asked
    net = _Probe()
    AcceleratedInferer(amp=amp)(torch.rand(1, 1, 8, 8), net)
    assert [autocast for autocast, _ in net.seen] == [amp]


def test_auto_is_the_default_and_bad_values_are_refused():
    assert AcceleratedInferer().amp == "auto"
    for bad in ("yes", "bf16", None):
        with pytest.raises(ValueError, match="amp must be"):
            AcceleratedInferer(amp=bad)


def test_results_agree_with_the_plain_forward():
    torch.manual_seed(0)
    net, x = _Probe().eval(), torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        plain = net(x)
        fast = AcceleratedInferer(amp=False, channels_last=True)(x, net.to(memory_format=torch.channels_last))
        bf16 = AcceleratedInferer(amp=True, channels_last=True)(x, net)
    torch.testing.assert_close(fast, plain)
    torch.testing.assert_close(bf16, plain, atol=2e-2, rtol=2e-2)


def test_native_bf16_on_this_machine_matches_torch_probes():
    """Whatever this CPU is, the decision follows torch's own probes (recorded by the benchmarks too)."""
    on, why = acc.native_bf16("cpu")
    probes = [getattr(torch.cpu, n, lambda: False)() for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    assert on == any(probes) and isinstance(why, str) and why


def test_an_inner_sliding_window_runs_under_the_fast_settings():
    """inner=SlidingWindowInferer: the same windows and blending, each window channels_last and under
    autocast when amp is on; with every switch off, exactly the sliding window alone."""
    from monai.inferers import SlidingWindowInferer

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)).eval()
    x = torch.rand(1, 1, 40, 72)
    window = SlidingWindowInferer(roi_size=(32, 32), sw_batch_size=2, overlap=0.25, mode="gaussian")
    seen = []

    def spy(t):
        seen.append((t.is_contiguous(memory_format=torch.channels_last), torch.is_autocast_cpu_enabled()))
        return net(t)

    with torch.no_grad():
        plain = window(x, net)
        same = AcceleratedInferer(amp=False, channels_last=False, inner=window)(x, net)
        fast = AcceleratedInferer(amp=True, channels_last=True, inner=window)(x, spy)
    assert torch.equal(plain, same)
    assert seen and all(layout and autocast for layout, autocast in seen)
    assert fast.dtype == torch.float32 and fast.shape == plain.shape
    assert torch.allclose(fast, plain, atol=0.05)
