"""Callbacks for models with a pretrained encoder; `encoder_callbacks(model)` picks them.

`python -m segpets.train` adds `encoder_callbacks(module.model)` to the configured
callbacks, so the options live with the model (`model.freeze_encoder_epochs`,
`model.pretrained`) rather than in the callbacks group.
"""

import math
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from torch import nn
from torch.optim import Optimizer

from segpets.errors import ConfigError


class FreezeEncoder(BaseFinetuning):
    """Freezes `model.encoder` for the first `epochs` epochs, then trains it with the rest.

    SegmentationModule gives its optimizer every parameter from the start. A frozen
    parameter gets no gradient, which every torch optimizer skips (no update, no
    weight decay, no momentum), so unfreezing only sets `requires_grad` again and the
    learning-rate schedule runs as configured. Batch-norm layers keep training
    (Lightning's `train_bn=True`): their statistics follow the new data, as they will
    once the encoder thaws, so validation scores mean the same before and after.

    One process only: DDP leaves out of its gradient sync the parameters that were
    frozen when it wrapped the model, and would never average them after unfreezing
    (Lightning issue #20340), so `setup` refuses to run with more than one.
    """

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    @staticmethod
    def encoder(pl_module: L.LightningModule) -> nn.Module:
        return pl_module.model.encoder

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.world_size > 1:
            raise ConfigError(
                f"model.freeze_encoder_epochs={self.epochs} works on one device only, got "
                f"{trainer.world_size} processes: DDP would not sync the encoder's gradients "
                "after unfreezing it. Train on one device (trainer=default) or set "
                "model.freeze_encoder_epochs=0"
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(self.encoder(pl_module), train_bn=True)

    def finetune_function(
        self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        # `>=` rather than `==`: a run resumed after the thaw epoch must thaw too.
        if epoch >= self.epochs:
            self.make_trainable(self.encoder(pl_module))


class CheckInputNormalization(Callback):
    """Stops a run whose data normalisation differs from what the pretrained encoder expects.

    ImageNet weights were trained on images normalised with the ImageNet mean and std;
    `data.mean` and `data.std` default to exactly those, so this only fires when they
    were changed on the command line or in an experiment.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if mean is None or std is None:
            return

        def close(a: Sequence[float], b: Sequence[float]) -> bool:
            return len(a) == len(b) and all(
                math.isclose(x, y, abs_tol=1e-6) for x, y in zip(a, b, strict=True)
            )

        if not (close(mean, self.mean) and close(std, self.std)):
            raise ConfigError(
                f"model.pretrained: the encoder's weights expect inputs normalised with "
                f"data.mean={list(self.mean)} data.std={list(self.std)}, but the data uses "
                f"data.mean={list(mean)} data.std={list(std)}. Drop the data.mean/data.std "
                "overrides (the defaults match ImageNet), or use model.pretrained=none"
            )


def encoder_callbacks(model: nn.Module) -> list[Callback]:
    """The callbacks `model`'s own options ask for: add them to the Trainer's.

    A model with pretrained weights sets `input_normalization` (mean, std) and gets a
    CheckInputNormalization; one with an `encoder` and `freeze_encoder_epochs > 0`
    gets a FreezeEncoder.
    """
    callbacks: list[Callback] = []
    normalization = getattr(model, "input_normalization", None)
    if normalization is not None:
        callbacks.append(CheckInputNormalization(*normalization))
    epochs = getattr(model, "freeze_encoder_epochs", 0)
    if epochs:
        if not isinstance(getattr(model, "encoder", None), nn.Module):
            raise ConfigError(
                f"model.freeze_encoder_epochs={epochs}: {type(model).__name__} has no encoder "
                "to freeze"
            )
        callbacks.append(FreezeEncoder(epochs))
    return callbacks
