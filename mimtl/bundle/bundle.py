"""Finding and loading bundles, offline.

A bundle is a folder in MONAI's bundle layout (``configs/``, ``models/``, ``docs/``, ``LICENSE``).
Shipped bundles live in the repository's ``bundles/`` folder, which the wheel installs as the
package ``mimtl._bundles``; more folders can be added with ``MIMTL_BUNDLE_PATH``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from mimtl.errors import root_cause  # re-exported: was defined here

__all__ = [
    "BUNDLE_PATH_ENV",
    "Bundle",
    "BundleError",
    "bundle_search_path",
    "find_bundle",
    "list_bundles",
    "load_bundle",
    "load_checkpoint",
    "network_key",
    "read_checkpoint",
    "root_cause",
    "weights_path",
]

BUNDLE_PATH_ENV = "MIMTL_BUNDLE_PATH"
#: Override files merged over a base config, as the model zoo does for evaluate / multi-GPU.
OVERRIDE_BASES = {
    "evaluate": "train",
    "calibrate": "evaluate",
    "multi_gpu_train": "train",
    "multi_gpu_evaluate": "evaluate",
    "robustness": "evaluate",
}
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
#: Merged first into every workflow's configs when the bundle has it (the model zoo's common.json):
#: network, sizes, intensity transforms and decoder settings, said once.
COMMON_CONFIG = "common"
#: Configs that stand alone (an experiment drives train runs; it does not build a network itself).
STANDALONE_CONFIGS = frozenset({"experiment", COMMON_CONFIG})
#: ConfigWorkflow's ``workflow_type`` for each config name (decides which properties are required).
WORKFLOW_TYPES = {"inference": "infer", "experiment": None}


class BundleError(ValueError):
    """A bundle is missing, malformed, or was asked for something it does not have."""


def shipped_bundles_dir() -> Path | None:
    """The folder of bundles shipped with mimtl: ``mimtl/_bundles`` in an installed wheel, else
    ``bundles/`` of the checkout (editable installs and source trees)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_bundles", package.parent / "bundles"):
        if candidate.is_dir():
            return candidate
    return None


def bundle_search_path() -> list[Path]:
    """Folders searched for bundles: ``$MIMTL_BUNDLE_PATH`` entries first, then the shipped ones."""
    extra = [Path(p).expanduser() for p in os.environ.get(BUNDLE_PATH_ENV, "").split(os.pathsep) if p]
    shipped = shipped_bundles_dir()
    return extra + ([shipped] if shipped else [])


def _is_bundle(path: Path) -> bool:
    return (path / "configs" / "metadata.json").is_file()


def list_bundles(search_path: Sequence[Path] | None = None) -> list[Bundle]:
    """All bundles found on the search path, the first of each name winning."""
    found: dict[str, Bundle] = {}
    for root in bundle_search_path() if search_path is None else search_path:
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if child.is_dir() and _is_bundle(child) and child.name not in found:
                found[child.name] = Bundle(child)
    return list(found.values())


