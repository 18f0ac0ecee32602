"""segpets' Lightning callbacks, all of them.

- What the person watching a run sees: `ValidationImages` (TensorBoard grids),
  `ProgressBar`.
- What a run measures: `TrainingClock` (training time beside val Dice), `EMA` (an
  average of the weights that validation, checkpoints and test use).
- How a run spends its budget: `FinalPhase` (its last share trains on whole photos at
  the size of validation and test).
- What keeps a run safe: `NonFiniteLossGuard` (stops on a NaN loss before a checkpoint
  holds it), `SaveOnInterrupt` (Ctrl-C / SIGTERM save last.ckpt), `LastCheckpoint`
  (last.ckpt, also written when training ends).
- What a pretrained encoder asks for: `FreezeEncoder`, `CheckInputNormalization`, picked by
  `encoder_callbacks(model)` from the model's own options.

The configured ones are in configs/callbacks; `python -m segpets.train` adds
`encoder_callbacks(module.model)` to them, so those options live with the model
(`model.freeze_encoder_epochs`, `model.pretrained`) rather than in the callbacks group.
"""

import functools
import math
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    BaseFinetuning,
    Callback,
    ModelCheckpoint,
    RichProgressBar,
    WeightAveraging,
)
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.optim import Optimizer

from segpets.data.transforms import train_transform
from segpets.errors import ConfigError, SegpetsError
from segpets.schedules import budget_fraction
from segpets.visual import denormalize, triptych_grid


class ValidationImages(L.Callback):
    """Logs a grid of the first validation images, image | prediction | truth, to TensorBoard.

    Runs every `every_n_epochs` epochs on global rank zero only, on the first
    validation batch, so it costs one small copy to the CPU per logged epoch.
    """

    def __init__(self, every_n_epochs: int = 5, max_images: int = 8) -> None:
        self.every_n_epochs = every_n_epochs
        self.max_images = max_images

    def _due(self, trainer: L.Trainer) -> bool:
        last_epoch = trainer.current_epoch + 1 == trainer.max_epochs
        return not trainer.sanity_checking and (
            trainer.current_epoch % self.every_n_epochs == 0 or last_epoch
        )

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or not trainer.is_global_zero or not self._due(trainer):
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not isinstance(outputs, torch.Tensor):
            return
        n = self.max_images
        datamodule = trainer.datamodule
        images = denormalize(batch["image"][:n].float(), datamodule.mean, datamodule.std)
        probs = outputs[:n].float().sigmoid()
        grid = triptych_grid(images, probs, batch["mask"][:n])
        for logger in loggers:
            logger.experiment.add_image("val/predictions", grid, global_step=trainer.global_step)


class NonFiniteLossError(SegpetsError):
    """Training diverged: a loss became NaN or infinite."""


class NonFiniteLossGuard(L.Callback):
    """Stops the run when a training loss becomes NaN or Inf, before any checkpoint holds it.

    The check stays on the device (no host sync per step); the host looks every
    `check_every_n_steps` steps and before validation, i.e. before ModelCheckpoint can
    save, so best.ckpt and last.ckpt always come from before the first bad step. A NaN
    gradient makes the next loss NaN, so it is caught one step later.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._first_bad_step: torch.Tensor | None = None
        self._epoch_of_step: dict[int, int] = {}

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        step = trainer.global_step
        bad = ~torch.isfinite(loss.detach())
        if self._first_bad_step is None:
            self._first_bad_step = torch.full((), -1, device=loss.device, dtype=torch.long)
        self._first_bad_step = torch.where(
            bad & (self._first_bad_step < 0), step, self._first_bad_step
        )
        if step % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self._first_bad_step is None:
            return
        step = int(self._first_bad_step)
        if step < 0:
            return
        raise NonFiniteLossError(
            f"the training loss became NaN or infinite at step {step} (epoch "
            f"{trainer.current_epoch}); the run stopped there and best.ckpt and last.ckpt "
            "hold the model from before it. To continue: lower optimizer.lr, train with "
            "trainer.precision=bf16-mixed instead of 16-mixed, or clip gradients with "
            "trainer.gradient_clip_val=1.0; then resume with ckpt_path=<run dir>/checkpoints/last.ckpt"
        )


class SaveOnInterrupt(L.Callback):
    """Ctrl-C or SIGTERM: finish the current batch, save last.ckpt, and stop.

    Lightning already stops at a batch boundary on SIGTERM; the first Ctrl-C is turned
    into the same signal (a second one aborts at once). The checkpoint goes where
    ModelCheckpoint keeps last.ckpt, written atomically by the trainer's CheckpointIO,
    so `ckpt_path=last` resumes with the same global step, optimizer and scheduler state.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._first_interrupt)

    @staticmethod
    def _first_interrupt(signum: int, frame: Any) -> None:
        print("\nInterrupted: saving last.ckpt after this batch (Ctrl-C again to abort now)")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.raise_signal(signal.SIGTERM)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.on_train_end(trainer, pl_module)
        if not isinstance(exception, SIGTERMException):
            return
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath:
            path = Path(checkpoint.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}.ckpt"
            trainer.save_checkpoint(path)
            rank_zero_info(f"Saved {path} at step {trainer.global_step}")


