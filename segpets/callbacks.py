"""Callbacks that show a run to the person watching it."""

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid


def denormalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
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
