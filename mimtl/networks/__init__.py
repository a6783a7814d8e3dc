"""Network architectures (one module per architecture) and their offline pretrained weights.

Every network takes its initial weights as ``weights: None | "imagenet" | <path>`` and loads them through
:mod:`mimtl.networks.pretrained` (:func:`load_pretrained`, :func:`adapt_input_conv`, a key map per network).

Importing this package registers ``"efficientnet-lite0"`` ... ``"efficientnet-lite4"`` as MONAI ``FlexibleUNet``
backbones. Classification: :func:`create_backbone` (uniform backbone interface, torchvision/timm weight files),
color modules (:func:`color_module`) and :class:`ColorizedClassifier` (Morra et al., ICPR 2020).
"""

from __future__ import annotations

from mimtl.networks.aux_recon_seg import DECODERS, AuxReconSegNet, PSPDecoder
from mimtl.networks.backbones import (
    BACKBONES,
    IMAGENET_BACKBONES,
    DenseNetBackbone,
    EfficientNetLiteBackbone,
    ResNetBackbone,
    create_backbone,
    load_backbone_weights,
)
from mimtl.networks.classifier import ColorizedClassifier, load_color_module
from mimtl.networks.color import (
    COLOR_MODULES,
    XRAY_MEAN,
    XRAY_STD,
    ColorUNet,
    Conv1x1Color,
    DeconvColor,
    GrayToRGB,
    PixelShuffleColor,
    color_module,
    icnr_,
)
from mimtl.networks.densenet_encoder import (
    DENSENET_CONFIGS,
    DenseNetEncoder,
    torchvision_densenet_key,
)
from mimtl.networks.efficientnet_lite import (
    EFFICIENTNET_LITE_PARAMS,
    IMAGENET_LITE_MEAN,
    IMAGENET_LITE_STD,
    EfficientNetLite,
    EfficientNetLiteEncoder,
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
    efficientnet_lite3,
    efficientnet_lite4,
    efficientnet_lite_key_map,
    get_efficientnet_lite_image_size,
)
from mimtl.networks.encoders import build_encoder, encoder_channels, init_encoder
from mimtl.networks.feature_gan import FeatureDiscriminator, FeatureGenerator
from mimtl.networks.heatmap_unet import (
    ENCODER_MIN_MATCH,
    HeatmapUNet,
    ImageNetResNetEncoder,
    load_encoder_weights,
)
from mimtl.networks.pretrained import (
    LoadResult,
    WeightsError,
    adapt_input_conv,
    load_pretrained,
    read_state_dict,
)
from mimtl.networks.tile_autoencoder import TileAutoencoder, TileAutoencoderReconstruction
from mimtl.networks.tumour_grader import GradeHead, TumourGrader, load_grade_head, save_grade_head
from mimtl.networks.weights import (
    get_efficientnet_lite_weights_path,
    load_efficientnet_lite_imagenet,
)

__all__ = [
    "BACKBONES",
    "COLOR_MODULES",
    "DECODERS",
    "DENSENET_CONFIGS",
    "EFFICIENTNET_LITE_PARAMS",
    "ENCODER_MIN_MATCH",
    "IMAGENET_BACKBONES",
    "IMAGENET_LITE_MEAN",
    "IMAGENET_LITE_STD",
    "XRAY_MEAN",
    "XRAY_STD",
    "AuxReconSegNet",
    "ColorUNet",
    "ColorizedClassifier",
    "Conv1x1Color",
    "DeconvColor",
    "DenseNetBackbone",
    "DenseNetEncoder",
    "EfficientNetLite",
    "EfficientNetLiteBackbone",
    "EfficientNetLiteEncoder",
    "FeatureDiscriminator",
    "FeatureGenerator",
    "GradeHead",
    "GrayToRGB",
    "HeatmapUNet",
    "ImageNetResNetEncoder",
    "LoadResult",
    "PSPDecoder",
    "PixelShuffleColor",
    "ResNetBackbone",
    "TileAutoencoder",
    "TileAutoencoderReconstruction",
    "TumourGrader",
    "WeightsError",
    "adapt_input_conv",
    "build_encoder",
    "color_module",
    "create_backbone",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite3",
    "efficientnet_lite4",
    "efficientnet_lite_key_map",
    "encoder_channels",
    "get_efficientnet_lite_image_size",
    "get_efficientnet_lite_weights_path",
    "icnr_",
    "init_encoder",
    "load_backbone_weights",
    "load_color_module",
    "load_efficientnet_lite_imagenet",
    "load_encoder_weights",
    "load_grade_head",
    "load_pretrained",
    "read_state_dict",
    "save_grade_head",
    "torchvision_densenet_key",
]
