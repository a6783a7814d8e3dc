"""One path for pretrained weights: read a file safely, unwrap it, match it by name, adapt the stem, explain misfits.

In the spirit of timm's ``load_pretrained`` + ``adapt_input_conv`` + a per-model ``checkpoint_filter_fn``: every
mimtl network initialises from a weights file through :func:`load_pretrained`, and differs only in the arguments it
passes (a key map for the layout of the files it accepts, the key prefixes a checkpoint may hold it under, the
groups it may leave out). The pieces:

* :func:`load_weights_file`: ``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors; pickled
  code or custom classes are refused, never run.
* :func:`read_state_dict`: the tensors inside a checkpoint container (bare, ``{"model": ...}``,
  ``{"network": ...}``, ``{"state_dict": ...}``, nested), without a DataParallel/DDP ``module.`` prefix.
* :func:`adapt_input_conv`: a first convolution with another number of input channels (an RGB stem for a gray
  X-ray: the kernel summed over RGB).
* :func:`load_pretrained`: match **by name** through an explicit key map; by position only with
  ``match="position"``; an error that names the file and the keys that did not match.
* :func:`parse_weights`: the one spelling of the option, ``weights: None | "imagenet" | <path>`` (``"scratch"`` is
  an alias of ``None``). ``"bundle:NAME"`` is refused: networks do not resolve bundles, ``mimtl.bundle.weights_path``
  does.

Nothing here knows a network: the key maps live beside the networks (e.g.
:func:`~mimtl.networks.efficientnet_lite.efficientnet_lite_key_map`, :func:`~mimtl.networks.densenet_encoder.
torchvision_densenet_key`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "NOT_GIVEN",
    "OPTIONAL_KEYS",
    "WRAPPER_KEYS",
    "LoadResult",
    "WeightsError",
    "adapt_input_conv",
    "deprecated_alias",
    "load_pretrained",
    "load_weights_file",
    "parse_weights",
    "read_state_dict",
    "state_dict_key",
]

#: Entries of a checkpoint dict that may hold the network, in order of preference (MONAI ``CheckpointSaver``
#: writes ``{"model": ..., "optimizer": ...}``; other trainers use ``network``, Lightning ``state_dict``...).
WRAPPER_KEYS: tuple[str, ...] = ("model", "network", "state_dict", "net", "module")
#: Key endings loaded when present but never required: torchvision files have no ``num_batches_tracked``.
OPTIONAL_KEYS: tuple[str, ...] = ("num_batches_tracked",)
_SHOWN = 5  # example keys per kind in messages


class _NotGiven:
    """Default of deprecated keyword aliases, so that an explicit ``None`` still counts as given."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


#: Sentinel default of deprecated keyword aliases (``encoder_weights=``, ``backbone_weights=``).
NOT_GIVEN: Any = _NotGiven()


class WeightsError(ValueError):
    """A weights file cannot be read, holds no state dict, or does not fit the network."""


# ------------------------------------------------------------------------------------------------ reading
def load_weights_file(path: str | os.PathLike) -> Any:
    """Read a weights/checkpoint file without running pickled code.

    Args:
        path: the file.

    Returns:
        What ``torch.load(path, map_location="cpu", weights_only=True)`` returns (tensors on the CPU).

    Raises:
        FileNotFoundError: ``path`` is no file.
        WeightsError: the file is not a torch file, is truncated, or holds pickled code / objects of custom classes
            (``weights_only`` refuses them); the message names the file.
    """
    path_str = os.fspath(path)
    if not os.path.isfile(path_str):
        raise FileNotFoundError(f"weights file {path_str!r} does not exist.")
    try:
        return torch.load(path_str, map_location="cpu", weights_only=True)  # never runs pickled code
    except Exception as e:  # unpickling errors (custom classes, code), truncated or non-torch files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"cannot read {path_str!r} as weights: torch.load(weights_only=True) accepts tensors and plain containers "
            f"only, never pickled code or custom classes (re-save the network's state_dict()). Cause: {first}"
        ) from e


