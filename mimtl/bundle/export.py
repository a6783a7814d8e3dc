"""Export a bundle's network to TorchScript or ONNX through MONAI's bundle scripts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mimtl.bundle.bundle import Bundle, BundleError, network_key, read_checkpoint

__all__ = ["example_input_shape", "export_bundle"]

FORMATS = {"torchscript": ".ts", "onnx": ".onnx"}


def example_input_shape(bundle: Bundle, batch: int = 1) -> tuple[int, ...]:
    """``(batch, channels, *spatial)`` of the first network input declared in metadata.json."""
    from monai.bundle.scripts import _get_fake_spatial_shape

    inputs = bundle.metadata.get("network_data_format", {}).get("inputs", {})
    if not inputs:
        raise BundleError(f"{bundle.meta_file}: network_data_format::inputs is empty; cannot build an example input.")
    spec = next(iter(inputs.values()))
    return (batch, int(spec["num_channels"]), *_get_fake_spatial_shape(spec["spatial_shape"]))


def export_bundle(
    bundle: Bundle,
    fmt: str = "torchscript",
    out: str | os.PathLike | None = None,
    use_trace: bool | None = None,
    config: str = "inference",
) -> Path:
    """Export ``network_def`` with the bundle's weights; returns the written file.

    The file is written under a temporary name and moved into place, so an interrupted export
    never leaves a half-written model. TorchScript tries scripting first and falls back to
    tracing with the metadata's input shape; ONNX always traces.

    Args:
        bundle: the bundle.
        fmt: ``"torchscript"`` or ``"onnx"``.
        out: output file; default ``models/model.ts`` / ``models/model.onnx`` in the bundle.
        use_trace: force tracing (True) or scripting (False); None tries scripting first.
        config: the config that defines ``network_def``.
    """
    from monai.bundle import ckpt_export, onnx_export

    if fmt not in FORMATS:
        raise BundleError(f"Unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    if not bundle.has_weights:
        raise BundleError(f"Bundle '{bundle.name}' has no weights at {bundle.weights_path}; nothing to export.")
    out = Path(out) if out else bundle.weights_path.with_suffix(FORMATS[fmt])
    out.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        net_id="network_def",
        ckpt_file=str(bundle.weights_path),
        meta_file=str(bundle.meta_file),
        config_file=[str(f) for f in bundle.config_files(config)],  # common.yaml first
        key_in_ckpt=network_key(read_checkpoint(bundle.weights_path), bundle.weights_path) or "",
        input_shape=list(example_input_shape(bundle)),
        bundle_root=str(bundle.path),
    )
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_file = Path(tmp) / out.name
        if fmt == "onnx":
            onnx_export(filepath=str(tmp_file), use_trace=True, **kwargs)
        elif use_trace is None:
            try:
                ckpt_export(filepath=str(tmp_file), use_trace=False, **kwargs)
            except Exception:  # not scriptable: tracing is what the model zoo falls back to
                ckpt_export(filepath=str(tmp_file), use_trace=True, **kwargs)
        else:
            ckpt_export(filepath=str(tmp_file), use_trace=use_trace, **kwargs)
        os.replace(tmp_file, out)
    return out
