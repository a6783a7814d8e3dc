"""Helpers shared by the handlers that write evaluator outputs to files."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch
from monai.utils import ImageMetaKey, min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = [
    "DOMAIN_COLUMNS",
    "FAILED",
    "WITHHELD",
    "OutputWriteError",
    "OutputWriter",
    "csv_text",
    "filename_of",
    "font",
    "per_item",
    "rank_suffix",
    "save_atomic",
    "to_uint8",
    "write_atomic",
]

#: The ``status`` of a row whose file :class:`~mimtl.data.TolerantDataset` could not use: ``failed: <reason>``.
FAILED = "failed: "
#: The ``status`` of a row whose predictions :class:`~mimtl.handlers.DomainCheck` withheld (``on_out_of_domain: skip``).
WITHHELD = "withheld: out of domain"
#: The columns :class:`~mimtl.handlers.DomainCheck`'s verdict adds to a writer's rows (only in runs it scored).
DOMAIN_COLUMNS = ("in_domain", "domain_score", "domain_reason")


def per_item(data: Any) -> list[Mapping]:
    """``engine.state.batch``/``output`` as a list of per-item dicts, whichever form it has."""
    if isinstance(data, Mapping):  # decollate=False: a dict of batched values
        return list(decollate_batch(data, detach=True))
    if isinstance(data, (list, tuple)):
        return [d if isinstance(d, Mapping) else {} for d in data]
    return []


def filename_of(item: Mapping, output: Mapping, key: str) -> str:
    """The input file of one item: its image's meta, the legacy ``<key>_meta_dict``, or ''."""
    for source in (item, output):
        image = source.get(key)
        if isinstance(image, MetaTensor) and image.meta.get(ImageMetaKey.FILENAME_OR_OBJ):
            return f"{image.meta[ImageMetaKey.FILENAME_OR_OBJ]}"
        meta = source.get(f"{key}_meta_dict")
        if isinstance(meta, Mapping) and meta.get(ImageMetaKey.FILENAME_OR_OBJ):
            return f"{meta[ImageMetaKey.FILENAME_OR_OBJ]}"
    return ""


