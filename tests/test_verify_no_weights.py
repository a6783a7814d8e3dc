"""A bundle that declares it ships no weights yet (metadata ``"weights": null``) passes ``mimtl verify``."""

from __future__ import annotations

import json
import shutil

from mimtl.bundle import load_bundle, verify_bundle


def test_a_bundle_declaring_no_weights_verifies_and_says_so(tmp_path):
    copy = tmp_path / "xray_tile_ae_pretraining"
    shutil.copytree(load_bundle("xray_tile_ae_pretraining").path, copy, ignore=shutil.ignore_patterns("models", "eval"))
    (copy / "models").mkdir()
    meta_file = copy / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["weights"] = None  # the declaration (the shipped bundle now has weights)
    meta_file.write_text(json.dumps(meta))
    results = {r.name: r for r in verify_bundle(load_bundle(copy))}
    assert all(r.ok for r in results.values()), [str(r) for r in results.values()]
    assert "no weights ship" in results["TorchScript export + reload"].detail
    # without the declaration the missing file fails, as for any bundle
    del meta["weights"]
    meta_file.write_text(json.dumps(meta))
    results = {r.name: r for r in verify_bundle(load_bundle(copy))}
    assert not results["required files"].ok and "models/model.pt" in results["required files"].detail
    assert not results["TorchScript export + reload"].ok
