"""Time one update of segpets' EMA against the same average computed tensor by tensor.

    python scripts/ema_bench.py [--steps 20]

Both keep an EMA of ResNet34-UNet's weights and buffers in a torch AveragedModel, as
Lightning's WeightAveraging does after every optimizer step. segpets' EMA updates each
dtype group with one fused lerp; the other is the plain way, a Python expression per
tensor (`avg_fn`). The two run alternately; medians are printed.
"""

import argparse
import functools
import statistics

import torch
from torch.optim.swa_utils import AveragedModel

from segpets.bench import time_alternating
from segpets.callbacks import ema_update, warmed_decay
from segpets.models import ResNetUNet
from segpets.precision import machine


def per_tensor(average, current, updates, decay: float):
    warm = warmed_decay(decay, float(updates))
    return warm * average + (1.0 - warm) * current


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    model, decay = ResNetUNet(), 0.99
    averages = {
        "segpets EMA (fused lerp)": AveragedModel(
            model, use_buffers=True, multi_avg_fn=functools.partial(ema_update, decay=decay)
        ),
        "per-tensor avg_fn": AveragedModel(
            model, use_buffers=True, avg_fn=functools.partial(per_tensor, decay=decay)
        ),
    }
    steps = {
        name: functools.partial(avg.update_parameters, model) for name, avg in averages.items()
    }
    times = time_alternating(steps, steps=args.steps, warmup=3)
    host = machine()
    print(f"ResNet34-UNet, {host['cpu']} ({host['cpu_isa']}), {torch.get_num_threads()} threads")
    for name, seconds in times.items():
        print(f"{name}: {statistics.median(seconds) * 1000:.1f} ms per update")


if __name__ == "__main__":
    main()
