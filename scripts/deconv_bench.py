"""Time segpets' DeconvUpsample against torch's ConvTranspose2d, forward + backward.

    python scripts/deconv_bench.py [--size 128] [--batch 8] [--steps 20] [--fp32]

Both compute the same 2x2 stride-2 transposed convolution with the same parameters;
DeconvUpsample does it as one matrix product over channels and a rearrangement. The
shapes are the five up-steps of ResNet34-UNet's decoder at `--size` px (512->256 at
1/32 of the size, ..., 32->16 at 1/2), channels_last, under bf16 autocast unless
`--fp32`. The two run alternately, step by step; medians are printed per shape.
"""

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn

from segpets.bench import time_alternating
from segpets.models.blocks import DeconvUpsample
from segpets.runtime import keep_host_memory

# (in, out channels, stride of the input) of ResNet34UNet's decoder blocks.
SHAPES = ((512, 256, 32), (256, 128, 16), (128, 64, 8), (64, 32, 4), (32, 16, 2))


def step(layer: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> Callable[[], None]:
    def run() -> None:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            y = layer(x)
        y.backward(torch.ones_like(y))
        x.grad = None
        layer.zero_grad(set_to_none=True)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fp32", action="store_true", help="no autocast")
    args = parser.parse_args()
    keep_host_memory()
    dtype = None if args.fp32 else torch.bfloat16
    print(
        f"batch {args.batch} at {args.size} px, {'fp32' if args.fp32 else 'bf16 autocast'}, "
        f"channels_last, {torch.get_num_threads()} threads; ms per forward + backward"
    )
    totals = {"ConvTranspose2d": 0.0, "DeconvUpsample": 0.0}
    for c_in, c_out, stride in SHAPES:
        side = args.size // stride
        torch.manual_seed(0)
        ours = DeconvUpsample(c_in, c_out).to(memory_format=torch.channels_last)
        theirs = nn.ConvTranspose2d(c_in, c_out, 2, stride=2).to(memory_format=torch.channels_last)
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(args.batch, c_in, side, side).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        steps = {"ConvTranspose2d": step(theirs, x, dtype), "DeconvUpsample": step(ours, x, dtype)}
        times = time_alternating(steps, args.steps, warmup=3)
        medians = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        for name, value in medians.items():
            totals[name] += value
        print(
            f"{c_in:>4} -> {c_out:<4} at {side:>3} px: ConvTranspose2d "
            f"{medians['ConvTranspose2d']:6.2f}  DeconvUpsample {medians['DeconvUpsample']:6.2f}"
        )
    ratio = totals["ConvTranspose2d"] / totals["DeconvUpsample"]
    print(
        f"all five: ConvTranspose2d {totals['ConvTranspose2d']:.2f} ms, "
        f"DeconvUpsample {totals['DeconvUpsample']:.2f} ms ({ratio:.2f}x)"
    )


if __name__ == "__main__":
    main()
