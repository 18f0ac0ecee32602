"""A trained model set up for use: what eval, predict and export share.

`load_for_inference(cfg, overrides)` reads the checkpoint that `cfg.ckpt_path` names (or
the members of `model=ensemble model.checkpoints=[...]`), applies the command line's
options over the run config stored in it, and settles the device, the precision the run
trained in, the threshold, the test-time augmentation and the post-processing. The apps
keep only what is their own.
"""

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from segpets.checkpointing import load_trained
from segpets.inference import (
    PostProcess,
    autocast,
    check_threshold,
    check_tta,
    pick_device,
    predict_probabilities,
)


@dataclass
class TrainedModel:
    """A trained network in eval mode on `device`, with the run config it was loaded with."""

    model: nn.Module
    run_config: DictConfig
    """The checkpoint's run config with the command line's options over it."""
    device: torch.device
    precision: Any
    """`trainer.precision` of the run config (None if it has none): eval and predict
    autocast as the run trained."""
    threshold: float
    """Probability from which a pixel is pet: `threshold=`, else the run's module.threshold."""
    checkpoints: list[str]
    """The checkpoint files the weights come from: `ckpt_path`, or an ensemble's members."""
    ckpt_path: str | None = None
    """The `ckpt_path` option; None for an ensemble given by model.checkpoints alone."""
    tta: str = "none"
    """Test-time augmentation: the run config's `tta` (none | hflip | d4 | hflip_scales)."""
    postprocess: PostProcess | None = None
    """The run config's `postprocess`, built (segpets.postprocess); None for none."""

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast as the run trained, on this model's device."""
        return autocast(self.precision, self.device)

    def probabilities(
        self, images: torch.Tensor, tta: str | None = None, threshold: float | None = None
    ) -> torch.Tensor:
        """Pet probabilities (B, 1, H, W) for images on this model's device, as the run
        predicts: its test-time augmentation (or `tta`), then its post-processing of the
        mask at its threshold (or `threshold`). Call it inside `autocast()`."""
        return predict_probabilities(
            self.model,
            images,
            self.tta if tta is None else tta,
            self.postprocess,
            self.threshold if threshold is None else threshold,
        )


def inference_options(run_config: DictConfig) -> dict[str, Any]:
    """`tta` and `postprocess` (built) of a run config; none for runs that predate them."""
    tta = OmegaConf.select(run_config, "tta", default=None) or "none"
    check_tta(tta)
    postprocess = OmegaConf.select(run_config, "postprocess", default=None)
    return {"tta": tta, "postprocess": None if postprocess is None else instantiate(postprocess)}


def load_for_inference(
    cfg: DictConfig,
    overrides: Sequence[str] = (),
    device: str | None = None,
    option: str = "ckpt_path",
) -> TrainedModel:
    """The model `cfg.ckpt_path` names, with the command line's `overrides`, on its device.

    `cfg` is the app's composed config (eval, predict, export): `ckpt_path`, which may be
    left out with `model=ensemble model.checkpoints=[...]`, and optionally `threshold` (null
    or absent: the checkpoint's) and `device`. `device` overrides `cfg.device` (export
    passes "cpu"); a device this machine lacks is a ConfigError naming the fix. Options
    are checked before the checkpoint is read. `option` names `ckpt_path` in messages
    (`segpets.load` calls it `path`).
    """
    threshold = OmegaConf.select(cfg, "threshold", default=None)
    check_threshold(threshold)
    target = pick_device(device if device is not None else cfg.device)
    ckpt_path = OmegaConf.select(cfg, "ckpt_path", throw_on_missing=False)
    model, run_config = load_trained(ckpt_path, cfg, overrides, option)
    if getattr(model, "weights_from_checkpoints", False):  # an ensemble: its members
        checkpoints = [str(path) for path in run_config.model.checkpoints]
    else:
        checkpoints = [str(ckpt_path)]
    if threshold is None:
        threshold = run_config.module.threshold
    return TrainedModel(
        model=model.to(target),
        run_config=run_config,
        device=target,
        precision=OmegaConf.select(run_config, "trainer.precision", default=None),
        threshold=float(threshold),
        checkpoints=checkpoints,
        ckpt_path=None if ckpt_path is None else str(ckpt_path),
        **inference_options(run_config),
    )
