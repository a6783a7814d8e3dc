"""MONAI-style array and dictionary transforms of mimtl."""

from __future__ import annotations

from mimtl.transforms.heatmaps import DECODE_METHODS, LandmarkDecoder, decode_heatmaps
from mimtl.transforms.image import (
    COLOR_MODES,
    LUMINANCE_WEIGHTS,
    EnsureGrayscale,
    EnsureGrayscaleD,
    EnsureGrayscaled,
    EnsureGrayscaleDict,
    ImageFormatError,
)
from mimtl.transforms.landmarks import OUTSIDE_MODES, DecodeLandmarksd, LandmarksToWorldd, SetPixelSpacingd, as_points
from mimtl.transforms.meta import (
    StandardizeImageMeta,
    StandardizeImageMetaD,
    StandardizeImageMetad,
    StandardizeImageMetaDict,
)
from mimtl.transforms.segmentation import (
    ApplyToValidD,
    ApplyToValidd,
    ApplyToValidDict,
    LabelMapToChannels,
    LabelMapToChannelsD,
    LabelMapToChannelsd,
    LabelMapToChannelsDict,
)
from mimtl.transforms.tiles import (
    DEFAULT_NUM_PERMUTATIONS,
    RandTileShuffle,
    RandTileShuffleD,
    RandTileShuffled,
    RandTileShuffleDict,
    TileShuffle,
    TileShuffleD,
    TileShuffled,
    TileShuffleDict,
    min_hamming_distance,
    permutation_set,
    shuffle_tiles,
    tile_image,
    untile_image,
)

__all__ = [
    "COLOR_MODES",
    "DECODE_METHODS",
    "DEFAULT_NUM_PERMUTATIONS",
    "LUMINANCE_WEIGHTS",
    "OUTSIDE_MODES",
    "ApplyToValidD",
    "ApplyToValidDict",
    "ApplyToValidd",
    "DecodeLandmarksd",
    "EnsureGrayscale",
    "EnsureGrayscaleD",
    "EnsureGrayscaleDict",
    "EnsureGrayscaled",
    "ImageFormatError",
    "LabelMapToChannels",
    "LabelMapToChannelsD",
    "LabelMapToChannelsDict",
    "LabelMapToChannelsd",
    "LandmarkDecoder",
    "LandmarksToWorldd",
    "RandTileShuffle",
    "RandTileShuffleD",
    "RandTileShuffleDict",
    "RandTileShuffled",
    "SetPixelSpacingd",
    "StandardizeImageMeta",
    "StandardizeImageMetaD",
    "StandardizeImageMetaDict",
    "StandardizeImageMetad",
    "TileShuffle",
    "TileShuffleD",
    "TileShuffleDict",
    "TileShuffled",
    "as_points",
    "decode_heatmaps",
    "min_hamming_distance",
    "permutation_set",
    "shuffle_tiles",
    "tile_image",
    "untile_image",
]