def rank_suffix() -> str:
    """'' in a single process; '.rank<r>' when torch.distributed runs (each rank writes its own rows)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_world_size() > 1:
            return f".rank{torch.distributed.get_rank()}"
    return ""


class OutputWriteError(OSError):
    """An output file could not be written (a full disk, no permission); the file there before is unchanged.

    An ``OSError`` with the ``errno`` of the failure and ``filename`` the output path; the message
    says what happened in words ("no space left on device writing <path>").
    """

    def __init__(self, path: str | os.PathLike, error: OSError) -> None:
        code = error.errno
        what = "no space left on device" if code == errno.ENOSPC else (error.strerror or f"{error}")
        super().__init__(code, f"{what} writing {path}; the file there before (if any) is unchanged", f"{path}")

    def __str__(self) -> str:
        return f"{self.strerror}"

    def __reduce__(self):  # keep the message through pickling (DataLoader workers, torch.distributed)
        return _output_write_error, (self.filename, self.errno, self.strerror)


def _output_write_error(path: str, code: int | None, message: str) -> OutputWriteError:
    error = OutputWriteError.__new__(OutputWriteError)
    OSError.__init__(error, code, message, path)
    return error


#: Overlays are palette PNGs: the film in OVERLAY_GRAYS grays, then up to 256 - OVERLAY_GRAYS
#: marker colours. One byte a pixel and no PNG row filters make a 512 px overlay ~4x cheaper to
#: encode than RGB, and 248 grays look like 256.
OVERLAY_GRAYS = 248
_TO_GRAY_LEVEL = (np.arange(256) * (OVERLAY_GRAYS - 1) // 255).astype(np.uint8)
#: PNG options of the overlays: Huffman coding only. zlib's string matching finds little to reuse
#: in a noisy film: on a 512 px palette overlay it cost 7 ms against 2.6 ms for a 4 % larger file.
OVERLAY_PNG = {"format": "PNG", "compress_level": 1, "compress_type": zlib.Z_HUFFMAN_ONLY}


def overlay_canvas(gray: np.ndarray, colours: Sequence[Sequence[int]], marks: Sequence[np.ndarray] = ()) -> Any:
    """A palette ``PIL.Image`` of the ``uint8`` film ``gray`` (rows, columns) whose palette index
    ``OVERLAY_GRAYS + k`` is ``colours[k]`` (RGB), for drawing markers on; the pixels of the
    boolean ``marks[k]`` (rows, columns) are painted in ``colours[k]``."""
    from PIL import Image

    if len(colours) > 256 - OVERLAY_GRAYS or len(marks) > len(colours):
        raise ValueError(f"at most {256 - OVERLAY_GRAYS} overlay colours, one per mark; got {len(colours)}.")
    index = _TO_GRAY_LEVEL[gray]
    for k, mark in enumerate(marks):
        index[mark] = OVERLAY_GRAYS + k
    canvas = Image.fromarray(index, mode="P")
    palette = [v for i in range(OVERLAY_GRAYS) for v in (i * 255 // (OVERLAY_GRAYS - 1),) * 3]
    canvas.putpalette(palette + [int(c) for colour in colours for c in colour])
    return canvas


def save_atomic(path: Path, save: Callable[[Path], Any]) -> Path:
    """``save(tmp)`` into a temporary file next to ``path``, then rename it to ``path``; return ``path``.

    A reader never sees half a file, and a failed write (a full disk) leaves the file that was
    there before unchanged and no temporary file behind.

    Raises:
        OutputWriteError: the write or the rename failed with an ``OSError`` (``errno`` kept).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as e:
        raise OutputWriteError(path, e) from e
    os.close(fd)
    try:
        save(Path(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, OutputWriteError):
            raise OutputWriteError(path, e) from e
        raise
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder: a reader never sees half a file.

    Raises:
        OutputWriteError: see :func:`save_atomic`.
    """

    def save(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    save_atomic(path, save)


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as CSV text with header ``columns`` (missing cells empty, ``\\n`` line ends)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_uint8(image: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(image)), float(np.max(image))
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return np.zeros(image.shape, np.uint8)
    return np.round((image - lo) / (hi - lo) * 255.0).astype(np.uint8)


def font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


class OutputWriter:
    """Base of the handlers that turn an evaluator's per-item outputs into files in ``output_dir``.

    What the writers share:

    * the events: :meth:`attach` registers :meth:`reset` at ``STARTED``, the handler itself
      (``__call__``) at ``ITERATION_COMPLETED`` and :meth:`write` at ``COMPLETED``, once each;
    * the items of an iteration (:meth:`items`): each item's batch and output dicts, its input
      file and the reason :class:`~mimtl.data.TolerantDataset` gave when it could not use it
      (``""`` when it could), from decollated or batched ``engine.state``;
    * the paths: a table per run, ``<stem><rank suffix><suffix>`` (:meth:`table_path`: under
      ``torch.distributed`` each rank writes its own), and a file per input whose name is made
      unique within the run (:meth:`item_path`);
    * the files: CSV, JSON and images written atomically (:meth:`write_csv`, :meth:`write_json`,
      :func:`save_atomic`; a full disk is an :class:`OutputWriteError` naming the file and leaves
      the one there before unchanged), and the
      ``failed: <reason>`` status of a row (:data:`FAILED`, :meth:`failed_status`, :meth:`failures`).

    Args:
        output_dir: the folder of the files (created when the first one is written).
        image_key: the image key of the batch/output (its meta names the file).
        error_key: the key :class:`~mimtl.data.TolerantDataset` puts the failure reason in.
    """

    def __init__(self, output_dir: str | os.PathLike, image_key: str = "image", error_key: str = "error") -> None:
        self.output_dir = Path(output_dir)
        self.image_key, self.error_key = image_key, error_key
        self._used: set[str] = set()

    # -- events ------------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        """Reset at ``STARTED``, collect on every iteration, write at ``COMPLETED`` (each once)."""
        for event, handler in (
            (Events.STARTED, self.reset),
            (Events.ITERATION_COMPLETED, self),
            (Events.COMPLETED, self.write),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget what the last run collected (each run writes its own files)."""
        self._used = set()

    def __call__(self, engine: Engine) -> None:
        """Collect (or write) the items of one iteration."""
        raise NotImplementedError

    def write(self, engine: Engine | None = None) -> Any:
        """Write the files of the run."""
        raise NotImplementedError

    # -- items -------------------------------------------------------------------------------------
    def items(self, engine: Engine) -> Iterator[tuple[Mapping, Mapping, str, str]]:
        """``(batch item, output item, input file, failure reason or "")`` per item of an iteration."""
        batch, output = per_item(engine.state.batch), per_item(engine.state.output)
        for i, out in enumerate(output):
            item = batch[i] if i < len(batch) else {}
            error = f"{item.get(self.error_key) or out.get(self.error_key) or ''}"
            yield item, out, filename_of(item, out, self.image_key), error

    # -- paths -------------------------------------------------------------------------------------
    def table_path(self, stem: str, suffix: str) -> Path:
        """``output_dir/<stem><rank suffix><suffix>``: one file per run (and rank)."""
        return self.output_dir / f"{stem}{rank_suffix()}{suffix}"

    def item_path(self, name: str, tail: str, folder: str | None = None) -> Path:
        """``output_dir[/folder]/<stem of name><tail>`` for input ``name``, ``_2``, ``_3``, ... when stems repeat."""
        base = PurePath(name).name if name else "image"
        stem = base[: -len(".nii.gz")] if base.lower().endswith(".nii.gz") else PurePath(base).stem
        stem = stem or "image"
        candidate, n = stem, 1
        while candidate in self._used:
            n += 1
            candidate = f"{stem}_{n}"
        self._used.add(candidate)
        return (self.output_dir / folder if folder else self.output_dir) / f"{candidate}{tail}"

    # -- files -------------------------------------------------------------------------------------
    @staticmethod
    def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
        """Write ``rows`` as CSV atomically; return ``path``."""
        write_atomic(path, csv_text(rows, columns))
        return path

    @staticmethod
    def write_json(path: Path, data: Any) -> Path:
        """Write ``data`` as indented JSON atomically; return ``path``."""
        write_atomic(path, json.dumps(data, indent=2) + "\n")
        return path

    # -- the domain check --------------------------------------------------------------------------
    @staticmethod
    def domain_of(item: Mapping, output: Mapping) -> dict[str, Any]:
        """:class:`~mimtl.handlers.DomainCheck`'s verdict on one item as cells, ``{}`` when none ran.

        ``in_domain`` (``true``/``false``, empty when not checked), ``domain_score`` (3 decimals; ``<= 1``
        passes), ``domain_reason`` and ``withheld`` (bool: leave the predictions out).
        """
        source = output if "in_domain" in output else item
        if "in_domain" not in source:
            return {}
        flag, score = source.get("in_domain"), source.get("domain_score")
        flag = flag.item() if isinstance(flag, torch.Tensor) else flag
        score = score.item() if isinstance(score, torch.Tensor) else score
        if score is not None and not math.isnan(float(score)) and float(score) > 1.0:
            score = math.ceil(float(score) * 1000) / 1000  # a flagged 1.0004 must not read "1.000", a passing score
        return {
            "in_domain": "" if flag is None else str(bool(flag)).lower(),
            "domain_score": "" if score is None or math.isnan(float(score)) else f"{float(score):.3f}",
            "domain_reason": f"{source.get('domain_reason') or ''}",
            "withheld": bool(source.get("domain_withheld", False)),
        }

    @staticmethod
    def domain_cells(domain: Mapping[str, Any]) -> dict[str, Any]:
        """The CSV cells of a :meth:`domain_of` verdict (``{}`` when none)."""
        return {k: domain[k] for k in DOMAIN_COLUMNS if k in domain}

    @staticmethod
    def domain_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
        """:data:`DOMAIN_COLUMNS` when some row carries a verdict, else none (a run without the check)."""
        return list(DOMAIN_COLUMNS) if any("in_domain" in r for r in rows) else []

    @classmethod
    def domain_summary(cls, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """For a run's JSON summary: the flagged files with their reasons and how many were withheld
        (``{}`` for a run without the domain check)."""
        if not cls.domain_columns(rows):
            return {}
        flagged = [{"file": r["file"], "reason": r["domain_reason"]} for r in rows if r.get("in_domain") == "false"]
        return {
            "n_out_of_domain": len(flagged),
            "out_of_domain": flagged,
            "n_withheld": sum(r.get("status") == WITHHELD for r in rows),
        }

    @staticmethod
    def domain_json(domain: Mapping[str, Any]) -> dict[str, Any]:
        """A verdict for JSON: ``in_domain`` true/false/null, ``domain_score`` a number or null, the reason."""
        if not domain:
            return {}
        flag = {"true": True, "false": False}.get(domain["in_domain"])
        score = float(domain["domain_score"]) if domain["domain_score"] else None
        score = score if score is None or math.isfinite(score) else f"{score}"  # JSON has no Infinity
        return {"in_domain": flag, "domain_score": score, "domain_reason": domain["domain_reason"]}

    @staticmethod
    def failed_status(reason: str) -> str:
        """The ``status`` cell of a file that could not be used."""
        return f"{FAILED}{reason}"

    @staticmethod
    def failures(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        """``[{"file", "reason"}]`` of the rows whose ``status`` is ``failed: <reason>``."""
        return [
            {"file": r["file"], "reason": r["status"][len(FAILED) :]}
            for r in rows
            if f"{r.get('status', '')}".startswith(FAILED)
        ]
