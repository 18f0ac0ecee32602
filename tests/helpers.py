"""Composing segpets configs in tests, the way `python -m segpets.train` does."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from segpets.losses import BCELoss

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