def state_dict_key(ckpt: Mapping, path: str | os.PathLike = "checkpoint", key: str | None = None) -> str | None:
    """The entry of a checkpoint dict that holds the state dict, or ``None`` when ``ckpt`` is one itself.

    The entry is ``key`` when given, else the first of :data:`WRAPPER_KEYS` holding a mapping; otherwise a mapping
    with tensor values is a state dict itself (non-tensor extras such as an ``epoch`` counter are tolerated), and a
    mapping of mappings gives its only entry.

    Args:
        ckpt: a loaded checkpoint.
        path: the file, for messages.
        key: the entry to take (e.g. ``"model"``), or ``None`` to find it.

    Returns:
        The entry's key, or ``None`` for a bare state dict.

    Raises:
        WeightsError: ``key`` is not a mapping entry, or no entry / several candidate entries hold the network.
    """
    nested = [k for k, v in ckpt.items() if isinstance(v, Mapping)]
    if key is not None:
        if key not in nested:
            raise WeightsError(
                f"checkpoint {os.fspath(path)!r} has no state dict under {key!r}; entries: {sorted(map(str, ckpt))}."
            )
        return key
    # a state dict never holds mappings, so a known wrapper entry wins even beside tensors (an "epoch" tensor)
    preferred = next((k for k in WRAPPER_KEYS if k in nested), None)
    if preferred is not None:
        return preferred
    if any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return None
    if len(nested) == 1:
        return nested[0]
    if nested:
        raise WeightsError(
            f"checkpoint {os.fspath(path)!r} has entries {sorted(map(str, ckpt))}; say which holds the network."
        )
    raise WeightsError(
        f"{os.fspath(path)!r} holds no state dict (a mapping of names to tensors, bare or under one of "
        f"{list(WRAPPER_KEYS)}); found: {sorted(map(str, ckpt))[:8]}."
    )


def read_state_dict(
    weights: str | os.PathLike | Mapping, key: str | None = None, strip_module: bool = True, source: str | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a weights file or loaded checkpoint, unwrapped.

    Unwraps (up to 4 levels, e.g. ``{"model": {"state_dict": {...}}}``) as :func:`state_dict_key` decides, keeps
    the tensor entries and removes a ``module.`` prefix that every key has (DataParallel / DDP).

    Args:
        weights: a file (read with :func:`load_weights_file`) or an already loaded checkpoint.
        key: the top-level entry holding the network (default: found, see :func:`state_dict_key`).
        strip_module: remove a ``module.`` prefix common to all keys.
        source: the file's name in messages when ``weights`` is an already loaded checkpoint.

    Returns:
        ``{name: tensor}`` in the file's order.

    Raises:
        FileNotFoundError: a path that is no file.
        WeightsError: unreadable file, or no (unambiguous) state dict in it.
    """
    path = source or ("<state dict>" if isinstance(weights, Mapping) else os.fspath(weights))
    obj: Any = weights if isinstance(weights, Mapping) else load_weights_file(weights)
    for level in range(4):
        if not isinstance(obj, Mapping):
            break
        entry = state_dict_key(obj, path, key if level == 0 else None)
        if entry is None:
            state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if strip_module and state and all(k.startswith("module.") for k in state):
                state = {k[len("module.") :]: v for k, v in state.items()}
            return state
        obj = obj[entry]
    raise WeightsError(f"{path!r} holds no state dict: found a {type(obj).__name__}.")


# ------------------------------------------------------------------------------------------------ adapting
def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-convolution kernel ``(out, c, *k)`` for ``in_channels`` inputs instead of ``c``.

    The kernel is summed over its input channels and spread evenly over the new ones (``w_i = sum_c(w) / C``).
    For a gray model (``C = 1``) this is the plain sum, so ``model_1ch(x) == model_rgb(x.repeat(1, 3, 1, 1))``: a
    gray image behaves as the same image in RGB; for ``C`` channels, an image with ``C`` equal channels gives that
    response too. (timm instead repeats the RGB kernel for ``C > 3``; mimtl keeps this rule so that the shipped
    models reproduce.)

    Args:
        weight: the pretrained kernel, at least 3-dimensional.
        in_channels: the model's input channels.

    Returns:
        ``weight`` itself when it already has ``in_channels`` inputs, else the adapted kernel (same dtype).

    Raises:
        ValueError: ``weight`` is not a convolution kernel or ``in_channels < 1``.
    """
    if weight.ndim < 3 or in_channels < 1:
        raise ValueError(
            f"expected a convolution kernel (out, in, *k) and in_channels >= 1, got {tuple(weight.shape)} and "
            f"{in_channels}."
        )
    if weight.shape[1] == in_channels:
        return weight
    return weight.sum(dim=1, keepdim=True).repeat(1, in_channels, *([1] * (weight.ndim - 2))) / in_channels


# ------------------------------------------------------------------------------------------------ matching
@dataclass
class LoadResult:
    """What :func:`load_pretrained` loaded.

    Attributes:
        source: the file (or ``"<state dict>"``).
        loaded: the model's keys that were loaded.
        missing: the model's keys (optional buffers aside) not found in the file.
        unexpected: the file's keys (under ``prefix``) that are not the model's.
        mismatched: ``"file_key (shape) vs model_key (shape)"`` for tensors of another shape.
        skipped: the model's keys of ``optional_groups`` that kept their initialisation.
        prefix: the key prefix of the file the tensors were taken from.
        match: ``"name"`` or ``"position"``.
        total: the model's tensors, optional buffers and skipped groups aside.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    prefix: str = ""
    match: str = "name"
    total: int = 0

    @property
    def n_loaded(self) -> int:
        """Loaded tensors, optional buffers aside."""
        return sum(1 for k in self.loaded if not k.endswith(OPTIONAL_KEYS))

    def describe(self) -> str:
        """E.g. ``"240/240 tensors under 'backbone.net.'"``, ``"100/100 tensors at top level"``."""
        if self.match == "position":
            where = "by position" + (f" under {self.prefix!r}" if self.prefix else "")
        else:
            where = f"under {self.prefix!r}" if self.prefix else "at top level"
        return f"{self.n_loaded}/{self.total} tensors {where}"


def _examples(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _SHOWN else f"{shown} ({len(keys)})"


def _as_key_map(key_map: Callable[[str], str | None] | Mapping[str, str] | None) -> Callable[[str], str | None]:
    if key_map is None:
        return lambda k: k
    if isinstance(key_map, Mapping):
        return lambda k: key_map.get(k, k)
    return key_map


def _fit(value: torch.Tensor, target: torch.Tensor, adapt: bool) -> torch.Tensor | None:
    """``value`` shaped like ``target`` (the stem kernel adapted to other input channels), or None."""
    if value.shape == target.shape:
        return value
    if (
        adapt
        and value.ndim == target.ndim >= 3
        and value.shape[0] == target.shape[0]
        and value.shape[2:] == target.shape[2:]
    ):
        return adapt_input_conv(value, target.shape[1])
    return None


def _pairs_by_name(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], prefix: str, key_map: Callable
) -> tuple[dict[str, str], list[str]]:
    """``({model key: file key}, unexpected file keys)`` for the file's keys under ``prefix``."""
    pairs: dict[str, str] = {}
    unexpected: list[str] = []
    for s in source:
        if not s.startswith(prefix):
            continue
        t = key_map(s[len(prefix) :])
        if t is None:  # filtered out by the network's key map
            continue
        if t in target and t not in pairs:
            pairs[t] = s
        else:
            unexpected.append(s)
    return pairs, unexpected


def _pairs_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], prefix: str
) -> tuple[dict[str, str], list[str]]:
    # optional buffers are left out on both sides: torchvision files lack them, other layouts have them
    src = [k for k in source if k.startswith(prefix) and not k.endswith(OPTIONAL_KEYS)]
    tgt = [k for k in target if not k.endswith(OPTIONAL_KEYS)]
    return dict(zip(tgt, src)), src[len(tgt) :]


