"""Composing segpets configs in tests, the way `python -m segpets.train` does."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from segpets.losses import BCELoss
from segpets.scores import TEST_SCORES, read_scores

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


def compose_train(tmp_path: Path, overrides: list[str], config_name: str = "train") -> DictConfig:
    """The train config with `overrides`, writing everything under `tmp_path`."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            config_name=config_name,
            overrides=[
                f"paths.output_dir={tmp_path / 'run'}",
                f"paths.data_dir={tmp_path / 'data'}",
                *overrides,
            ],
        )


def tiny_run_overrides(data_root: Path) -> list[str]:
    """A training job small enough for a test: tiny widths, 64 px, a few batches."""
    return [
        "data=synthetic",
        f"data.root={data_root}",
        "data.synthetic=null",
        "data.image_size=64",
        "data.batch_size=4",
        "data.num_workers=0",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]


TINY_UNET = ["model=unet", "model.widths=[4,8,16]"]


EVERY_PIXEL_PET = "module.threshold=1e-30"
"""Every pixel counts as pet, so each test image's Dice is known by hand from its truth."""


def check_test_scores(
    run_dir: Path, metrics: dict, images: int, every_pixel_pet: bool = False
) -> None:
    """The test Dice and IoU a run reports are the means of its per-image CSV's `images` rows,
    and each row's Dice is what its regions allow: an overlap o between max(0, t + p - 1) and
    min(t, p) for pet shares t (truth) and p (prediction) gives 2 o / (t + p). With
    EVERY_PIXEL_PET (p = 1), o = t: Dice 2 t / (1 + t) and IoU t."""
    rows = list(read_scores(run_dir / TEST_SCORES).values())
    assert len(rows) == images
    for row in rows:
        dice, iou, t, p = row["dice"], row["iou"], row["true_fraction"], row["pred_fraction"]
        assert iou == pytest.approx(dice / (2 - dice), abs=1e-6)
        if every_pixel_pet:
            assert p == 1.0 and 0 < t < 1
            assert dice == pytest.approx(2 * t / (1 + t), abs=1e-6)
        elif t + p > 0:
            low, high = 2 * max(0.0, t + p - 1) / (t + p), 2 * min(t, p) / (t + p)
            assert low - 1e-6 <= dice <= high + 1e-6
    test = metrics["test"]
    assert test["test/dice"] == pytest.approx(sum(r["dice"] for r in rows) / images, abs=1e-6)
    assert test["test/iou"] == pytest.approx(sum(r["iou"] for r in rows) / images, abs=1e-6)


class NaNAfterSteps(torch.nn.Module):
    """BCE that turns NaN after `steps` calls in training: a run that diverges on cue."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.calls = 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = BCELoss()(logits, target)
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                return loss * float("nan")
        return loss


def run_segpets(app: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m segpets.<app> args...` as a user types it, from `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", f"segpets.{app}", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
    )
