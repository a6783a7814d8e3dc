"""An installed mimtl (not a git checkout) finds the bundles shipped in its wheel."""

import shutil
import subprocess
import sys
from pathlib import Path

from bundle_factory import make_bundle

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_bundles_and_schema(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "mimtl", "bundles"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(
            REPO / name,
            src / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}),
        )
    make_bundle(src / "bundles")
    run = dict(capture_output=True, text=True, timeout=300)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        **run,
    )
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("mimtl-*.whl"))
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], **run
    )
    assert installed.returncode == 0, installed.stderr
    probe = (
        "import mimtl, mimtl.bundle as b; "
        "print(mimtl.__file__); print([x.path for x in b.list_bundles()]); print(b.METADATA_SCHEMA.is_file())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""}, **run
    )
    assert out.returncode == 0, out.stderr
    module, bundles, schema = out.stdout.strip().splitlines()
    assert module.startswith(str(target))
    assert f"PosixPath('{target}/mimtl/_bundles/tiny_cls')" in bundles
    assert f"PosixPath('{target}/mimtl/_bundles/xray_color_classification')" in bundles
    assert schema == "True"
