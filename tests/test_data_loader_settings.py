"""DataLoader settings by machine: worker count by core count, pinned memory and non_blocking copies with a GPU only."""

from __future__ import annotations

import pytest
import torch

import mimtl
from mimtl.data.loader import MAX_WORKERS, auto_num_workers, usable_cores, use_pinned_memory

BUNDLES = ["xray_color_classification", "xray_landmark_detection"]


@pytest.mark.parametrize(
    "device, cores, expected",
    [
        ("cpu", 1, 0),
        ("cpu", 2, 0),  # the forward pass needs both cores
        ("cpu", 4, 0),
        ("cpu", 8, 1),
        ("cpu", 16, 2),
        ("cpu", 64, 4),
        ("cuda", 1, 0),
        ("cuda", 2, 1),  # one core feeds the GPU, the other decodes
        ("cuda", 16, MAX_WORKERS),
        ("cuda", 128, MAX_WORKERS),
    ],
)
def test_worker_count_follows_cores_and_device(device, cores, expected):
    assert auto_num_workers(device, cores=cores) == expected


def test_defaults_read_this_machine():
    cores = usable_cores()
    assert 1 <= cores <= (torch.multiprocessing.cpu_count() or cores)
    assert auto_num_workers("cpu") == auto_num_workers("cpu", cores=cores)
    assert use_pinned_memory("cpu") is False
    # no GPU here (tests run on CPU): pinning is off even when asked about CUDA
    assert use_pinned_memory("cuda") is torch.cuda.is_available()


@pytest.mark.parametrize("name", BUNDLES)
def test_inference_loader_on_this_cpu(name, monkeypatch):
    """The shipped inference configs resolve to the CPU path: no workers on 2 cores, no pinning, blocking copies."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("mimtl.data.loader.usable_cores", lambda: 2)
    parser = mimtl.load_bundle(name).parser("inference")
    assert parser.get_parsed_content("num_workers") == 0
    assert parser.get_parsed_content("pin_memory") is False
    config = parser.get("dataloader")
    assert config["num_workers"] == "@num_workers" and config["pin_memory"] == "@pin_memory"
    assert parser.get("evaluator")["non_blocking"] == "@pin_memory"


@pytest.mark.parametrize("name", BUNDLES)
def test_inference_loader_with_a_gpu(name, monkeypatch):
    """With a GPU the same configs give workers by core count, pinned batches and non_blocking copies."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("mimtl.data.loader.usable_cores", lambda: 16)
    parser = mimtl.load_bundle(name).parser("inference")
    assert parser.get_parsed_content("device").type == "cuda"
    assert parser.get_parsed_content("num_workers") == MAX_WORKERS
    assert parser.get_parsed_content("pin_memory") is True


@pytest.mark.parametrize("name", BUNDLES)
def test_an_explicit_worker_count_wins(name):
    parser = mimtl.load_bundle(name).parser("inference", num_workers=3)
    assert parser.get_parsed_content("num_workers") == 3


def test_prefetch_starts_the_next_batch_before_handing_out_the_current():
    from mimtl.data.loader import prefetch

    events = []
    out = []
    for batch in prefetch(range(3), start=lambda b: events.append(f"start {b}") or b, finish=lambda b: f"ready {b}"):
        events.append(f"use {batch}")
        out.append(batch)
    assert out == ["ready 0", "ready 1", "ready 2"]
    assert events == ["start 0", "start 1", "use ready 0", "start 2", "use ready 1", "use ready 2"]
    assert list(prefetch([], start=lambda b: b)) == []


def test_prefetch_loader_is_the_plain_loader_off_cuda(monkeypatch):
    """On a CPU (or a CUDA device name without CUDA) the batches are MONAI DataLoader's, unmoved."""
    from monai.data import DataLoader

    from mimtl.data.loader import PrefetchDataLoader

    data = [{"image": torch.full((1, 2, 2), float(i)), "name": f"f{i}"} for i in range(5)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cpu", "cuda"):
        loader = PrefetchDataLoader(data, device=device, batch_size=2)
        assert isinstance(loader, DataLoader) and len(loader) == 3 and not loader.copies_ahead
        batches = list(loader)
        assert [b["name"] for b in batches] == [["f0", "f1"], ["f2", "f3"], ["f4"]]
        assert torch.equal(batches[2]["image"], data[4]["image"][None]) and batches[0]["image"].device.type == "cpu"


@pytest.mark.parametrize("name", BUNDLES)
def test_inference_prefetches_on_the_network_device(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    parser = mimtl.load_bundle(name).parser("inference")
    assert parser.get("dataloader")["_target_"] == "mimtl.data.loader.PrefetchDataLoader"
    assert parser.get("dataloader")["device"] == "@device"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="copies on a CUDA stream need a GPU")
def test_prefetch_loader_copies_images_to_the_gpu():
    from mimtl.data.loader import PrefetchDataLoader

    data = [{"image": torch.full((1, 2, 2), float(i)), "meta": torch.tensor(i)} for i in range(5)]
    loader = PrefetchDataLoader(data, device="cuda", batch_size=2, pin_memory=True)
    batches = list(loader)
    assert all(b["image"].is_cuda and not b["meta"].is_cuda for b in batches)
    assert torch.equal(torch.cat([b["image"] for b in batches]).cpu(), torch.stack([d["image"] for d in data]))


def test_batches_are_prepared_ahead_in_a_thread():
    """With no worker process the next batch is made by another thread while the caller holds the current one."""
    import threading

    from mimtl.data.loader import in_background

    made: list[tuple[int, str]] = []
    ready = threading.Event()

    def batches():
        for i in range(4):
            made.append((i, threading.current_thread().name))
            if i == 1:
                ready.set()
            yield i

    items = in_background(batches(), depth=1)
    assert next(items) == 0
    assert ready.wait(timeout=30), "batch 1 was not prepared while batch 0 was in use"
    assert list(items) == [1, 2, 3]
    assert {name for _, name in made} == {"mimtl-prepare-ahead"}


def test_an_error_while_preparing_reaches_the_caller_at_its_batch():
    from mimtl.data.loader import in_background

    def batches():
        yield 0
        raise OSError("film.dcm: truncated")

    items = in_background(batches())
    assert next(items) == 0
    with pytest.raises(OSError, match="film.dcm: truncated"):
        next(items)
    with pytest.raises(ValueError, match="depth"):
        next(in_background([], depth=0))


def test_stopping_early_stops_the_preparing_thread():
    import threading

    from mimtl.data.loader import in_background

    items = in_background(iter(range(1000)), depth=2)
    assert next(items) == 0
    items.close()  # an engine terminated early: the generator is closed
    assert not any(t.name == "mimtl-prepare-ahead" and t.is_alive() for t in threading.enumerate())


def test_prefetch_loader_prepares_ahead_when_asked():
    from mimtl.data.loader import PrefetchDataLoader

    data = [{"image": torch.full((1, 2, 2), float(i))} for i in range(5)]
    assert not PrefetchDataLoader(data, batch_size=2).prepare_ahead
    batches = list(PrefetchDataLoader(data, batch_size=2, prepare_ahead=True))
    assert [b["image"][:, 0, 0, 0].tolist() for b in batches] == [[0.0, 1.0], [2.0, 3.0], [4.0]]