def _candidate_prefixes(source: Mapping[str, torch.Tensor], prefixes: Sequence[str] | str) -> list[str]:
    if isinstance(prefixes, str):
        if prefixes != "any":
            return [prefixes]
        # every dotted prefix of every key ("", "module.", "backbone.net.", "net.encoder."...)
        found = {""}
        for s in source:
            found.update(s[: i + 1] for i, ch in enumerate(s) if ch == ".")
        return sorted(found, key=len)
    return list(prefixes) or [""]


def _attempt(
    state: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    prefix: str,
    match: str,
    mapper: Callable[[str], str | None],
    stem_key: str | None,
    groups: tuple[str, ...],
    source_name: str,
) -> tuple[LoadResult, dict[str, torch.Tensor]]:
    """Match the file's tensors under ``prefix`` onto ``target``: what would load, and the tensors to load."""
    if match == "position":
        pairs, unexpected = _pairs_by_position(state, target, prefix)
    else:
        pairs, unexpected = _pairs_by_name(state, target, prefix, mapper)
    fitted: dict[str, torch.Tensor] = {}
    mismatched: dict[str, str] = {}
    for t, s in pairs.items():
        value = _fit(state[s], target[t], t == stem_key)
        if value is None:
            mismatched[t] = f"{s} {tuple(state[s].shape)} vs {t} {tuple(target[t].shape)}"
        else:
            fitted[t] = value
    skipped: list[str] = []
    for group in groups:  # all or nothing
        keys = [k for k in target if k.startswith(group)]
        if keys and all(k in fitted or k.endswith(OPTIONAL_KEYS) for k in keys):
            continue
        skipped += keys
        for k in keys:
            fitted.pop(k, None)
            mismatched.pop(k, None)
    if groups and match == "name":
        unexpected = [s for s in unexpected if not (mapper(s[len(prefix) :]) or "").startswith(groups)]
    result = LoadResult(source_name, prefix=prefix, match=match, skipped=skipped)
    result.loaded = list(fitted)
    result.mismatched = list(mismatched.values())
    not_missing = set(fitted) | set(mismatched) | set(skipped)
    result.missing = [k for k in target if k not in not_missing and not k.endswith(OPTIONAL_KEYS)]
    result.unexpected = unexpected
    result.total = sum(1 for k in target if k not in skipped and not k.endswith(OPTIONAL_KEYS))
    return result, fitted


