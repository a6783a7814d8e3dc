"""Jigsaw tiles for tile-wise autoencoder (T-AE) pretraining (Chen et al., arXiv 2108.03823).

An image is cut into a ``grid x grid`` mosaic of tiles (3 x 3 by default) and the tiles are put
in another order, one of a fixed set of permutations. The network then has to tell which
permutation was applied (a classification task) and to rebuild the *original* image.

Conventions (said once, used by :mod:`mimtl.networks.tile_autoencoder` too):

* tiles are numbered row by row: tile ``k`` covers rows ``k // grid`` and columns ``k % grid``
  of the mosaic;
* a permutation ``p`` is a tuple of ``grid**2`` tile numbers: **position ``i`` of the shuffled
  image shows original tile ``p[i]``**; un-shuffling puts the tile seen at ``i`` back at ``p[i]``;
* permutation 0 of every set is the identity (the order is kept), so the class "order kept" is 0.

The permutation set (:func:`permutation_set`) is chosen greedily for a maximal minimum Hamming
distance among all ``(grid**2)!`` orders (Noroozi & Favaro, 2016), starting from the identity:
each step adds the order whose smallest distance to those chosen so far is largest (the first
such order in lexicographic order on a tie). It is deterministic; the default set of 100 (3 x 3)
is stored in :data:`DEFAULT_PERMUTATIONS` and a test rebuilds it. The public code of the paper
used a set whose minimum distance is 2 (two tiles swapped), which a network can tell apart from
a local seam; this set's minimum distance is far larger (see :func:`min_hamming_distance`).
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Hashable, Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Transform

from mimtl.transforms._tile_permutations import PERMUTATIONS_100_3X3

__all__ = [
    "DEFAULT_NUM_PERMUTATIONS",
    "RandTileShuffle",
    "RandTileShuffleD",
    "RandTileShuffleDict",
    "RandTileShuffled",
    "TileShuffle",
    "TileShuffleD",
    "TileShuffleDict",
    "TileShuffled",
    "min_hamming_distance",
    "permutation_set",
    "shuffle_tiles",
    "tile_image",
    "untile_image",
]

DEFAULT_NUM_PERMUTATIONS = 100


@lru_cache(maxsize=8)
def _greedy_set(n: int, grid: int) -> tuple[tuple[int, ...], ...]:
    tiles = grid * grid
    if tiles > 9:
        raise ValueError(
            f"grid {grid}: the greedy search enumerates (grid**2)! orders; grids above 3 x 3 are not supported."
        )
    every = np.array(list(itertools.permutations(range(tiles))), dtype=np.int8)  # lexicographic, identity first
    if not 1 <= n <= len(every):
        raise ValueError(f"num_permutations must be in [1, {len(every)}] for a {grid} x {grid} grid, got {n}.")
    chosen = [0]
    nearest = (every != every[0]).sum(axis=1)  # each order's distance to the nearest chosen one
    for _ in range(n - 1):
        best = int(np.argmax(nearest))  # first maximum: deterministic
        chosen.append(best)
        nearest = np.minimum(nearest, (every != every[best]).sum(axis=1))
    return tuple(tuple(int(v) for v in every[i]) for i in chosen)


def permutation_set(num_permutations: int = DEFAULT_NUM_PERMUTATIONS, grid: int = 3) -> np.ndarray:
    """The greedy maximal-minimum-Hamming-distance permutation set, ``(num_permutations, grid**2)`` int64.

    Row 0 is the identity. The same arguments give the same set (no randomness).

    Raises:
        ValueError: ``num_permutations`` out of range, or a grid above 3 x 3.
    """
    if int(grid) == 3 and 1 <= int(num_permutations) <= len(PERMUTATIONS_100_3X3):  # stored; greedy = prefix
        return np.array(PERMUTATIONS_100_3X3[: int(num_permutations)], dtype=np.int64)
    return np.array(_greedy_set(int(num_permutations), int(grid)), dtype=np.int64)


def min_hamming_distance(permutations: np.ndarray | Sequence[Sequence[int]]) -> int:
    """The smallest number of positions in which two permutations of the set differ."""
    p = np.asarray(permutations)
    d = (p[:, None, :] != p[None, :, :]).sum(-1)
    d[np.diag_indices(len(p))] = p.shape[1] + 1
    return int(d.min())


def _check_grid(shape: Sequence[int], grid: int) -> None:
    h, w = shape[-2], shape[-1]
    if h % grid or w % grid:
        raise ValueError(
            f"an image of {h} x {w} pixels cannot be cut into {grid} x {grid} equal tiles: crop or resize it."
        )


def tile_image(img: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """``(..., C, H, W) -> (..., grid**2, C, H/grid, W/grid)``, tiles numbered row by row."""
    _check_grid(img.shape, grid)
    *lead, c, h, w = img.shape
    th, tw = h // grid, w // grid
    x = img.reshape(*lead, c, grid, th, grid, tw)
    n = len(lead)
    x = x.permute(*range(n), n + 1, n + 3, n, n + 2, n + 4)  # (..., gy, gx, C, th, tw)
    return x.reshape(*lead, grid * grid, c, th, tw)


def untile_image(tiles: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """The inverse of :func:`tile_image`: ``(..., grid**2, C, h, w) -> (..., C, grid*h, grid*w)``."""
    *lead, k, c, th, tw = tiles.shape
    if k != grid * grid:
        raise ValueError(f"expected {grid * grid} tiles, got {k}.")
    n = len(lead)
    x = tiles.reshape(*lead, grid, grid, c, th, tw).permute(*range(n), n + 2, n, n + 3, n + 1, n + 4)
    return x.reshape(*lead, c, grid * th, grid * tw)


def shuffle_tiles(img: torch.Tensor, permutation: Sequence[int] | torch.Tensor, grid: int = 3) -> torch.Tensor:
    """``img`` (``(C, H, W)`` or ``(B, C, H, W)``) with position ``i`` showing original tile ``permutation[i]``."""
    order = torch.as_tensor(permutation, dtype=torch.long, device=img.device)
    tiles = tile_image(img, grid)
    return untile_image(tiles.index_select(-4, order), grid)


class TileShuffle(Transform):
    """Put the tiles of a channel-first image in the order of permutation ``index`` of the set.

    Args:
        num_permutations: size of the permutation set (:func:`permutation_set`).
        grid: tiles per side.
    """

    backend = [torch.Tensor.__name__]

    def __init__(self, num_permutations: int = DEFAULT_NUM_PERMUTATIONS, grid: int = 3) -> None:
        self.grid = int(grid)
        self.permutations = permutation_set(num_permutations, self.grid)

    def __call__(self, img: torch.Tensor, index: int) -> torch.Tensor:
        if not 0 <= int(index) < len(self.permutations):
            raise ValueError(f"permutation index {index} is outside the set of {len(self.permutations)}.")
        return shuffle_tiles(torch.as_tensor(img), self.permutations[int(index)], self.grid)

    def inverse_permutation(self, index: int) -> np.ndarray:
        """The permutation that undoes permutation ``index``."""
        return np.argsort(self.permutations[int(index)])


class RandTileShuffle(RandomizableTransform):
    """Keep the tile order with probability ``p_keep``, else shuffle by a permutation of the set, uniformly.

    The drawn permutation index (0 = kept) is :attr:`index` after each call.

    Args:
        p_keep: probability of keeping the order (0.7 in the paper).
        num_permutations: size of the set, identity included.
        grid: tiles per side.
    """

    backend = TileShuffle.backend

    def __init__(self, p_keep: float = 0.7, num_permutations: int = DEFAULT_NUM_PERMUTATIONS, grid: int = 3) -> None:
        if not 0.0 <= p_keep <= 1.0:
            raise ValueError(f"p_keep must be in [0, 1], got {p_keep}.")
        RandomizableTransform.__init__(self, prob=1.0)
        self.p_keep = float(p_keep)
        self.shuffler = TileShuffle(num_permutations, grid)
        self.index = 0

    def randomize(self, data: object = None) -> None:
        n = len(self.shuffler.permutations)
        keep = self.R.random() < self.p_keep or n == 1
        self.index = 0 if keep else int(self.R.randint(1, n))

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize()
        return self.shuffler(img, self.index)


class TileShuffled(MapTransform):
    """Dictionary twin of :class:`TileShuffle`: the permutation index is read from ``index_key``."""

    backend = TileShuffle.backend

    def __init__(
        self,
        keys: KeysCollection,
        index_key: str = "perm",
        num_permutations: int = DEFAULT_NUM_PERMUTATIONS,
        grid: int = 3,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.index_key = index_key
        self.shuffler = TileShuffle(num_permutations, grid)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.shuffler(d[key], int(d[self.index_key]))
        return d


class RandTileShuffled(RandomizableTransform, MapTransform):
    """Dictionary twin of :class:`RandTileShuffle`: shuffles ``keys``, stores the index and the original.

    One index is drawn per sample and applied to every key. The permutation index goes to
    ``index_key`` (a 0-d int64 tensor; 0 = order kept) and, when ``original_key`` is given, the
    un-shuffled image of the first key is kept there: the reconstruction target is the original
    image, never the mosaic.

    ``content_seed``: when given, each sample's draw depends only on this seed and the pixels of the
    first key, never on the transform's random state: a fixed validation set, the same in every
    epoch of a training and in a later ``evaluate`` of the same weights.
    """

    backend = TileShuffle.backend

    def __init__(
        self,
        keys: KeysCollection,
        index_key: str = "perm",
        original_key: str | None = "target",
        p_keep: float = 0.7,
        num_permutations: int = DEFAULT_NUM_PERMUTATIONS,
        grid: int = 3,
        allow_missing_keys: bool = False,
        content_seed: int | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.index_key = index_key
        self.original_key = original_key
        self.shuffler = RandTileShuffle(p_keep, num_permutations, grid)
        self.content_seed = content_seed

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandTileShuffled:
        super().set_random_state(seed, state)
        self.shuffler.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if self.content_seed is not None:
            key = next(iter(self.key_iterator(d)), None)
            if key is not None:
                pixels = np.ascontiguousarray(torch.as_tensor(d[key]).detach().cpu().numpy())
                self.shuffler.set_random_state(seed=zlib.crc32(pixels.tobytes(), int(self.content_seed) & 0xFFFFFFFF))
        self.shuffler.randomize()
        first = True
        for key in self.key_iterator(d):
            if first and self.original_key:
                d[self.original_key] = d[key]
            d[key] = self.shuffler(d[key], randomize=False)
            first = False
        d[self.index_key] = torch.tensor(self.shuffler.index, dtype=torch.long)
        return d


TileShuffleD = TileShuffleDict = TileShuffled
RandTileShuffleD = RandTileShuffleDict = RandTileShuffled
