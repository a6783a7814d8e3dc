import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bundle_factory import make_bundle  # noqa: E402


@pytest.fixture
def tiny_bundle(tmp_path, monkeypatch):
    """A complete tiny bundle on $MIMTL_BUNDLE_PATH, fresh for each test."""
    path = make_bundle(tmp_path / "bundles")
    monkeypatch.setenv("MIMTL_BUNDLE_PATH", str(tmp_path / "bundles"))
    return path
