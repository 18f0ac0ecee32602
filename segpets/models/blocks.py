"""Building blocks shared by the U-Net decoders."""

import torch
import torch.nn.functional as F
from torch import nn

from segpets.errors import ConfigError


class ConvBNReLU(nn.Sequential):
    """3x3 convolution, batch norm, ReLU; no conv bias since BN adds its own shift."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """The U-Net stage: two ConvBNReLU at the same resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels)
        )


class DeconvUpsample(nn.ConvTranspose2d):
    """Learned 2x upsampling (the original U-Net "up-convolution")."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=2, stride=2)


class BilinearUpsample(nn.Module):
    """Fixed bilinear 2x upsampling then a ConvBNReLU; avoids deconv checkerboard artefacts."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv(x)


UPSAMPLE_BLOCKS: dict[str, type[nn.Module]] = {
    "bilinear": BilinearUpsample,
    "deconv": DeconvUpsample,
}
"""`model.upsample` option -> block that doubles the resolution and maps in -> out channels."""


def upsample_block(name: str) -> type[nn.Module]:
    """The upsampling block for `model.upsample`, or a ConfigError listing the options."""
    if name not in UPSAMPLE_BLOCKS:
        raise ConfigError(f"model.upsample must be one of {sorted(UPSAMPLE_BLOCKS)}, got {name!r}")
    return UPSAMPLE_BLOCKS[name]


class UpBlock(nn.Module):
    """Decoder stage: upsample to `out_channels`, concatenate the encoder skip, DoubleConv.

    `skip_channels=0` makes a stage without skip (the last ResNet34UNet stage).
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, upsample: str = "deconv"
    ) -> None:
        super().__init__()
        self.up = upsample_block(upsample)(in_channels, out_channels)
        self.conv = DoubleConv(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)
