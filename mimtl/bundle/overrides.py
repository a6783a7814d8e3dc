"""Command-line overrides of bundle config ids, checked before anything runs."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = ["ConfigKeyError", "check_override_keys", "parse_overrides"]


class ConfigKeyError(KeyError):
    """An override names a config id that does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``id=value`` strings; values are YAML (``3``, ``true``, ``[1, 2]``, ``'$@a + 1'``).

    ``.`` is not an id separator (ids may contain dots); use MONAI's ``::`` or ``#``.
    """
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Override '{item}' is not of the form id=value (e.g. train::trainer::max_epochs=2).")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ValueError(f"Override '{item}': the value is not valid YAML ({e}).") from None
        out[key.strip().replace("#", "::")] = value
    return out


def _all_ids(config: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(config, Mapping):
        items = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return
    for k, v in items:
        cid = f"{prefix}::{k}" if prefix else str(k)
        yield cid
        yield from _all_ids(v, cid)


def check_override_keys(parser, overrides: Mapping[str, Any], source: str = "config", allow_new: bool = False) -> None:
    """Raise :class:`ConfigKeyError` when an override id is not in the config.

    A new leaf under an existing mapping is accepted with ``allow_new`` (MONAI allows adding
    ids); an unknown parent is always an error, since it would silently do nothing.
    """
    raw = parser.get()
    for key in overrides:
        cid = key.replace("#", "::")
        if cid in parser:
            continue
        parent, _, leaf = cid.rpartition("::")
        parent_ok = parent == "" or (parent in parser and isinstance(parser[parent], Mapping))
        if allow_new and parent_ok:
            continue
        close = difflib.get_close_matches(cid, list(_all_ids(raw)), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        where = "" if parent_ok else f" (its parent '{parent}' does not exist either)"
        raise ConfigKeyError(f"Config key '{cid}' does not exist in {source}{where}.{hint}")
