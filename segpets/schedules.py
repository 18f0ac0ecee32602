"""Learning-rate schedules that need the run's length, which only the Trainer knows.

configs/scheduler/*.yaml name them with `_target_` and `_partial_: true`; SegmentationModule
calls the partial with the optimizer and `total_steps` and steps it once per optimizer step.
When `trainer.max_time` is set it also passes `time_fraction`, the share of the time budget
spent so far (`time_fraction(trainer)`), and the schedule runs over whichever of the two
budgets, steps or time, runs out first.
"""

import math
from collections.abc import Callable

import lightning as L
from lightning.pytorch.callbacks import Timer
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from segpets.errors import ConfigError

TimeFraction = Callable[[], float]


def time_fraction(trainer: L.Trainer) -> TimeFraction | None:
    """A function giving the share of `trainer.max_time` spent training so far, in [0, 1].

    It reads Lightning's own Timer, the callback that stops training at max_time, so the LR
    schedule ends where training ends; the Timer keeps its elapsed time in checkpoints, so a
    resumed run continues the schedule where it stopped. Processes share rank 0's clock.
    None without max_time.
    """
    timer = next(
        (c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None),
        None,
    )
    if timer is None:
        return None

    def fraction() -> float:
        elapsed = timer.time_elapsed()
        spent = elapsed / max(elapsed + timer.time_remaining(), 1e-9)
        if trainer.world_size > 1:
            spent = trainer.strategy.broadcast(spent)
        return min(max(spent, 0.0), 1.0)

    return fraction


def budget_fraction(trainer: L.Trainer, epochs_done: int | None = None) -> float | None:
    """The share of the run's budget spent, in [0, 1]: the largest of the time, epoch and
    step shares among the limits the Trainer has (max_time, max_epochs, max_steps); None
    when it has none of them, as with `max_epochs=-1` and no max_time. `epochs_done`
    defaults to `trainer.current_epoch`, which at an epoch's end still counts it as running.
    """
    shares = []
    spent_time = time_fraction(trainer)
    if spent_time is not None:
        shares.append(spent_time())
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        epochs = trainer.current_epoch if epochs_done is None else epochs_done
        shares.append(epochs / trainer.max_epochs)
    if trainer.max_steps > 0:
        shares.append(trainer.global_step / trainer.max_steps)
    return min(max(shares), 1.0) if shares else None


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: float,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    time_fraction: TimeFraction | None = None,
) -> LambdaLR:
    """Linear warm-up from 0 to the base LR, then a cosine decay to `min_lr_ratio` x base LR.

    Stepped once per optimizer step, so the curve spans the whole run whatever the
    number of epochs or batches. With `time_fraction` (a time budget), the decay follows
    the larger of the step and time fractions and reaches its minimum when time runs out;
    `total_steps` may then be infinite (no epoch or step limit).
    """
    if warmup_steps < 0:
        raise ConfigError(f"scheduler.warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"scheduler.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    steps_known = math.isfinite(total_steps)
    total_steps = max(int(total_steps), 1) if steps_known else math.inf
    warmup_steps = min(warmup_steps, total_steps) if steps_known else warmup_steps

    def factor(step: int) -> float:
        warm = (step + 1) / warmup_steps if step < warmup_steps else 1.0
        progress = 0.0
        if steps_known:
            decay_steps = max(total_steps - warmup_steps, 1)
            progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
        if time_fraction is not None:
            progress = max(progress, time_fraction())
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return warm * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)

    return LambdaLR(optimizer, factor)


def constant(
    optimizer: Optimizer, total_steps: float, time_fraction: TimeFraction | None = None
) -> LambdaLR:
    """The base LR for the whole run (seed 000 trained this way), whatever its budget."""
    return LambdaLR(optimizer, lambda step: 1.0)
