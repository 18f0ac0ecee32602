"""torchvision's DeepLabV3 (Chen et al., 2017) as a segpets model."""

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights, WeightsEnum
from torchvision.models.segmentation import (
    DeepLabV3 as TorchvisionDeepLabV3,
)
from torchvision.models.segmentation import (
    deeplabv3_resnet50,
    deeplabv3_resnet101,
)

from segpets.errors import ConfigError
from segpets.models.base import SegmentationModel
from segpets.models.pretrained import (
    Normalization,
    check_freeze_epochs,
    load_pretrained,
    resnet_stem,
)

BACKBONES: dict[str, tuple[Callable[..., TorchvisionDeepLabV3], WeightsEnum]] = {
    "resnet50": (deeplabv3_resnet50, ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (deeplabv3_resnet101, ResNet101_Weights.IMAGENET1K_V1),
}
"""`model.backbone` -> torchvision builder and the ImageNet weights of its backbone."""


class DeepLabV3(SegmentationModel):
    """DeepLabV3 with a dilated ResNet backbone (output stride 8) and an ASPP head.

    torchvision's network, built without weights and without the auxiliary head;
    it already upsamples its logits bilinearly to the input size, and we return its
    "out" tensor. Padding sides to a multiple of 8 keeps its stride-8 grid aligned
    with the image for every input size. `pretrained` applies to the backbone only
    (the ASPP head always starts from scratch), see segpets.models.pretrained.
    """

    output_stride = 8
    input_normalization: Normalization | None = None

    def __init__(
        self,
        backbone: str = "resnet50",
        in_channels: int = 3,
        classes: int = 1,
        pretrained: str | None = "none",
        freeze_encoder_epochs: int = 0,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(
                f"model.backbone must be one of {sorted(BACKBONES)}, got {backbone!r}"
            )
        build, imagenet = BACKBONES[backbone]
        self.freeze_encoder_epochs = check_freeze_epochs(freeze_encoder_epochs)
        self.net = build(weights=None, weights_backbone=None, num_classes=classes, aux_loss=False)
        if in_channels != 3:
            self.net.backbone.conv1 = resnet_stem(in_channels)
        self.input_normalization = load_pretrained(
            self.net.backbone,
            pretrained,
            imagenet,
            f"a torchvision-style {backbone} state dict",
        )

    @property
    def encoder(self) -> nn.Module:
        """The ResNet backbone, for `model.freeze_encoder_epochs`."""
        return self.net.backbone

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]
