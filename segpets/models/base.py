"""The interface every segpets network follows."""

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationModel(nn.Module):
    """Maps images (B, C, H, W) to logits (B, classes, H, W) at the input resolution.

    Encoders halve the resolution `log2(output_stride)` times, so sides must divide by
    `output_stride`. Rather than reject other sizes (as segmentation_models.pytorch
    does), `forward` pads the bottom and right edges by replicating the border up to
    the next multiple and crops the logits back to H x W. The pads come from
    `x.shape[-2:]` and are always applied, possibly zero, and the crop is a negative
    pad rather than a slice: a traced or exported graph (torch.export with dynamic
    H and W, ONNX) then has no branch on whether the input was padded. Subclasses
    implement `forward_padded`.
    """

    output_stride: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.output_stride
        pad_height, pad_width = (-x.shape[-2]) % stride, (-x.shape[-1]) % stride
        x = F.pad(x, (0, pad_width, 0, pad_height), mode="replicate")
        return F.pad(self.forward_padded(x), (0, -pad_width, 0, -pad_height))

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for `x` whose sides are multiples of `output_stride`."""
        raise NotImplementedError
