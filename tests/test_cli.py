"""The mimtl command line, end to end on a tiny bundle: exit codes scripts can trust."""

import json
import os
import re
import subprocess
import sys

import torch

from mimtl.cli import main


def run_cli(*args, env=None):
    """Run ``python -m mimtl`` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "mimtl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def test_help_and_version():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "exit codes" in out.stdout and "verify" in out.stdout
    assert run_cli("--version").stdout.startswith("mimtl ")
    assert run_cli("no-such-verb").returncode == 2


def test_list_and_info(tiny_bundle, capsys):
    assert main(["list"]) == 0
    assert re.search(r"^tiny_cls\s+0\.1\.0\s+yes", capsys.readouterr().out, re.MULTILINE)
    assert main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["weights"] is True
    assert main(["info", "tiny_cls"]) == 0
    out = capsys.readouterr().out
    assert "input 'image': image magnitude, 1 ch, 32x32" in out
    assert main(["info", "nope"]) == 2
    assert "No bundle named 'nope'" in capsys.readouterr().err


def test_train_evaluate_inference(tiny_bundle, capsys):
    before = (tiny_bundle / "models" / "model.pt").read_bytes()
    assert main(["run", "tiny_cls", "train", "--set", "train::trainer::max_epochs=2"]) == 0
    assert (tiny_bundle / "models" / "model.pt").read_bytes() != before  # best checkpoint written
    assert main(["run", "tiny_cls", "evaluate"]) == 0
    metrics = (tiny_bundle / "eval" / "metrics.csv").read_text()
    assert "val_accuracy" in metrics
    assert main(["run", "tiny_cls", "inference", "--set", "output_dir=" + str(tiny_bundle / "pred")]) == 0
    rows = (tiny_bundle / "pred" / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 12  # every image of data/images, none skipped


def test_bad_override_key_is_refused_before_running(tiny_bundle, capsys):
    assert main(["run", "tiny_cls", "train", "--set", "train::trainer::max_epoch=2"]) == 2
    err = capsys.readouterr().err
    assert "Config key 'train::trainer::max_epoch' does not exist" in err
    assert "Did you mean: train::trainer::max_epochs" in err


def test_bad_datalist_stops_before_training(tiny_bundle, capsys):
    before = (tiny_bundle / "models" / "model.pt").read_bytes()
    (tiny_bundle / "data" / "images" / "case001.png").write_bytes(b"")
    (tiny_bundle / "data" / "images" / "case003.png").unlink()
    assert main(["run", "tiny_cls", "train"]) == 2
    err = capsys.readouterr().err
    assert "case001.png is empty" in err and "case003.png does not exist" in err
    assert "Traceback" not in err
    assert (tiny_bundle / "models" / "model.pt").read_bytes() == before  # finished work untouched


def test_shared_override_file_is_audited(tiny_bundle, tmp_path, capsys):
    safe = tmp_path / "lab_b.yaml"
    safe.write_text("train::trainer::max_epochs: 1\n")
    evil = tmp_path / "evil.yaml"
    evil.write_text("initialize: [\"$__import__('os').system('echo pwned')\"]\n")
    assert main(["run", "tiny_cls", "train", "--override", str(evil)]) == 2
    assert "__import__" in capsys.readouterr().err
    assert main(["run", "tiny_cls", "train", "--override", str(safe)]) == 0
    assert main(["audit", str(evil)]) == 1
    assert main(["audit", str(safe)]) == 0


def test_verify_and_export(tiny_bundle, tmp_path):
    out = run_cli(
        "verify", "--all", "--json", str(tmp_path / "v.json"), env={"MIMTL_BUNDLE_PATH": str(tiny_bundle.parent)}
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"(\d+)/\1 bundle\(s\) passed\.", out.stdout), out.stdout[-2000:]
    assert all(r["ok"] for r in json.loads((tmp_path / "v.json").read_text())["tiny_cls"])
    assert main(["export", "tiny_cls", "--format", "torchscript"]) == 0
    assert isinstance(torch.jit.load(str(tiny_bundle / "models" / "model.ts")), torch.jit.ScriptModule)
    (tiny_bundle / "docs" / "README.md").unlink()
    assert main(["verify", "tiny_cls"]) == 1


def test_check_data(tiny_bundle, capsys):
    datalist = str(tiny_bundle / "data" / "datalist.json")
    assert main(["check-data", datalist]) == 0
    (tiny_bundle / "data" / "images" / "case000.png").write_bytes(b"\x89PNG\r\n")
    assert main(["check-data", datalist]) == 1
    assert "case000.png cannot be read" in capsys.readouterr().err


def test_multi_gpu_train_on_two_cpu_processes(tiny_bundle):
    """The multi-GPU config runs under torchrun with gloo; only rank 0 writes the checkpoint."""
    (tiny_bundle / "models" / "model.pt").unlink()
    out = run_cli(
        "run", "tiny_cls", "multi_gpu_train", "--nproc", "2", env={"MIMTL_BUNDLE_PATH": str(tiny_bundle.parent)}
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tiny_bundle / "models" / "model.pt").is_file()
    sd = torch.load(tiny_bundle / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in sd)  # saved unwrapped, loads into network_def


def test_data_adapt(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    root = tmp_path / "chest_xray"
    for split in ("train", "val", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            (root / split / cls).mkdir(parents=True)
            name = "IM-0001-0001.jpeg" if cls == "NORMAL" else "person1_bacteria_1.jpeg"
            Image.fromarray(np.full((16, 16), 100, np.uint8)).save(root / split / cls / name)
    out = tmp_path / "pneumonia.json"
    assert main(["data", "adapt", "pneumonia", str(tmp_path), "--out", str(out)]) == 0
    assert "training: 2" in capsys.readouterr().out
    items = json.loads(out.read_text())["training"]
    assert sorted(i["label"] for i in items) == [0, 1]
    assert main(["data", "adapt", "pneumonia", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "chest_xray" in capsys.readouterr().err
    assert main(["data", "adapt", "chexpert", str(tmp_path), "--out", str(out), "--option", "uncertain=maybe"]) == 2
    capsys.readouterr()
    # aliases the help text lists work on the command line too (kermany = pneumonia)
    assert main(["data", "adapt", "kermany", str(tmp_path), "--out", str(out)]) == 0
    assert main(["data", "adapt", "no_such_set", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no_such_set" in err and "isbi2015" in err and "isbi2015_ceph" in err


def test_data_adapt_isbi2015_alias_reaches_the_adapter(tmp_path, capsys):
    """`mimtl data adapt isbi2015` is the ISBI 2015 adapter: on an empty folder it names the layout it wanted."""
    assert main(["data", "adapt", "isbi2015", str(tmp_path), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert "unknown data set" not in err and "no data set adapter" not in err and err.strip()


def test_monai_bundle_run_works_on_the_same_configs(tiny_bundle):
    """The mimtl conventions stay plain MONAI: `python -m monai.bundle run` trains and evaluates."""
    base = [sys.executable, "-m", "monai.bundle", "run", "--meta_file", "configs/metadata.json", "--bundle_root", "."]
    for configs in ("configs/train.yaml", "['configs/train.yaml','configs/evaluate.yaml']"):
        out = subprocess.run(
            base + ["--config_file", configs], cwd=tiny_bundle, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stderr[-3000:]
    assert "val_accuracy" in (tiny_bundle / "eval" / "metrics.csv").read_text()
