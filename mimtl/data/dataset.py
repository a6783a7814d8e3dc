"""A dataset for inference that lists failed files instead of stopping or dropping them.

Training refuses a broken datalist up front (:func:`mimtl.data.datalist.load_datalist`). Inference
on a user's folder must do the opposite: run every file it can and *skip nothing silently*. One
unreadable or unsuitable file (truncated, colour, a CT volume, NaN pixels) must neither end the
run with a traceback from a worker process nor vanish from the results. :class:`TolerantDataset`
turns such an item into a placeholder that collates with the others and carries the reason, so a
writer such as :class:`mimtl.handlers.ClassificationWriter` lists it as ``failed: <reason>``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import Dataset, MetaTensor
from monai.utils import ImageMetaKey, ensure_tuple

__all__ = ["ERROR_KEY", "TolerantDataset", "error_reason", "tolerant_collate"]

logger = logging.getLogger(__name__)

#: The key :class:`TolerantDataset` adds to every item: ``""`` when it loaded, else the reason.
ERROR_KEY = "error"

_MAX_REASON = 300


def _is_monai_wrapper(error: BaseException) -> bool:
    # MONAI's Compose/apply_transform re-raise every transform error as this, ``from`` the original
    return type(error) is RuntimeError and f"{error}".startswith("applying transform")


def error_reason(error: BaseException) -> str:
    """One line saying why an item failed: ``"<ExceptionType>: <message>"``.

    MONAI's ``Compose`` re-raises a transform's error as ``RuntimeError("applying transform ...")``
    from the original, and readers chain low-level errors below their own. The error shown is the
    first mimtl error in the chain (:func:`mimtl.errors.root_cause`; its file name is
    left out, the output names the file anyway), else the first error below MONAI's wrappers
    (PIL's ``OSError: image file is truncated``, not the ``struct.error`` under it). Whitespace is
    collapsed and the text cut to 300 characters.
    """
    from mimtl.errors import root_cause
    from mimtl.io.meta import ImageReadError

    cause = root_cause(error)
    if not type(cause).__module__.startswith("mimtl"):
        cause = error
        while _is_monai_wrapper(cause) and cause.__cause__ is not None:
            cause = cause.__cause__
    text = cause.reason if isinstance(cause, ImageReadError) and cause.filename else f"{cause}"
    text = " ".join(text.split()) or "no message"
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return f"{type(cause).__name__}: {text}"


class TolerantDataset(Dataset):
    """A MONAI ``Dataset`` whose items never raise: a failed item becomes a placeholder with its reason.

    Every item gets the key ``"error"`` (:data:`ERROR_KEY`): ``""`` when loading and transforming
    succeeded; otherwise the item is replaced by a placeholder

    - ``keys`` -> a zero MetaTensor of ``placeholder_shape`` whose meta ``filename_or_obj`` is the
      input's file (so writers can name it),
    - the entries of ``placeholder_values`` (e.g. a dummy ``label``),
    - ``"error"`` -> a one-line reason, ``"<ExceptionType>: <message>"`` (see :func:`error_reason`),

    and a warning naming the file and reason is logged (once per item and process). Placeholders
    collate with real items under MONAI's ``list_data_collate`` and PyTorch's default collate,
    also in ``DataLoader`` worker processes, so the batch goes through the network as usual (on
    zeros) and a writer reports the row as failed. MONAI's collate keeps only the meta keys all
    items of a batch share, so a placeholder would strip the good films of its batch of their
    ``original_affine`` and spacing: give the ``DataLoader`` ``collate_fn=``:func:`tolerant_collate`.
    Use it for
    inference, where the output must list every input; for training use
    :func:`~mimtl.data.datalist.load_datalist`, which refuses bad files before the first step.

    ``placeholder_shape`` must be the shape the transform gives a good item (e.g. the ``Resized``
    spatial size with one channel); a dict gives each image key its own (e.g. the network input
    and a small copy of the film for overlays, ``{image: [1, 256, 256], overlay_image: [1, 512, 512]}``),
    and its keys are the image keys unless ``keys`` names them.  ``placeholder_values`` must cover every other key the
    transform outputs that the batch needs (the batch takes the keys of its first item).

    Example (bundle config)::

        dataset:
          _target_: mimtl.data.TolerantDataset
          data: {_target_: mimtl.data.datalist.list_images, source: '@input', recursive: true, on_error: keep}
          transform: '@preprocessing'
          placeholder_shape: [1, 224, 224]

    Args:
        data: the datalist, ``[{"image": path, ...}, ...]``.
        transform: the preprocessing (e.g. a ``Compose`` starting with ``LoadImaged``).
        placeholder_shape: shape of each ``keys`` tensor in a placeholder item, or a dict key -> shape.
        keys: the image keys; the first one names the file in messages (default: the keys of a
            ``placeholder_shape`` dict, else ``"image"``).
        placeholder_values: other keys of a placeholder item with their values (copied per item).
        placeholder_dtype: data type of the placeholder tensors.
    """

    def __init__(
        self,
        data: Sequence,
        transform: Sequence[Callable] | Callable | None = None,
        placeholder_shape: Sequence[int] | Mapping[str, Sequence[int]] = (1, 224, 224),
        keys: KeysCollection | None = None,
        placeholder_values: Mapping[str, Any] | None = None,
        placeholder_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(data=data, transform=transform)
        per_key = isinstance(placeholder_shape, Mapping)
        self.keys = tuple(ensure_tuple(keys if keys is not None else (list(placeholder_shape) if per_key else "image")))
        if not self.keys:
            raise ValueError("keys must name at least one image key.")
        if per_key and set(self.keys) - set(placeholder_shape):
            raise ValueError(f"placeholder_shape gives no shape for {sorted(set(self.keys) - set(placeholder_shape))}.")
        self.shapes = {k: self._shape(placeholder_shape[k] if per_key else placeholder_shape) for k in self.keys}
        #: the placeholder shape of the first key (of every key unless ``placeholder_shape`` is a dict)
        self.placeholder_shape = self.shapes[self.keys[0]]
        self.placeholder_values = dict(placeholder_values or {})
        self.placeholder_dtype = placeholder_dtype
        self._logged: set[int] = set()

    @staticmethod
    def _shape(shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(s) for s in ensure_tuple(shape))
        if not shape or any(s < 0 for s in shape):
            raise ValueError(f"placeholder_shape must be a non-empty shape, got {shape}.")
        return shape

    def _transform(self, index: int) -> Any:
        try:
            out = super()._transform(index)
        except Exception as e:  # any reader/transform error: reported in the output, not raised
            return self._placeholder(index, e)
        for item in out if isinstance(out, list) else [out]:  # transforms giving several samples
            if isinstance(item, dict):
                item.setdefault(ERROR_KEY, "")
        return out

    def source_name(self, index: int) -> str:
        """The file of item ``index`` as the datalist gives it (the first of ``keys``)."""
        item = self.data[index]
        value = item.get(self.keys[0], "") if isinstance(item, Mapping) else item
        if isinstance(value, (list, tuple)):  # channels stacked from several files
            value = value[0] if value else ""
        return f"{value}"

    def _placeholder(self, index: int, error: BaseException) -> dict:
        name, reason = self.source_name(index), error_reason(error)
        if index not in self._logged:
            self._logged.add(index)
            logger.warning("%s: cannot be used, listed as failed (%s)", name or f"item {index}", reason)
        item: dict[str, Any] = {}
        for key, value in self.placeholder_values.items():
            item[key] = copy.deepcopy(value)  # batches must not share (and mutate) one object
        for key in self.keys:
            meta = {ImageMetaKey.FILENAME_OR_OBJ: name}
            item[key] = MetaTensor(torch.zeros(self.shapes[key], dtype=self.placeholder_dtype), meta=meta)
        item[ERROR_KEY] = reason
        return item


def tolerant_collate(batch: Sequence[Any]) -> Any:
    """MONAI's ``list_data_collate``, after every MetaTensor of a key gets the meta keys any item has.

    A :class:`TolerantDataset` placeholder carries little metadata; MONAI collates only the keys
    all items share, so one failed file in a batch would take ``original_affine``, ``spacing`` and
    the rest from the good films beside it (their points would then come out in the network's
    grid). The failed items' missing keys are filled with copies of a good item's values: only
    failed items (whose rows report the failure, not a prediction) get borrowed values.

    Example (bundle config)::

        dataloader: {_target_: DataLoader, dataset: '@dataset', batch_size: 8,
                     collate_fn: {_target_: mimtl.data.tolerant_collate, _mode_: callable}}
    """
    from monai.data import list_data_collate

    items = [b for b in batch if isinstance(b, dict)]
    failed = [item for item in items if item.get(ERROR_KEY)]
    good = [item for item in items if not item.get(ERROR_KEY)]
    for key in {k for item in good for k, v in item.items() if isinstance(v, MetaTensor)}:
        donors = [item[key].meta for item in good if isinstance(item.get(key), MetaTensor)]
        for item in failed:
            if isinstance(item.get(key), MetaTensor):
                for name in donors[0].keys() - item[key].meta.keys():
                    item[key].meta[name] = copy.deepcopy(donors[0][name])
    return list_data_collate(batch)
