"""`mimtl demo`: every shipped bundle is evaluated and run, the ImageNet check is real."""

from mimtl.demo import run_demo


def test_demo_runs_each_bundle_and_the_imagenet_check(tiny_bundle, tmp_path, capsys):
    rows = run_demo(tmp_path / "demo", with_data=False)
    by_what = {r.what: r for r in rows}
    assert by_what["EfficientNet-Lite0 ImageNet weights"].result == "3/3 photos in their class (top-5)"
    assert (tmp_path / "demo" / "imagenet_check.png").is_file()
    assert by_what["tiny_cls evaluate"].ok and "val_accuracy=" in by_what["tiny_cls evaluate"].result
    assert by_what["tiny_cls inference"].ok
    assert (tmp_path / "demo" / "tiny_cls" / "inference" / "predictions.csv").is_file()
    out = capsys.readouterr().out
    assert "tiny_cls evaluate" in out and str((tmp_path / "demo").resolve()) in out


def test_demo_reports_a_bundle_without_weights(tiny_bundle, tmp_path):
    (tiny_bundle / "models" / "model.pt").unlink()
    rows = run_demo(tmp_path / "demo", with_imagenet=False, with_data=False)
    assert [(r.what, r.ok) for r in rows if r.what.startswith("tiny_cls")] == [("tiny_cls", False)]


def test_demo_datalist_builds_once_then_reuses(tmp_path):
    import time

    from mimtl.sim.demo import demo_datalist

    first = demo_datalist("brain", n=3, root=tmp_path, progress=False)
    assert first.parent.name == "brain-v2-seed0-n3" and (first.parent / "contact_sheet.png").is_file()
    stamp = first.stat().st_mtime_ns
    time.sleep(0.01)
    assert demo_datalist("brain", n=3, root=tmp_path) == first
    assert first.stat().st_mtime_ns == stamp  # reused, not rebuilt
