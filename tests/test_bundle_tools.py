"""Finding, loading, verifying and exporting bundles, on a tiny bundle built by the tests."""

import json

import pytest
import torch
import yaml

import mimtl
from mimtl.bundle import BundleError, ConfigKeyError, export_bundle, load_bundle, load_checkpoint, verify_bundle
from mimtl.bundle.verify import VERIFY_CHECKS


def _failed(results):
    return {r.name: r.detail for r in results if not r.ok}


def test_find_and_list(tiny_bundle):
    names = [b.name for b in mimtl.list_bundles()]
    assert names[0] == "tiny_cls"  # $MIMTL_BUNDLE_PATH first, then the shipped bundles
    assert "xray_color_classification" in names
    assert mimtl.find_bundle("tiny_cls") == tiny_bundle.resolve()
    assert load_bundle(str(tiny_bundle)).name == "tiny_cls"  # a path works too
    with pytest.raises(BundleError, match="Known bundles: tiny_cls"):
        load_bundle("no_such_bundle")


def test_verify_passes_on_a_complete_bundle(tiny_bundle):
    results = verify_bundle(load_bundle("tiny_cls"))
    assert _failed(results) == {}
    assert [r.name for r in results] == list(VERIFY_CHECKS)  # every check ran


@pytest.mark.parametrize(
    "breakage,check,detail",
    [
        (lambda b: (b / "LICENSE").unlink(), "required files", "LICENSE"),
        (lambda b: _edit_meta(b, version="0.2.0"), "metadata", "changelog"),
        (lambda b: _edit_meta(b, task=None), "metadata", "task"),
        (lambda b: _edit_meta(b, network_data_format={"inputs": {}, "outputs": {}}), "metadata", ""),
        (lambda b: _drop_id(b, "inference", "evaluator"), "inference properties", "evaluator"),
        (lambda b: _append(b, "train", "extra: $__import__('os').getcwd()\n"), "config safety audit", "__import__"),
        (lambda b: _wrong_weights(b), "TorchScript export + reload", "size mismatch"),
        (
            lambda b: (b / "models" / "model.pt").write_bytes(b"not a checkpoint"),
            "TorchScript export + reload",
            "model.pt",
        ),
    ],
)
def test_verify_reports_each_breakage(tiny_bundle, breakage, check, detail):
    breakage(tiny_bundle)
    failed = _failed(verify_bundle(load_bundle("tiny_cls")))
    assert check in failed, failed
    assert detail in failed[check]


def _edit_meta(b, **changes):
    f = b / "configs" / "metadata.json"
    meta = json.loads(f.read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    f.write_text(json.dumps(meta))


def _drop_id(b, config, key):
    f = b / "configs" / f"{config}.yaml"
    content = yaml.safe_load(f.read_text())
    del content[key]
    f.write_text(yaml.safe_dump(content))


def _append(b, config, text):
    f = b / "configs" / f"{config}.yaml"
    f.write_text(f.read_text() + text)


def _wrong_weights(b):
    sd = torch.load(b / "models" / "model.pt", weights_only=True)
    key = next(k for k, v in sd.items() if v.ndim == 4)
    sd[key] = torch.zeros(1, 1, 1, 1)
    torch.save(sd, b / "models" / "model.pt")


def test_network_loads_weights_offline(tiny_bundle):
    b = load_bundle("tiny_cls")
    net = b.network()
    assert not net.training
    want = load_checkpoint(b.weights_path)
    got = net.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_network_refuses_missing_weights(tiny_bundle):
    (tiny_bundle / "models" / "model.pt").unlink()
    with pytest.raises(BundleError, match="no weights"):
        load_bundle("tiny_cls").network()


def test_monai_bundle_load_works_offline(tiny_bundle):
    """MONAI's own loader finds the weights locally and never tries to download."""
    from monai.bundle import load

    b = load_bundle("tiny_cls")
    net = b.parser("inference").get_parsed_content("network_def")
    loaded = load("tiny_cls", model=net, bundle_dir=str(tiny_bundle.parent), source="github")
    assert torch.equal(
        loaded.state_dict()["features.conv0.weight"], load_checkpoint(b.weights_path)["features.conv0.weight"]
    )


def test_checkpoint_with_several_entries(tiny_bundle, tmp_path):
    sd = load_checkpoint(tiny_bundle / "models" / "model.pt")
    torch.save({"model": sd, "optimizer": {"state": {}}}, tmp_path / "ckpt.pt")
    assert load_checkpoint(tmp_path / "ckpt.pt").keys() == sd.keys()
    torch.save({"a": sd, "b": sd}, tmp_path / "ambiguous.pt")
    with pytest.raises(BundleError, match="say which"):
        load_checkpoint(tmp_path / "ambiguous.pt")


def test_override_keys_are_checked(tiny_bundle):
    b = load_bundle("tiny_cls")
    with pytest.raises(ConfigKeyError, match="Did you mean: train::trainer::max_epochs"):
        b.workflow("train", **{"train::trainer::max_epoch": 2})
    with pytest.raises(ConfigKeyError, match="parent 'trian::trainer' does not exist"):
        b.workflow("train", allow_new_keys=True, **{"trian::trainer::max_epochs": 2})
    wf = b.workflow("train", initialize=True, **{"train#trainer#max_epochs": 3})  # MONAI's '#' works too
    assert wf.trainer.state.max_epochs == 3  # nested override reached the trainer


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export(tiny_bundle, tmp_path, fmt):
    b = load_bundle("tiny_cls")
    out = export_bundle(b, fmt, out=tmp_path / "out" / f"net.{fmt}")
    assert out.is_file() and out.stat().st_size > 1000
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left behind
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        want = b.network()(x)
    if fmt == "torchscript":
        got = torch.jit.load(str(out))(x)
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})[0])
        want = want[:1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_monai_verify_metadata_cli_offline(tiny_bundle):
    """The documented MONAI command validates against the shipped schema without downloading."""
    import subprocess
    import sys

    from mimtl.bundle import METADATA_SCHEMA

    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "verify_metadata",
        "--meta_file",
        str(tiny_bundle / "configs" / "metadata.json"),
        "--filepath",
        str(METADATA_SCHEMA),
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "metadata is verified with no error" in ok.stdout + ok.stderr
    _edit_meta(tiny_bundle, authors=None)
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "'authors' is a required property" in bad.stderr


def test_verify_all_is_offline_and_builds_nothing(tmp_path):
    """``mimtl verify --all`` on an empty cache with no package index reachable passes and leaves the cache empty."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "MIMTL_CACHE_DIR": str(cache),
        "PIP_NO_INDEX": "1",  # any wheel download (the demo data's sources) would fail
        "PIP_FIND_LINKS": str(tmp_path / "no_wheels"),
        "MIMTL_WHEELHOUSE": str(tmp_path / "no_wheels"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("MIMTL_BUNDLE_PATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "mimtl", "verify", "--all"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bundle(s) passed" in done.stdout
    assert not cache.exists() or not any(cache.rglob("*")), sorted(cache.rglob("*"))[:5]
