"""What a model costs: FLOPs as torch counts them, per step or per image."""

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs of the ops `run` dispatches (convolutions and matmuls, forward and backward;
    a multiply-add counts as 2)."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def forward_gflops(model: nn.Module, image_size: int, in_channels: int = 3) -> float:
    """GFLOPs of one forward pass of `model` on one `image_size` square, in eval mode."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    image = torch.zeros(1, in_channels, image_size, image_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return count_flops(lambda: model(image)) / 1e9
    finally:
        model.train(was_training)
