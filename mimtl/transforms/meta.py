"""Transforms that give a loaded image mimtl's metadata keys, whichever reader loaded it.

The rules (which keys, what they mean per format) are written once, in
:func:`mimtl.io.meta.standardize_meta`; these are its MONAI array and dictionary twins.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from mimtl.io.meta import standardize_meta

__all__ = ["StandardizeImageMeta", "StandardizeImageMetaD", "StandardizeImageMetaDict", "StandardizeImageMetad"]


class StandardizeImageMeta(Transform):
    """Give a loaded image the mimtl metadata keys, whichever reader loaded it.

    Fills ``spacing`` (mm, array axis order, from the current affine), ``spacing_known`` (False
    for PNG/JPEG and other formats without a physical pixel size, whose spacing is then 1.0),
    ``spacing_source``, and the other :data:`~mimtl.io.STANDARD_META_KEYS` with neutral values when the
    format has no such notion (``modality=""``, ``window=[nan, nan]``). Values a reader already
    set (e.g. :class:`~mimtl.io.DicomXrayReader`'s ``spacing_source``) are kept.

    Args:
        prune: drop every other metadata key (reader headers), so that images read from different
            formats carry identical key sets and can be collated into one batch. A ``space``
            marker saying the affine is LPS is kept (RAS, MONAI's default, is dropped).
    """

    def __init__(self, prune: bool = False) -> None:
        self.prune = prune

    def __call__(self, img: Any, meta_dict: dict | None = None) -> Any:
        """Standardize the metadata of ``img``.

        Args:
            img: a MetaTensor (its ``meta`` is updated in place and it is returned), or an
                array/tensor together with ``meta_dict``.
            meta_dict: the metadata dict of a plain array/tensor; updated in place.

        Raises:
            ValueError: when ``img`` is not a MetaTensor and no ``meta_dict`` is given.
        """
        if isinstance(img, MetaTensor):
            meta = img.meta
        elif meta_dict is not None:
            meta = meta_dict
        else:
            raise ValueError("StandardizeImageMeta needs a MetaTensor, or a tensor/array with its meta_dict.")
        standardize_meta(img, meta, prune=self.prune)
        return img


class StandardizeImageMetad(MapTransform):
    """Dictionary-based wrapper of :class:`StandardizeImageMeta`.

    Args:
        keys: keys of the images to standardize.
        prune: see :class:`StandardizeImageMeta`.
        meta_key_postfix: for items that are not MetaTensors, the metadata is read from
            ``f"{key}_{meta_key_postfix}"`` (MONAI's legacy layout).
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prune: bool = False,
        meta_key_postfix: str = "meta_dict",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.standardizer = StandardizeImageMeta(prune=prune)
        self.meta_key_postfix = meta_key_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = None if isinstance(d[key], MetaTensor) else d.get(f"{key}_{self.meta_key_postfix}")
            d[key] = self.standardizer(d[key], meta_dict=meta)
        return d


StandardizeImageMetaD = StandardizeImageMetaDict = StandardizeImageMetad
