"""`model=ensemble`: average the predictions of several trained checkpoints."""

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from segpets import checkpointing
from segpets.errors import ConfigError
from segpets.models.base import SegmentationModel

OPTION = "model.checkpoints"


class EnsembleModel(SegmentationModel):
    """The members of `checkpoints`, each rebuilt from its own stored config.

    Returns logit(mean of the members' sigmoid probabilities), computed in log space
    so that confident members saturate nothing: the sigmoid of its output is exactly
    the averaged probability, and one member returns its own logits. Members pad and
    crop for their own output strides, so the ensemble needs none (stride 1). All
    members see the same images, so they must share their data.mean and data.std.
    """

    output_stride = 1
    weights_from_checkpoints = True
    """Built with its weights: segpets.checkpointing.load_model loads no state dict into it."""

    def __init__(self, checkpoints: Sequence[str | Path]) -> None:
        super().__init__()
        paths = [str(path) for path in checkpoints or ()]
        if not paths:
            raise ConfigError(
                f"{OPTION} must list at least one checkpoint, e.g. "
                f"{OPTION}=[runs/a/checkpoints/best.ckpt,runs/b/checkpoints/best.ckpt]"
            )
        members, normalizations = [], {}
        for path in paths:
            model, config = checkpointing.model_from_checkpoint(path, option=OPTION)
            members.append(model)
            normalizations[path] = "data.mean={} data.std={}".format(
                OmegaConf.select(config, "data.mean"), OmegaConf.select(config, "data.std")
            )
        if len(set(normalizations.values())) > 1:
            raise ConfigError(
                f"{OPTION}: the checkpoints were trained with different data.mean/data.std "
                f"({normalizations}); an ensemble feeds all members the same images"
            )
        self.members = nn.ModuleList(members).train()  # built in train mode, as any module
        self.checkpoints = paths

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([member(x).float() for member in self.members])
        log_count = math.log(len(self.members))
        log_p = torch.logsumexp(F.logsigmoid(logits), dim=0) - log_count
        log_not_p = torch.logsumexp(F.logsigmoid(-logits), dim=0) - log_count
        return log_p - log_not_p