class LastCheckpoint(ModelCheckpoint):
    """last.ckpt, the newest weights for `ckpt_path=last`: a ModelCheckpoint that monitors
    nothing, keeps one file, and also writes it when training ends.

    On a clock (`train_time_interval`) rather than after every validation, Lightning's
    ModelCheckpoint leaves the steps after its last write unsaved, and writes nothing in a
    run shorter than the interval; this one writes once more when training ends, unless
    the newest step is saved already.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # ModelCheckpoint's own checks and writer (no public hook does this), as its
        # on_validation_end uses them: nothing in a fast_dev_run or outside fit.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, reading the logged values every `metrics_every_n_steps`.

    Reading a logged tensor for display is a host sync; Lightning's bar does it after
    every batch, which stalls a GPU's queue once per step. In between, the last values
    stay on screen.
    """

    def __init__(self, metrics_every_n_steps: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics_every_n_steps = metrics_every_n_steps
        self._shown: dict[str, Any] = {}

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        due = not trainer.training or trainer.global_step % self.metrics_every_n_steps == 0
        if due or not self._shown:
            self._shown = super().get_metrics(trainer, pl_module)
        return self._shown


# ---------------------------------------------------------------------------- encoders


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


class EMA(WeightAveraging):
    """An exponential moving average of the weights, used for validation, checkpoints and test.

    Lightning's WeightAveraging keeps the average (BatchNorm statistics included) after
    every optimizer step from `start_step` on and swaps it in for validation, so `val/dice`
    and the best checkpoint judge the averaged weights, and checkpoints hold them as their
    `state_dict` (the raw weights ride along for resuming). After fit, the model holds the
    average. The decay warms up as timm's ModelEma does, min(decay, (1 + n) / (10 + n))
    after n updates, so a short run's average is not dominated by its random start.

    Lightning swaps only around validation; outside fit (`trainer.validate` or `test` with
    a checkpoint) the checkpoint's `state_dict` already is the average, so nothing is
    swapped or reloaded there.
    """

    def __init__(self, decay: float = 0.99, start_step: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(
                f"callbacks.ema.decay must be between 0 and 1 (exclusive), got {decay}: "
                "the share of the average kept at each step, e.g. 0.99 (about the last 100 steps)"
            )
        super().__init__(multi_avg_fn=functools.partial(ema_update, decay=decay))
        self.decay = decay
        self.start_step = start_step

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self.start_step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # The average becomes a checkpoint's state_dict in on_save_checkpoint, which
        # Lightning calls for full checkpoints only: a weights-only one would hold the raw
        # weights, so checkpoints keep their full state while EMA is on.
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "save_weights_only", False):
                callback.save_weights_only = False
                rank_zero_info(
                    f"callbacks.ema: {callback.filename or 'the'} checkpoint keeps its full "
                    "state (save_weights_only ignored) so that it holds the averaged weights"
                )

    @staticmethod
    def _fitting(trainer: L.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_end(trainer, pl_module)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._fitting(trainer):
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


def warmed_decay(decay: float, updates: float) -> float:
    """The share of the average kept after `updates` updates: min(decay, (1 + n) / (10 + n))."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


@torch.no_grad()
def ema_update(
    averages: list[torch.Tensor],
    currents: list[torch.Tensor],
    updates: torch.Tensor,
    decay: float,
) -> None:
    """One EMA update of a group of same-dtype tensors, in place, the decay warmed up: the
    `multi_avg_fn` of torch's AveragedModel that `EMA` uses.

    Floating tensors move towards the current weights with one fused lerp per group;
    integer buffers (BatchNorm's batch counter) take the current value.
    """
    # One read of the update count (a device sync on GPUs).
    warm = warmed_decay(decay, float(updates))
    if averages[0].is_floating_point():
        torch._foreach_lerp_(averages, currents, 1.0 - warm)
    else:
        torch._foreach_copy_(averages, currents)


class FinalPhase(Callback):
    """Trains the last part of the budget on whole photos at the size of validation and test.

    Until `start`, the share of the budget spent (`segpets.schedules.budget_fraction`: time
    with `trainer.max_time`, else epochs or steps), the run trains on the data's own
    augmentation, such as smaller random crops (`data.train_size`) that make steps cheaper.
    From the first epoch after it, it trains on `augment`, which must end at
    `data.image_size` squares (None: resize only), as the FixRes recipe fine-tunes at test
    resolution (Touvron et al. 2019): the network and its batch-norm statistics then see
    pets at the scale and with the borders they are scored on. The switch is kept in
    checkpoints, so a run resumed after it trains on `augment` from its first epoch.
    """

    OPTION = "callbacks.final_phase.augment"

    def __init__(self, start: float = 0.75, augment: Sequence[Any] | None = None) -> None:
        if not 0.0 < start < 1.0:
            raise ConfigError(
                f"callbacks.final_phase.start must be in (0, 1), the share of the budget "
                f"after which training switches to the final phase, got {start}"
            )
        self.start = start
        self.augment = list(augment) if augment is not None else None
        self.started = False
        self._transform: Any = None  # the final phase's pipeline, built by setup
        self._reload_every: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "set_train_transform"):
            raise ConfigError(
                "callbacks.final_phase needs a data module with set_train_transform "
                f"(segpets.data.OxfordPetDataModule), got {type(datamodule).__name__}"
            )
        if budget_fraction(trainer) is None:
            raise ConfigError(
                "callbacks.final_phase starts at a share of the budget, but the run has "
                "none: set trainer.max_time, trainer.max_epochs or trainer.max_steps"
            )
        # Built now: a pipeline that does not end at image_size fails before the first step.
        self._transform = train_transform(
            self.augment,
            datamodule.image_size,
            datamodule.mean,
            datamodule.std,
            self.OPTION,
            "data.image_size",
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started:  # resumed after the switch; no loader worker has started yet
            self._switch(trainer, rebuild_loader=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        spent = budget_fraction(trainer, epochs_done=trainer.current_epoch + 1)
        if not self.started and spent is not None and spent >= self.start:
            self._switch(trainer, rebuild_loader=True)
            rank_zero_info(
                f"Final phase from epoch {trainer.current_epoch + 1} ({spent:.0%} of the "
                f"budget spent): training at {trainer.datamodule.image_size} px"
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._reload_every is not None:  # the loader is rebuilt by now
            trainer.reload_dataloaders_every_n_epochs = self._reload_every
            self._reload_every = None

    def _switch(self, trainer: L.Trainer, rebuild_loader: bool) -> None:
        trainer.datamodule.set_train_transform(self._transform, trainer.datamodule.image_size)
        self.started = True
        if rebuild_loader:
            # Loader workers hold copies of the old pipeline: the Trainer's own setting
            # builds the train loader again at the next epoch, whose start sets it back.
            self._reload_every = trainer.reload_dataloaders_every_n_epochs
            trainer.reload_dataloaders_every_n_epochs = 1

    def state_dict(self) -> dict[str, Any]:
        return {"started": self.started}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.started = bool(state_dict.get("started", False))


class TrainingClock(Callback):
    """Logs `time/train_seconds`, the training time so far, with every validation.

    With it, TensorBoard's and the report's curves can put val Dice against wall-clock
    time, which compares models of different cost at equal time. The time counts from the
    start of fit, validation included, and carries over when a run is resumed. (Not a
    Lightning Timer: a Timer in the callbacks makes Lightning ignore `trainer.max_time`.)
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._started: float | None = None

    def elapsed(self) -> float:
        """Seconds of fit so far, earlier runs of a resumed run included."""
        running = time.monotonic() - self._started if self._started is not None else 0.0
        return self._offset + running

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            pl_module.log("time/train_seconds", self.elapsed())

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = float(state_dict.get("train_seconds", 0.0))
