"""Training under a time budget: the LR schedule follows trainer.max_time, the EMA of the
weights is what validation, checkpoints and test use, and experiment=budget runs."""

import json
import math
from pathlib import Path

import lightning as L
import lightning.pytorch.callbacks.timer as lightning_timer
import pytest
import torch
from lightning.pytorch.callbacks import Timer

from segpets.builders import normalize_max_time
from segpets.callbacks import EMA, ema_update
from segpets.checkpointing import read_checkpoint
from segpets.errors import ConfigError
from segpets.eval import evaluate
from segpets.schedules import budget_fraction, time_fraction, warmup_cosine
from segpets.train import train
from tests.helpers import TINY_UNET, compose_train, tiny_run_overrides


class Clock:
    """time.monotonic for Lightning's Timer, set by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(lightning_timer.time, "monotonic", fake)
    return fake


def started_timer(trainer: L.Trainer) -> Timer:
    timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
    timer.on_train_start(trainer, None)
    return timer


def budget_scheduler(trainer: L.Trainer, **options) -> torch.optim.lr_scheduler.LambdaLR:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return warmup_cosine(
        optimizer, total_steps=math.inf, time_fraction=time_fraction(trainer), **options
    )


def factor(scheduler, step: int) -> float:
    return scheduler.lr_lambdas[0](step)


def test_the_schedule_reaches_its_floor_when_the_clock_reaches_max_time(clock):
    trainer = L.Trainer(max_time={"seconds": 100}, logger=False, enable_checkpointing=False)
    started_timer(trainer)
    scheduler = budget_scheduler(trainer, min_lr_ratio=0.1)
    assert factor(scheduler, 5) == pytest.approx(1.0)
    clock.now += 50
    assert factor(scheduler, 500) == pytest.approx(0.1 + 0.9 * 0.5)
    clock.now += 50
    assert factor(scheduler, 501) == pytest.approx(0.1)
    clock.now += 30  # time spent past the budget (the last step) stays at the floor
    assert factor(scheduler, 502) == pytest.approx(0.1)


def test_warmup_counts_steps_and_the_decay_is_continuous_after_it(clock):
    trainer = L.Trainer(max_time={"seconds": 100}, logger=False, enable_checkpointing=False)
    started_timer(trainer)
    scheduler = budget_scheduler(trainer, warmup_steps=4)
    clock.now += 10
    decayed = 0.5 * (1 + math.cos(math.pi * 0.1))
    assert [factor(scheduler, s) for s in range(5)] == pytest.approx(
        [0.25 * decayed, 0.5 * decayed, 0.75 * decayed, decayed, decayed]
    )


def test_a_resumed_run_continues_the_schedule_where_it_stopped(clock):
    first = L.Trainer(max_time={"seconds": 100}, logger=False, enable_checkpointing=False)
    timer = started_timer(first)
    clock.now += 40
    before = factor(budget_scheduler(first), 300)
    state = timer.state_dict()

    clock.now += 3600  # the run is resumed an hour later
    resumed = L.Trainer(max_time={"seconds": 100}, logger=False, enable_checkpointing=False)
    resumed_timer = next(c for c in resumed.callbacks if isinstance(c, Timer))
    resumed_timer.load_state_dict(state)
    resumed_timer.on_train_start(resumed, None)
    assert factor(budget_scheduler(resumed), 300) == pytest.approx(before)
    clock.now += 60
    assert factor(budget_scheduler(resumed), 301) == pytest.approx(0.0, abs=1e-12)


def test_the_budget_spent_is_the_time_share_when_time_runs_out_first(clock):
    trainer = L.Trainer(
        max_time={"seconds": 100}, max_epochs=10, logger=False, enable_checkpointing=False
    )
    started_timer(trainer)
    clock.now += 40
    assert budget_fraction(trainer, epochs_done=1) == pytest.approx(0.4)  # not 1/10
    assert budget_fraction(trainer, epochs_done=5) == pytest.approx(0.5)  # epochs lead now
    clock.now += 80
    assert budget_fraction(trainer) == 1.0


def test_without_max_time_the_schedule_counts_steps_as_before():
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False)
    assert time_fraction(trainer) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("00:00:10:00", "00:00:10:00"),
        ({"minutes": 10}, "00:00:10:00"),
        ({"hours": 25, "seconds": 5}, "01:01:00:05"),
        (None, None),
    ],
)
def test_max_time_takes_lightnings_string_or_a_dict(value, expected):
    assert normalize_max_time(value) == expected


@pytest.mark.parametrize("value", ["10min", "10:00", {"minute": 10}, {}])
def test_a_bad_max_time_names_both_formats(value):
    with pytest.raises(ConfigError, match=r"trainer\.max_time=.*DD:HH:MM:SS.*minutes:10"):
        normalize_max_time(value)


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, -0.2])
def test_ema_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ConfigError, match=r"callbacks\.ema\.decay must be between 0 and 1"):
        EMA(decay=decay)


def test_ema_update_moves_by_the_warmed_up_decay():
    # After n updates the kept share is min(decay, (1 + n) / (10 + n)): 0.1 at n = 0,
    # then 0.5 (the decay) once (1 + n) / (10 + n) passes it.
    average, current = [torch.tensor([0.0, 10.0])], [torch.tensor([1.0, 20.0])]
    ema_update(average, current, torch.tensor(0), decay=0.5)
    assert average[0].tolist() == pytest.approx([0.9, 19.0])
    ema_update(average, current, torch.tensor(100), decay=0.5)
    assert average[0].tolist() == pytest.approx([0.95, 19.5])
    counter = [torch.tensor(3)]
    ema_update(counter, [torch.tensor(7)], torch.tensor(5), decay=0.5)
    assert counter[0].item() == 7


# experiment=budget writes best.ckpt weights-only; callbacks=ema keeps it whole, since
# Lightning puts the average into full checkpoints only.
@pytest.mark.parametrize("weights_only", [False, True], ids=["full", "weights_only"])
def test_ema_weights_are_what_best_ckpt_holds_and_what_test_scores(
    synthetic_root, tmp_path, weights_only
):
    overrides = [*tiny_run_overrides(synthetic_root), *TINY_UNET, "callbacks=ema"]
    overrides += ["trainer.max_epochs=2", "callbacks.ema.decay=0.9", "optimizer.lr=0.01"]
    overrides += [f"+callbacks.model_checkpoint.save_weights_only={weights_only}"]
    metrics = train(compose_train(tmp_path, overrides))
    checkpoint = read_checkpoint(metrics["best_checkpoint"])
    assert "optimizer_states" in checkpoint
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert average.keys() == raw.keys()
    differing = [k for k in average if average[k].is_floating_point()]
    assert any(not torch.equal(average[k], raw[k]) for k in differing)

    # segpets.eval scores the checkpoint's state_dict: the EMA weights. Training's test
    # agrees with it, so test scored the average too, not the raw weights.
    overrides = [f"ckpt_path={metrics['best_checkpoint']}"]
    scored = evaluate(compose_train(tmp_path / "eval", overrides, config_name="eval"), overrides)
    assert scored["dice"] == pytest.approx(metrics["test"]["test/dice"], abs=1e-6)


STEP_CLOCK = Clock()
"""The mocked clock of the end-to-end budget run: SecondPerStep advances it."""


class SecondPerStep(L.Callback):
    """Each training step takes one second of STEP_CLOCK. Appends [epoch, side of the
    training images, LR] for every step to `path`, and ["end", LR] when training ends."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def write(self, row: list) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps(row) + "\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.write([trainer.current_epoch, batch["image"].shape[-1], lr])
        STEP_CLOCK.now += 1.0

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(["end", trainer.optimizers[0].param_groups[0]["lr"]])


