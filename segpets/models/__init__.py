"""Segmentation networks: images (B, C, H, W) -> logits (B, classes, H, W)."""

from segpets.models.base import SegmentationModel
from segpets.models.resnet34_unet import ResNet34UNet
from segpets.models.unet import UNet

__all__ = ["ResNet34UNet", "SegmentationModel", "UNet"]
