"""Network architectures (one module per architecture) and their offline pretrained weights.

Importing this package registers ``"efficientnet-lite0"`` ... ``"efficientnet-lite4"`` as MONAI ``FlexibleUNet``
backbones.
"""

from __future__ import annotations

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
    get_efficientnet_lite_image_size,
)
from mimtl.networks.weights import get_efficientnet_lite_weights_path, load_efficientnet_lite_imagenet

__all__ = [
    "EFFICIENTNET_LITE_PARAMS",
    "IMAGENET_LITE_MEAN",
    "IMAGENET_LITE_STD",
    "EfficientNetLite",
    "EfficientNetLiteEncoder",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite3",
    "efficientnet_lite4",
    "get_efficientnet_lite_image_size",
    "get_efficientnet_lite_weights_path",
    "load_efficientnet_lite_imagenet",
]
