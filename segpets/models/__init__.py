"""Segmentation networks: images (B, C, H, W) -> logits (B, classes, H, W).

`encoder_callbacks` lives in segpets.callbacks; it is named here too, for old imports.
"""

from segpets.callbacks import encoder_callbacks
from segpets.models.attention_unet import AttentionUNet
from segpets.models.base import SegmentationModel
from segpets.models.deeplab import DeepLabV3
from segpets.models.ensemble import EnsembleModel
from segpets.models.resnet34_unet import ResNet34UNet
from segpets.models.smp_adapter import SMPModel
from segpets.models.unet import UNet

__all__ = [
    "AttentionUNet",
    "DeepLabV3",
    "EnsembleModel",
    "ResNet34UNet",
    "SMPModel",
    "SegmentationModel",
    "UNet",
    "encoder_callbacks",
]
