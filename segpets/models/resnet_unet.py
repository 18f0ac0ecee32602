"""U-Net decoder on a torchvision ResNet encoder, laid out like segmentation_models.pytorch's Unet."""

from collections.abc import Callable, Sequence

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet, WeightsEnum

from segpets.errors import ConfigError
from segpets.models.base import SegmentationModel
from segpets.models.blocks import UpBlock
from segpets.models.pretrained import (
    Normalization,
    check_freeze_epochs,
    load_pretrained,
    resnet_stem,
)

ENCODERS: dict[str, tuple[Callable[..., ResNet], WeightsEnum]] = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V2),
}
"""`model.encoder` choices: torchvision's builder and the weights `model.pretrained=imagenet` loads."""


def encoder_spec(name: str) -> tuple[Callable[..., ResNet], WeightsEnum]:
    if name not in ENCODERS:
        raise ConfigError(
            f"model.encoder={name!r} is not one of {', '.join(ENCODERS)}. Other encoders: "
            "model=smp model.encoder=NAME (segmentation-models-pytorch, an optional extra)"
        )
    return ENCODERS[name]


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without avgpool and fc, returning features at strides 2..32.

    Submodule names are torchvision's, so an ImageNet state dict (minus `fc.*`) loads
    with `load_state_dict` (`model.pretrained`); `imagenet` names torchvision's weights.
    """

    def __init__(self, name: str = "resnet34", in_channels: int = 3) -> None:
        super().__init__()
        builder, self.imagenet = encoder_spec(name)
        resnet = builder(weights=None)
        self.conv1 = resnet.conv1
        if in_channels != 3:
            self.conv1 = resnet_stem(in_channels)
        self.bn1, self.relu, self.maxpool = resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        expansion = type(resnet.layer1[0]).expansion  # 1 for basic blocks, 4 for bottlenecks
        self.out_channels = (64, *(width * expansion for width in (64, 128, 256, 512)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(stem))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        return [stem, x1, x2, x3, self.layer4(x3)]


class ResNetUNet(SegmentationModel):
    """A ResNet encoder (`encoder`: resnet18, resnet34 or resnet50) and five up blocks
    back to the input resolution.

    Skips come from layer3, layer2, layer1 and the stem (stride 2); the last block has
    none. Skips and `decoder_channels` are those of smp's `Unet(encoder)`. With
    `upsample="nearest"` the decoder is smp's too (nearest 2x, concatenate, two convs);
    `deconv` and `bilinear` reduce the channels to the block's width before concatenating,
    which costs fewer FLOPs (docs/models.md).
    The head is a 1x1 convolution where smp's is 3x3.

    `pretrained` (none | imagenet | PATH, see segpets.models.pretrained) starts the
    encoder from trained weights; `freeze_encoder_epochs` keeps it frozen for the first
    epochs (segpets.callbacks.FreezeEncoder), while the decoder settles.
    """

    output_stride = 32
    input_normalization: Normalization | None = None
    """(mean, std) the encoder's pretrained weights expect of the inputs, if any."""

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 1,
        encoder: str = "resnet34",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        upsample: str = "deconv",
        pretrained: str | None = "none",
        freeze_encoder_epochs: int = 0,
    ) -> None:
        super().__init__()
        decoder_channels = tuple(decoder_channels)
        if len(decoder_channels) != 5:
            raise ConfigError(
                f"model.decoder_channels must list 5 channel counts (one per decoder block), got {list(decoder_channels)}"
            )
        self.freeze_encoder_epochs = check_freeze_epochs(freeze_encoder_epochs)
        self.encoder = ResNetEncoder(encoder, in_channels)
        self.input_normalization = load_pretrained(
            self.encoder,
            pretrained,
            self.encoder.imagenet,
            f"a torchvision-style {encoder} state dict",
        )
        *skip_channels, in_deepest = self.encoder.out_channels
        self.decoder = nn.ModuleList(
            UpBlock(c_in, c_skip, c_out, upsample)
            for c_in, c_skip, c_out in zip(
                (in_deepest, *decoder_channels[:-1]),
                (*skip_channels[::-1], 0),
                decoder_channels,
                strict=True,
            )
        )
        self.head = nn.Conv2d(decoder_channels[-1], classes, kernel_size=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        *skips, x = self.encoder(x)
        for block in self.decoder:
            x = block(x, skips.pop() if skips else None)
        return self.head(x)


ResNet34UNet = ResNetUNet
"""The name configs and checkpoints written before `model.encoder` existed give the model
(their `_target_`); they omit `encoder`, so they build the ResNet34 they were trained with."""
