import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from bundle_factory import make_bundle

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one thread each, also in the runs they start
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Tests sharing the session's bundle runs (``bundle_runs``) go to one xdist worker, which makes them once."""
    for item in items:
        if "bundle_runs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("bundle_runs"))


@pytest.fixture
def tiny_bundle(tmp_path, monkeypatch):
    """A complete tiny bundle on $MIMTL_BUNDLE_PATH, fresh for each test."""
    path = make_bundle(tmp_path / "bundles")
    monkeypatch.setenv("MIMTL_BUNDLE_PATH", str(tmp_path / "bundles"))
    return path


@pytest.fixture
def registered_readers():
    """mimtl's readers in MONAI's global reader table (the opt-in), restored afterwards."""
    from monai.transforms.io.array import SUPPORTED_READERS

    from mimtl.io import register_readers

    saved = dict(SUPPORTED_READERS)
    register_readers()
    yield
    SUPPORTED_READERS.clear()
    SUPPORTED_READERS.update(saved)


@pytest.fixture(scope="session")
def bundle_runs(tmp_path_factory):
    """Each bundle's tiny data and its train / evaluate / inference / multi-GPU runs, made once per
    session and shared by tests/test_bundle_contract.py and the bundles' own modules."""
    from bundle_checks import BundleRuns

    return BundleRuns(tmp_path_factory)
