"""The `peak` section: what the machine's convolution kernels reach."""

from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from segpets.bench.timing import summarize, time_steps


def peak_section(
    device: torch.device, probe: DictConfig, steps: int, warmup: int
) -> dict[str, Any]:
    """fwd+bwd GFLOP/s of a 3x3 convolution in fp32 and bf16, contiguous and channels_last:
    what the machine's convolution kernels reach, to compare the models with."""
    batch, channels, size = probe.batch, probe.channels, probe.size
    variants = {}
    for dtype in (torch.float32, torch.bfloat16):
        for channels_last in (False, True):
            name = ("fp32" if dtype == torch.float32 else "bf16") + ("_cl" if channels_last else "")
            variants[name] = _conv_probe(
                device, dtype, channels_last, (batch, channels, size, size), steps, warmup
            )
    best = max(variants, key=lambda name: variants[name]["gflops"])
    return {
        "probe": f"Conv2d {channels}->{channels} 3x3, batch {batch} at {size} px, "
        "forward + backward",
        "variants": variants,
        "best": best,
        "gflops": variants[best]["gflops"],
    }


def _conv_probe(
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
    shape: tuple[int, int, int, int],
    steps: int,
    warmup: int,
) -> dict[str, Any]:
    torch.manual_seed(0)
    batch, channels, height, width = shape
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    conv = nn.Conv2d(channels, channels, 3, padding=1).to(device, dtype)
    conv = conv.to(memory_format=memory_format)
    x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    x.requires_grad_()
    grad = torch.ones_like(x)

    def step() -> None:
        conv(x).backward(grad)
        conv.zero_grad(set_to_none=True)
        x.grad = None

    # Forward 2 * B*H*W * C*C*9; backward twice that (input and weight gradients), as
    # FlopCounterMode counts it.
    flops = 3 * 2 * batch * height * width * channels * channels * 9
    return summarize(time_steps(step, steps, warmup, device), batch, flops)
