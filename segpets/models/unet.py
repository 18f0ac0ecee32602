"""The U-Net of Ronneberger et al. (2015), with batch norm and padded convolutions."""

from collections.abc import Sequence

import torch
from torch import nn

from segpets.errors import ConfigError
from segpets.models.base import SegmentationModel
from segpets.models.blocks import DoubleConv, UpBlock


class UNet(SegmentationModel):
    """U-Net trained from scratch; `widths[i]` channels at stride 2**i.

    `len(widths) - 1` max-pool steps, so `output_stride = 2 ** (len(widths) - 1)`.
    The defaults give the paper's network (about 31M parameters).
    """

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512, 1024),
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) < 2:
            raise ConfigError(
                f"model.widths must list at least 2 channel counts (one per resolution), got {list(widths)}"
            )
        self.output_stride = 2 ** (len(widths) - 1)
        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out)
            for c_in, c_out in zip((in_channels, *widths[:-1]), widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            UpBlock(c_in, c_out, c_out, upsample)
            for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.head = nn.Conv2d(widths[0], classes, kernel_size=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)
