"""Callbacks that show a run to the person watching it."""

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchvision.utils import make_grid

from segpets.errors import SegpetsError


def denormalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Undo the data module's Normalize: float images in [0, 1] for display."""
    mean_t = images.new_tensor(mean).view(1, -1, 1, 1)
    std_t = images.new_tensor(std).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def triptychs(
    images: torch.Tensor, probs: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """Rows of image | prediction | truth, each (3, H, W) in [0, 1].

    Ignored truth pixels (255) are drawn grey so they stand out from pet and background.
    """
    prediction = (probs >= threshold).float().expand(-1, 3, -1, -1)
    truth = masks.float()
    truth = torch.where(truth > 1, torch.full_like(truth, 0.5), truth).expand(-1, 3, -1, -1)
    rows = torch.stack([images, prediction, truth], dim=1)  # (B, 3 panels, 3, H, W)
    return rows.flatten(0, 1)


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
        grid = make_grid(triptychs(images, probs, batch["mask"][:n]).cpu(), nrow=3, padding=2)
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