def load_pretrained(
    module: nn.Module,
    weights: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    key_map: Callable[[str], str | None] | Mapping[str, str] | None = None,
    prefixes: Sequence[str] | str = ("",),
    match: str = "name",
    stem_key: str | None = None,
    adapt_stem: bool = True,
    optional_groups: Sequence[str] = (),
    min_match: float = 1.0,
    ignore_unexpected: bool = False,
    name: str | None = None,
    hint: str = "",
    source: str | None = None,
) -> LoadResult:
    """Load the tensors of a weights file into ``module``, matched by name (or, opted in, by position).

    1. The file is read safely and unwrapped (:func:`read_state_dict`).
    2. For each candidate prefix, the file's keys below it are passed through ``key_map`` (the network's
       explicit map from the file's layout to its own names; ``None`` drops a key) and compared with
       ``module.state_dict()``; the prefix giving the most fitting tensors wins (the shortest on a tie).
       With ``match="position"`` the file's tensors under the first prefix are instead paired with the module's in
       registration order (``num_batches_tracked`` aside on both sides): only for layouts without a key map, and
       only when asked.
    3. The first convolution (``stem_key``; default: the first kernel of ``module``) may have other input channels:
       it is adapted with :func:`adapt_input_conv` unless ``adapt_stem=False``.
    4. Each ``optional_groups`` prefix (model keys, e.g. a classifier ``"fc."``) is loaded only when the file
       provides all of its tensors with fitting shapes; otherwise it keeps its initialisation (``skipped``) and the
       file's tensors for it are not unexpected.
    5. Fewer than ``min_match`` of the module's tensors loaded, or unexpected keys (unless ``ignore_unexpected``),
       raise; between ``min_match`` and 100 % a warning lists what keeps its initialisation. ``num_batches_tracked``
       buffers load when present and are never required.

    Args:
        module: the network (part) to fill.
        weights: a file or an already read state dict / checkpoint.
        key_map: file key (prefix removed) -> module key; a mapping (unlisted keys unchanged), a function, or
            ``None`` (same names).
        prefixes: candidate prefixes of the file's keys (``""``: top level), or ``"any"`` (every dotted prefix:
            another model's checkpoint holding this part under some name).
        match: ``"name"`` or ``"position"`` (opt-in).
        stem_key: the module's first-convolution key (default: its first kernel in registration order).
        adapt_stem: adapt the first convolution to the module's input channels.
        optional_groups: module-key prefixes loaded only when complete and fitting.
        min_match: share of the module's tensors that must load (1.0: all).
        ignore_unexpected: file tensors that are not the module's are fine (a checkpoint of a larger model).
        name: the module's name in messages (default: its class name).
        hint: a sentence appended to the error (what the network expects).
        source: the file's name in messages when ``weights`` is an already read state dict.

    Returns:
        A :class:`LoadResult`.

    Raises:
        FileNotFoundError: ``weights`` is a path that is no file.
        WeightsError: the file cannot be read or does not fit; the message names the file, counts and shows the
            missing, unexpected and shape-mismatched keys.
        ValueError: an unknown ``match``.
    """
    if match not in ("name", "position"):
        raise ValueError(f"match must be 'name' or 'position' (opt-in), got {match!r}.")
    source_name = source or ("<state dict>" if isinstance(weights, Mapping) else os.fspath(weights))
    name = name or type(module).__name__
    state = read_state_dict(weights, source=source)
    target = module.state_dict()
    mapper = _as_key_map(key_map)
    if stem_key is None:
        stem_key = next((k for k, v in target.items() if k.endswith("weight") and v.ndim >= 3), None)
    candidates = _candidate_prefixes(state, prefixes)
    if match == "position":
        candidates = candidates[:1]
    stem = stem_key if adapt_stem else None
    best, fitted = _attempt(state, target, candidates[0], match, mapper, stem, tuple(optional_groups), source_name)
    for prefix in candidates[1:]:
        result, tensors = _attempt(state, target, prefix, match, mapper, stem, tuple(optional_groups), source_name)
        if result.n_loaded > best.n_loaded:  # the shortest prefix wins a tie (candidates come shortest first)
            best, fitted = result, tensors
    _raise_or_warn(best, state, min_match, ignore_unexpected, name, hint)
    module.load_state_dict({k: v.to(dtype=target[k].dtype) for k, v in fitted.items()}, strict=False)
    return best


