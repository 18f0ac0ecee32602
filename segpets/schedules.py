"""Learning-rate schedules that need the run's length, which only the Trainer knows.

configs/scheduler/*.yaml name them with `_target_` and `_partial_: true`; SegmentationModule
calls the partial with the optimizer and `total_steps` and steps it once per optimizer step.
"""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from segpets.errors import ConfigError


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up from 0 to the base LR, then a cosine decay to `min_lr_ratio` x base LR.

    Stepped once per optimizer step, so the curve spans the whole run whatever the
    number of epochs or batches.
    """
    if warmup_steps < 0:
        raise ConfigError(f"scheduler.warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"scheduler.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    total_steps = max(int(total_steps), 1)
    warmup_steps = min(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        decay_steps = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / decay_steps, 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_steps: int) -> LambdaLR:
    """The base LR for the whole run (seed 000 trained this way)."""
    return LambdaLR(optimizer, lambda step: 1.0)