def test_experiment_budget_composes_and_runs(synthetic_root, tmp_path, monkeypatch):
    """experiment=budget end to end on a clock that ticks a second per step: training stops
    at max_time, the LR warms up and decays with the time spent to zero, the last quarter
    trains at data.image_size, and test scores the weights training ended with."""
    probe = tmp_path / "steps.jsonl"
    cfg = compose_train(
        tmp_path,
        ["experiment=budget", *tiny_run_overrides(synthetic_root), *TINY_UNET,
         "trainer.max_time=00:00:00:14", "scheduler.warmup_steps=3", "data.batch_size=8",
         "trainer.precision=32-true", "callbacks.last_checkpoint.train_time_interval=null",
         f"+callbacks.probe._target_={__name__}.SecondPerStep", f"+callbacks.probe.path={probe}"],
    )  # fmt: skip
    assert cfg.trainer.max_epochs == -1
    assert "ema" not in cfg.callbacks  # callbacks=ema scored no better (docs/budget.md)
    assert cfg.data.train_size == 48  # three quarters of data.image_size, whatever it is
    recipe = compose_train(tmp_path / "recipe", ["experiment=budget"])
    assert recipe.trainer.max_time == "00:00:10:00"
    assert recipe.model.encoder == "resnet18"  # it scored higher than resnet34 (docs/budget.md)
    # Its test, eval and predict mirror and resize each photo and keep the largest pet region.
    assert recipe.tta == "hflip_scales" and recipe.module.tta == "hflip_scales"
    assert recipe.postprocess._target_ == "segpets.postprocess.LargestRegion"
    # Less time outside training steps: photos decoded once, validation every other epoch,
    # best.ckpt without the optimizer's state.
    assert recipe.data.cache == "train" and recipe.trainer.check_val_every_n_epoch == 2
    assert recipe.callbacks.model_checkpoint.save_weights_only is True

    STEP_CLOCK.now = 1000.0
    monkeypatch.setattr(lightning_timer.time, "monotonic", STEP_CLOCK)
    metrics = train(cfg)
    *steps, (end, last_lr) = [json.loads(line) for line in probe.read_text().splitlines()]
    assert len(steps) == metrics["global_step"] == 14  # a second each: max_time is 14 steps
    assert end == "end"
    # Warm-up over 3 steps, then the cosine of the time spent (k seconds before step k).
    expected = [1.8e-3 * min(1, (k + 1) / 3) * 0.5 * (1 + math.cos(math.pi * k / 14))
                for k in range(14)]  # fmt: skip
    assert [lr for _, _, lr in steps] == pytest.approx(expected, rel=1e-6)
    assert last_lr == pytest.approx(0.0, abs=1e-12)  # the time is spent: the LR is zero
    # 27 training photos, 8 a batch, the last partial one dropped: 3 steps an epoch. After
    # epoch 2 (9 s), 64 % of the budget is spent, after epoch 3 (12 s) 86 %: from epoch 4,
    # whole photos at 64 px.
    sides = {}
    for epoch, side, _ in steps:
        sides.setdefault(epoch, set()).add(side)
    assert sides == {0: {48}, 1: {48}, 2: {48}, 3: {48}, 4: {64}}
    # test_checkpoint=last: test scored last.ckpt, the weights training ended with.
    assert metrics["scored_checkpoint"] == metrics["last_checkpoint"]
    overrides = [f"ckpt_path={metrics['last_checkpoint']}"]
    scored = evaluate(compose_train(tmp_path / "eval", overrides, config_name="eval"), overrides)
    assert scored["tta"] == "hflip_scales"
    assert scored["dice"] == pytest.approx(metrics["test"]["test/dice"], abs=1e-6)


def test_a_weights_only_best_ckpt_is_scored_as_the_run_scored_it(synthetic_root, tmp_path):
    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=4",
         "trainer.check_val_every_n_epoch=2", "+callbacks.model_checkpoint.save_weights_only=true",
         "tta=hflip_scales"],
    )  # fmt: skip
    metrics = train(cfg)
    best = read_checkpoint(metrics["best_checkpoint"])
    assert "optimizer_states" not in best and "state_dict" in best
    assert "optimizer_states" in read_checkpoint(
        Path(metrics["best_checkpoint"]).with_name("last.ckpt")
    )
    assert metrics["best_epoch"] in (1, 3)  # validated after epochs 2 and 4 only
    overrides = [f"ckpt_path={metrics['best_checkpoint']}"]
    scored = evaluate(compose_train(tmp_path / "eval", overrides, config_name="eval"), overrides)
    assert scored["tta"] == "hflip_scales"  # the run's, from the run config best.ckpt keeps
    assert scored["dice"] == pytest.approx(metrics["test"]["test/dice"], abs=1e-6)
