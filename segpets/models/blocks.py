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
    """Learned 2x upsampling (the original U-Net "up-convolution").

    A 2x2 transposed convolution with stride 2 gives every input pixel its own 2x2 output
    patch, so it is one matrix product over channels and a rearrangement of the result.
    Computed that way it has the same parameters and the same result as torch's
    ConvTranspose2d, and under bf16 autocast on a CPU it is faster (scripts/deconv_bench.py
    measures both; docs/performance.md). The output keeps the input's memory format.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        out = self.out_channels
        # (in, out, kh, kw) -> one row per output value of a patch, ordered (kh, kw, out).
        weight = self.weight.permute(2, 3, 1, 0).reshape(4 * out, self.in_channels)
        bias = None if self.bias is None else self.bias.repeat(4)
        patches = F.linear(x.permute(0, 2, 3, 1), weight, bias)  # (B, H, W, kh * kw * out)
        y = patches.view(batch, height, width, 2, 2, out).permute(0, 1, 3, 2, 4, 5)
        y = y.reshape(batch, 2 * height, 2 * width, out).permute(0, 3, 1, 2)
        return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()


class BilinearUpsample(nn.Module):
    """Fixed bilinear 2x upsampling then a ConvBNReLU; avoids deconv checkerboard artefacts."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv = ConvBNReLU(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv(x)


class NearestUpsample(nn.Module):
    """2x nearest-neighbour interpolation, no parameters, as smp's Unet decoder: the
    channels pass through, and the stage's convolutions reduce them after the skip is
    concatenated (more FLOPs than reducing first, as deconv and bilinear do)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


UPSAMPLE_BLOCKS: dict[str, type[nn.Module]] = {
    "bilinear": BilinearUpsample,
    "deconv": DeconvUpsample,
    "nearest": NearestUpsample,
}
"""`model.upsample` option -> block that doubles the resolution of in_channels features;
it outputs its `out_channels` attribute's worth (the stage's width, or in_channels)."""


def upsample_block(name: str) -> type[nn.Module]:
    """The upsampling block for `model.upsample`, or a ConfigError listing the options."""
    if name not in UPSAMPLE_BLOCKS:
        raise ConfigError(f"model.upsample must be one of {sorted(UPSAMPLE_BLOCKS)}, got {name!r}")
    return UPSAMPLE_BLOCKS[name]


class AttentionGate(nn.Module):
    """Additive attention gate of Oktay et al. (2018), "Attention U-Net".

    Weighs each pixel of a skip `x` by psi = sigmoid(conv1x1(relu(Wg g + Wx x))), where
    the gating signal `g` is the decoder feature one level coarser. As in the paper, Wx
    is a 2x2 stride-2 convolution that brings `x` to `g`'s resolution, so the attention
    map is computed at the coarse scale and upsampled bilinearly to the skip's size.
    """

    def __init__(
        self, gate_channels: int, skip_channels: int, inter_channels: int | None = None
    ) -> None:
        super().__init__()
        inter_channels = inter_channels or max(skip_channels // 2, 1)
        self.skip_proj = nn.Conv2d(
            skip_channels, inter_channels, kernel_size=2, stride=2, bias=False
        )
        self.gate_proj = nn.Conv2d(gate_channels, inter_channels, kernel_size=1)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1)

    def attention(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The map psi (B, 1, H, W) in (0, 1) at the skip's resolution."""
        psi = self.psi(F.relu(self.skip_proj(x) + self.gate_proj(g))).sigmoid()
        return F.interpolate(psi, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(g, x)


class UpBlock(nn.Module):
    """Decoder stage: upsample (to `out_channels`, or keeping the input's channels for
    `nearest`), concatenate the encoder skip, DoubleConv to `out_channels`.

    `skip_channels=0` makes a stage without skip (the last ResNetUNet stage). A `gate`
    (an AttentionGate, set by AttentionUNet) reweighs the skip first, gated by the
    block's input; without one the block is the plain U-Net stage.
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, upsample: str = "deconv"
    ) -> None:
        super().__init__()
        self.in_channels, self.skip_channels = in_channels, skip_channels
        self.gate: nn.Module | None = None
        self.up = upsample_block(upsample)(in_channels, out_channels)
        self.conv = DoubleConv(self.up.out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None and self.gate is not None:
            skip = self.gate(x, skip)
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)
