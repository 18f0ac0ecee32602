"""Segmentation networks: images (B, C, H, W) -> logits (B, classes, H, W)."""

from segpets.models.attention_unet import AttentionUNet
from segpets.models.base import SegmentationModel
from segpets.models.deeplab import DeepLabV3
from segpets.models.ensemble import EnsembleModel
from segpets.models.resnet_unet import ResNet34UNet, ResNetUNet
from segpets.models.smp_adapter import SMPModel
from segpets.models.unet import UNet

__all__ = [
    "AttentionUNet",
    "DeepLabV3",
    "EnsembleModel",
    "ResNet34UNet",
    "ResNetUNet",
    "SMPModel",
    "SegmentationModel",
    "UNet",
]
