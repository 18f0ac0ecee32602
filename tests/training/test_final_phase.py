"""FinalPhase: the last share of the budget trains at data.image_size, loader workers
included, and a run resumed after the switch stays in it."""

import json
from pathlib import Path

import lightning as L
import pytest

from segpets.callbacks import FinalPhase
from segpets.errors import ConfigError
from segpets.schedules import budget_fraction
from segpets.train import train
from tests.helpers import TINY_UNET, compose_train, tiny_run_overrides

PROBE = "tests.training.test_final_phase.TrainSizeProbe"


class TrainSizeProbe(L.Callback):
    """Appends [epoch, side of the training images] for every training batch to `path`."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps([trainer.current_epoch, batch["image"].shape[-1]]) + "\n")


def sizes_by_epoch(path: Path) -> dict[int, set[int]]:
    sizes: dict[int, set[int]] = {}
    for line in path.read_text().splitlines():
        epoch, side = json.loads(line)
        sizes.setdefault(epoch, set()).add(side)
    return sizes


def final_phase_overrides(root: Path, probe: Path, start: float = 0.5) -> list[str]:
    return [
        *tiny_run_overrides(root),
        *TINY_UNET,
        "experiment=budget",  # 48 px crops (data.train_size), then the final phase
        "trainer.max_time=null",
        "callbacks.last_checkpoint.train_time_interval=null",
        f"callbacks.final_phase.start={start}",
        f"+callbacks.probe._target_={PROBE}",
        f"+callbacks.probe.path={probe}",
        "trainer.precision=32-true",
        "data.batch_size=8",
    ]


@pytest.mark.parametrize("workers", [0, 1])
def test_training_switches_to_image_size_once_the_share_of_the_budget_is_spent(
    synthetic_root, tmp_path, workers
):
    probe = tmp_path / "sizes.jsonl"
    overrides = final_phase_overrides(synthetic_root, probe)
    cfg = compose_train(
        tmp_path, [*overrides, "trainer.max_epochs=4", f"data.num_workers={workers}"]
    )
    train(cfg)
    # After epoch 2 of 4, half the budget: epochs 0-1 on 48 px crops, 2-3 at 64 px, also
    # when persistent loader workers hold the first pipeline.
    assert sizes_by_epoch(probe) == {0: {48}, 1: {48}, 2: {64}, 3: {64}}


def test_a_run_resumed_after_the_switch_trains_at_image_size_from_its_first_epoch(
    synthetic_root, tmp_path
):
    probe = tmp_path / "sizes.jsonl"
    overrides = final_phase_overrides(synthetic_root, probe, start=0.6)
    train(compose_train(tmp_path, [*overrides, "trainer.max_epochs=3"]))
    assert sizes_by_epoch(probe) == {0: {48}, 1: {48}, 2: {64}}  # 2/3 >= 0.6

    probe.unlink()
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resumed = [*overrides, "trainer.max_epochs=5", f"ckpt_path={last}"]
    train(compose_train(tmp_path / "resumed", resumed))
    assert sizes_by_epoch(probe) == {3: {64}, 4: {64}}  # 3/5 = 0.6 would switch only now


def test_budget_fraction_is_the_largest_share_of_the_limits_the_trainer_has():
    trainer = L.Trainer(max_epochs=8, max_steps=100, logger=False, enable_checkpointing=False)
    assert budget_fraction(trainer) == 0.0
    assert budget_fraction(trainer, epochs_done=2) == pytest.approx(0.25)
    unlimited = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False)
    assert budget_fraction(unlimited) is None


@pytest.mark.parametrize("start", [0.0, 1.0, 1.5])
def test_a_start_outside_zero_one_is_refused(start):
    with pytest.raises(ConfigError, match=r"callbacks.final_phase.start must be in \(0, 1\)"):
        FinalPhase(start=start)


def test_a_final_pipeline_not_ending_at_image_size_names_the_option(synthetic_root, tmp_path):
    probe = tmp_path / "sizes.jsonl"
    overrides = [
        *final_phase_overrides(synthetic_root, probe),
        "trainer.max_epochs=2",
        "callbacks.final_phase.augment.1.height=32",
        "callbacks.final_phase.augment.1.width=32",
    ]
    with pytest.raises(ConfigError) as error:
        train(compose_train(tmp_path, overrides))
    message = str(error.value)
    assert "callbacks.final_phase.augment turns" in message
    assert "data.image_size x data.image_size (64x64)" in message
    assert not probe.exists()  # refused before the first step


def test_a_run_without_any_budget_is_refused(synthetic_root, tmp_path):
    overrides = [
        *final_phase_overrides(synthetic_root, tmp_path / "sizes.jsonl"),
        "trainer.max_epochs=-1",
    ]
    with pytest.raises(ConfigError, match=r"set trainer\.max_time, trainer\.max_epochs"):
        train(compose_train(tmp_path, overrides))
