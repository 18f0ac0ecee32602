"""Attention U-Net (Oktay et al., 2018): the U-Net with attention gates on its skips."""

from typing import Any

from segpets.models.blocks import AttentionGate
from segpets.models.unet import UNet


class AttentionUNet(UNet):
    """UNet whose decoder blocks weigh each skip by an AttentionGate before concatenating.

    Same encoder, decoder, widths and `upsample` switch as UNet; each gate is driven
    by the decoder feature entering the block (one level coarser than its skip), so
    the network learns to pass on only the skip pixels the decoder finds relevant.
    The gates add a few percent of parameters and FLOPs (docs/models.md).
    """

    def __init__(self, **unet_options: Any) -> None:
        super().__init__(**unet_options)
        for block in self.decoder:
            block.gate = AttentionGate(block.in_channels, block.skip_channels)