def find_bundle(name_or_path: str | os.PathLike) -> Path:
    """Resolve a bundle name (searched on :func:`bundle_search_path`) or a bundle folder path."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not _is_bundle(path):
            raise BundleError(f"'{path}' is a folder but not a bundle: configs/metadata.json is missing.")
        return path.resolve()
    for root in bundle_search_path():
        if _is_bundle(root / str(name_or_path)):
            return (root / str(name_or_path)).resolve()
    known = ", ".join(b.name for b in list_bundles()) or "none"
    raise BundleError(
        f"No bundle named '{name_or_path}'. Known bundles: {known}. "
        f"Give a bundle folder path, or add its parent folder to ${BUNDLE_PATH_ENV}."
    )


def network_key(ckpt: Mapping, path: str | os.PathLike = "checkpoint", key: str | None = None) -> str | None:
    """The entry of a checkpoint that holds the network's state dict, or None for a bare state dict.

    MONAI's CheckpointSaver writes a bare state dict for one object and a dict of state dicts
    for several (``{"model": ..., "optimizer": ...}``); then ``key`` (default ``"model"``, the
    other usual names, or the only entry) is taken. The rule is the one every network's weights
    go through: :func:`mimtl.networks.pretrained.state_dict_key`.

    Raises:
        BundleError: no entry, or several candidate entries, hold the network.
    """
    from mimtl.networks.pretrained import WeightsError, state_dict_key

    try:
        return state_dict_key(ckpt, path, key)
    except WeightsError as e:
        raise BundleError(str(e)) from e


def read_checkpoint(path: str | os.PathLike) -> Mapping:
    """``torch.load`` with ``weights_only=True`` (never runs pickled code) and clear errors.

    Reads through :func:`mimtl.networks.pretrained.load_weights_file`, as network weights are read.

    Raises:
        BundleError: the file does not exist, cannot be read as weights, or holds no mapping.
    """
    from mimtl.networks.pretrained import WeightsError, load_weights_file

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"Checkpoint '{path}' does not exist.")
    try:
        ckpt = load_weights_file(path)
    except WeightsError as e:  # truncated file, pickle with code in it, not a torch file...
        raise BundleError(f"Checkpoint '{path}': {e}") from e
    if not isinstance(ckpt, Mapping):
        raise BundleError(f"Checkpoint '{path}' holds a {type(ckpt).__name__}, not a state dict.")
    return ckpt


def load_checkpoint(path: str | os.PathLike, key: str | None = None) -> dict[str, Any]:
    """The network state dict in a checkpoint (see :func:`network_key`), its tensors without a ``module.`` prefix.

    Unwrapped by :func:`mimtl.networks.pretrained.read_state_dict`, the function every network's weights go through.

    Raises:
        BundleError: unreadable file, or no (unambiguous) state dict in it.
    """
    from mimtl.networks.pretrained import WeightsError, read_state_dict

    ckpt = read_checkpoint(path)
    try:
        return read_state_dict(ckpt, key=key, source=str(path))
    except WeightsError as e:
        raise BundleError(str(e)) from e


@dataclass
class Bundle:
    """A bundle folder, with its metadata and configs, loaded lazily.

    Example::

        bundle = mimtl.load_bundle("xray_color_classification")
        net = bundle.network()                      # weights loaded, eval mode, CPU
        wf = bundle.workflow("inference", dataset_dir="/data/pngs")
        wf.initialize(); wf.run(); wf.finalize()
    """

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def metadata(self) -> dict[str, Any]:
        meta_file = self.path / "configs" / "metadata.json"
        try:
            return json.loads(meta_file.read_text())
        except FileNotFoundError:
            raise BundleError(f"{meta_file} is missing.") from None
        except json.JSONDecodeError as e:
            raise BundleError(f"{meta_file} is not valid JSON: {e}") from None

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "?"))

    @property
    def display_name(self) -> str:
        return str(self.metadata.get("name", self.name))

    @property
    def weights_path(self) -> Path:
        return self.path / "models" / "model.pt"

    @property
    def has_weights(self) -> bool:
        return self.weights_path.is_file()

    @property
    def meta_file(self) -> Path:
        return self.path / "configs" / "metadata.json"

    @property
    def logging_file(self) -> Path | None:
        f = self.path / "configs" / "logging.conf"
        return f if f.is_file() else None

    def config_names(self) -> list[str]:
        """Names of the workflows this bundle has configs for (``train``, ``inference``, ...)."""
        configs = self.path / "configs"
        return sorted({p.stem for p in configs.iterdir() if p.suffix in CONFIG_SUFFIXES and p.stem != "metadata"})

    def config_file(self, name: str) -> Path:
        for suffix in CONFIG_SUFFIXES:
            f = self.path / "configs" / f"{name}{suffix}"
            if f.is_file():
                return f
        raise BundleError(
            f"Bundle '{self.name}' has no config '{name}'. It has: {', '.join(self.config_names()) or 'none'}."
        )

    def config_files(self, name: str, extra: Sequence[str | os.PathLike] = ()) -> list[Path]:
        """The config files of workflow ``name`` in merge order: ``common`` (when the bundle has
        one), the base config, then override files (the evaluate / multi-GPU configs, then
        ``extra`` files such as another lab's override YAML)."""
        for f in extra:
            if not Path(f).is_file():
                raise BundleError(f"Override config file '{f}' does not exist.")
        chain = [name]
        while chain[0] in OVERRIDE_BASES:
            chain.insert(0, OVERRIDE_BASES[chain[0]])
        files = [self.config_file(n) for n in chain]
        if name not in STANDALONE_CONFIGS and COMMON_CONFIG in self.config_names():
            files.insert(0, self.config_file(COMMON_CONFIG))
        return files + [Path(f) for f in extra]

    def parser(self, name: str, extra: Sequence[str | os.PathLike] = (), **override: Any):
        """A MONAI ConfigParser over the workflow's configs and metadata, with ``bundle_root`` set."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config([str(f) for f in self.config_files(name, extra)])
        parser.read_meta(str(self.meta_file))
        parser["bundle_root"] = str(self.path)
        parser.update(override)
        return parser

    def workflow(
        self,
        name: str = "inference",
        extra: Sequence[str | os.PathLike] = (),
        allow_new_keys: bool = False,
        initialize: bool = False,
        configure_logging: bool = True,
        **override: Any,
    ):
        """A MONAI ``ConfigWorkflow`` for config ``name``.

        Args:
            name: the config (``train``, ``evaluate``, ``inference``, ...).
            extra: more override config files, merged last.
            allow_new_keys: let ``override`` add ids the configs do not have (else a typo in an
                id raises :class:`~mimtl.bundle.overrides.ConfigKeyError` instead of being ignored).
            initialize: call ``initialize()`` before returning.
            configure_logging: apply the bundle's ``configs/logging.conf`` (process-wide).
            override: id -> value; ids reach nested entries (``train::trainer::max_epochs``).
        """
        from monai.bundle import ConfigWorkflow

        from mimtl.bundle.overrides import check_override_keys

        files = [str(f) for f in self.config_files(name, extra)]
        check_override_keys(
            self.parser(name, extra), override, source=f"bundle '{self.name}' config '{name}'", allow_new=allow_new_keys
        )
        wf = ConfigWorkflow(
            config_file=files,
            meta_file=str(self.meta_file),
            logging_file=str(self.logging_file) if configure_logging and self.logging_file else False,
            workflow_type=WORKFLOW_TYPES.get(name, "train"),
            **{"bundle_root": str(self.path), **override},
        )
        if initialize:
            wf.initialize()
        return wf

    def network(self, device: str = "cpu", config: str = "inference", weights: str | os.PathLike | None = None):
        """The network of ``config`` with the bundle's weights loaded, in eval mode.

        Raises:
            BundleError: when the bundle ships no weights and none are given: a network with
                random weights is never returned as if it were trained.
        """
        weights = Path(weights) if weights else self.weights_path
        if not weights.is_file():
            raise BundleError(
                f"Bundle '{self.name}' has no weights at {weights}. Train it first "
                f"(mimtl run {self.name} train) or pass weights=PATH."
            )
        net = self.parser(config).get_parsed_content("network_def", instantiate=True)
        net.load_state_dict(load_checkpoint(weights))
        return net.to(device).eval()


def weights_path(spec: Any) -> Any:
    """Resolve ``"bundle:NAME"`` to that bundle's ``models/model.pt``; pass every other value through unchanged.

    Networks take ``weights: None | "imagenet" | <path>`` and do not resolve bundles (networks do not import
    :mod:`mimtl.bundle`); a config turns a bundle name into a path with this function::

        encoder_weights: bundle:xray_color_classification   # or imagenet, null, a path
        network_def:
          _target_: mimtl.networks.HeatmapUNet
          weights: {_target_: mimtl.bundle.weights_path, spec: '@encoder_weights'}

    Args:
        spec: ``"bundle:NAME"`` (``NAME`` a bundle name on :func:`bundle_search_path` or a bundle folder), or any
            other weights value (``None``, ``"imagenet"``, a path), returned as is.

    Returns:
        The path of ``models/model.pt`` as a string, or ``spec``.

    Raises:
        BundleError: no bundle ``NAME``, or it ships no ``models/model.pt``.
    """
    if not (isinstance(spec, str) and spec.startswith("bundle:")):
        return spec
    name = spec[len("bundle:") :].strip()
    if not name:
        raise BundleError(f"{spec!r} names no bundle: write 'bundle:NAME'.")
    bundle = Bundle(find_bundle(name))
    if not bundle.has_weights:
        raise BundleError(
            f"Bundle '{bundle.name}' ({spec!r}) has no trained weights: {bundle.weights_path} does not exist. "
            f"Train it first (mimtl run {bundle.name} train) or give a weights file."
        )
    return str(bundle.weights_path)


def load_bundle(name_or_path: str | os.PathLike) -> Bundle:
    """Find a bundle by name or path, offline, and return it (see :class:`Bundle`)."""
    return Bundle(find_bundle(name_or_path))