def _raise_or_warn(
    best: LoadResult, state: Mapping[str, torch.Tensor], min_match: float, ignore_unexpected: bool, name: str, hint: str
) -> None:
    """The policy of :func:`load_pretrained`: raise below ``min_match`` or on unexpected keys, else warn on gaps."""
    not_loaded = best.total - best.n_loaded
    problems = []
    if best.missing:
        problems.append(f"missing keys: {_examples(best.missing)}")
    if best.mismatched:
        problems.append(f"shape mismatches (file vs model): {_examples(best.mismatched)}")
    if best.unexpected and not ignore_unexpected:
        problems.append(f"unexpected keys: {_examples(best.unexpected)}")
    if best.n_loaded < min_match * best.total or (best.unexpected and not ignore_unexpected) or best.total == 0:
        where = f"under {best.prefix!r}" if best.prefix else "at top level"
        needed = "; all needed" if min_match >= 1 else f"; {min_match:.0%} needed" if min_match > 0 else ""
        raise WeightsError(
            f"cannot load {best.source!r} into {name}: {best.n_loaded}/{best.total} of its tensors matched by "
            f"{best.match} ({where}{needed}). "
            + ("; ".join(problems) + ". " if problems else "")
            + f"Keys in the file: {_examples(list(state))}."
            + (f" {hint}" if hint else "")
        )
    if not_loaded:
        warnings.warn(
            f"{best.source!r}: {not_loaded} of the {best.total} tensors of {name} are not loaded and keep their "
            f"initialisation: " + "; ".join(problems),
            stacklevel=3,  # the caller of load_pretrained
        )


# ------------------------------------------------------------------------------------------------ the option
def parse_weights(weights: str | os.PathLike | None, owner: str = "the network") -> str | None:
    """Check the one spelling of the weights option: ``None | "imagenet" | <path>``.

    Args:
        weights: ``None`` / ``"scratch"`` (random initialisation), ``"imagenet"`` (case-insensitive) or the path of
            a weights file.
        owner: the network, for messages.

    Returns:
        ``None``, ``"imagenet"`` or the path as a string.

    Raises:
        ValueError: ``"bundle:NAME"``: networks do not resolve bundles; the message says to pass
            ``mimtl.bundle.weights_path("bundle:NAME")`` instead.
        FileNotFoundError: any other value that is no file.
    """
    if weights is None:
        return None
    if isinstance(weights, str):
        if weights.lower() in ("scratch", "none", ""):
            return None
        if weights.lower() == "imagenet":
            return "imagenet"
        if weights.startswith("bundle:"):
            raise ValueError(
                f"{owner}: weights={weights!r} names a bundle, and networks do not resolve bundles. Pass "
                f"mimtl.bundle.weights_path({weights!r}) instead; in a config: "
                f"weights: {{_target_: mimtl.bundle.weights_path, spec: {weights!r}}}."
            )
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{owner}: weights must be None, 'scratch', 'imagenet' or the path of a weights file; {path!r} is no file."
        )
    return path


def deprecated_alias(new: Any, new_default: Any, old: Any, old_name: str, owner: str, new_name: str = "weights") -> Any:
    """The value of an option that was renamed: the new keyword's, or the old one's with a DeprecationWarning.

    Args:
        new: the value given for the new keyword.
        new_default: its default (to tell whether it was given).
        old: the value given for the old keyword, :data:`NOT_GIVEN` when absent.
        old_name: the old keyword (e.g. ``"encoder_weights"``).
        owner: the class or function, for messages.
        new_name: the new keyword.

    Returns:
        The value to use.

    Raises:
        TypeError: both keywords were given.
    """
    if old is NOT_GIVEN:
        return new
    if new is not new_default and new != new_default:
        raise TypeError(f"{owner}: give {new_name}= only ({old_name}= is its deprecated alias), not both.")
    warnings.warn(
        f"{owner}({old_name}=...) is deprecated: use {new_name}= (same values).", DeprecationWarning, stacklevel=3
    )
    return old
