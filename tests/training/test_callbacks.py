"""segpets.callbacks: every callback of a run, the encoder ones included."""

from types import SimpleNamespace

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from segpets.callbacks import (
    ProgressBar,
    ValidationImages,
)
from segpets.constants import IMAGENET_MEAN, IMAGENET_STD
from segpets.visual import PANEL_PADDING


class RecordingTensorBoard(TensorBoardLogger):
    """A TensorBoardLogger whose experiment only records the images it is given."""

    def __init__(self, save_dir) -> None:
        super().__init__(save_dir)
        self.images = []

    @property
    def experiment(self):
        return SimpleNamespace(add_image=lambda *args, **kwargs: self.images.append(args))


def test_validation_images_log_one_grid_of_triptychs_on_due_epochs(tmp_path):
    logger = RecordingTensorBoard(tmp_path)
    trainer = SimpleNamespace(
        sanity_checking=False,
        current_epoch=0,
        max_epochs=10,
        is_global_zero=True,
        loggers=[logger],
        global_step=7,
        datamodule=SimpleNamespace(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    )
    batch = {
        "image": torch.randn(4, 3, 16, 16),
        "mask": torch.randint(0, 2, (4, 1, 16, 16), dtype=torch.uint8),
    }
    callback = ValidationImages(every_n_epochs=5, max_images=3)
    callback.on_validation_batch_end(trainer, None, torch.randn(4, 1, 16, 16), batch, 0)
    callback.on_validation_batch_end(trainer, None, torch.randn(4, 1, 16, 16), batch, 1)
    trainer.current_epoch = 1  # not due
    callback.on_validation_batch_end(trainer, None, torch.randn(4, 1, 16, 16), batch, 0)
    ((tag, grid),) = [(args[0], args[1]) for args in logger.images]
    pad = PANEL_PADDING
    assert tag == "val/predictions"
    assert grid.shape == (3, pad + 3 * (16 + pad), pad + 3 * (16 + pad))  # 3 images, 3 panels


def test_the_progress_bar_reads_logged_values_only_every_n_steps():
    reads = []

    class Trainer(SimpleNamespace):
        @property
        def progress_bar_metrics(self):
            reads.append(self.global_step)
            return {"train/loss": float(self.global_step)}

    bar = ProgressBar(metrics_every_n_steps=5)
    trainer = Trainer(training=True, global_step=0, loggers=[])
    shown = []
    for step in range(12):
        trainer.global_step = step
        shown.append(bar.get_metrics(trainer, None)["train/loss"])
    assert reads == [0, 5, 10]
    assert shown == [0.0] * 5 + [5.0] * 5 + [10.0] * 2
    trainer.training = False  # validation: always the current values
    trainer.global_step = 11
    assert bar.get_metrics(trainer, None)["train/loss"] == 11.0
