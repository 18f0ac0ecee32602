"""segpets.callbacks: every callback of a run, the encoder ones included."""

import functools
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from segpets.builders import instantiate_all
from segpets.callbacks import (
    ProgressBar,
    ValidationImages,
)
from segpets.constants import IMAGENET_MEAN, IMAGENET_STD
from segpets.visual import PANEL_PADDING
from tests.helpers import compose_train


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


class WorseEachEpoch(L.LightningModule):
    """A one-weight model whose val/dice falls every epoch: only epoch 0 is the best."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/dice", 1.0 / (self.current_epoch + 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_three_epochs(cfg) -> tuple[L.Trainer, dict, dict]:
    """WorseEachEpoch fitted for 3 epochs with cfg's checkpoint callbacks; (trainer, best.ckpt,
    last.ckpt), after checking that they are the only files written."""
    callbacks = [c for c in instantiate_all(cfg.callbacks) if isinstance(c, ModelCheckpoint)]
    trainer = L.Trainer(
        max_epochs=3,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = torch.ones(2, 1)
    trainer.fit(WorseEachEpoch(), train_dataloaders=data, val_dataloaders=data)
    saved = Path(cfg.paths.output_dir) / "checkpoints"
    assert sorted(path.name for path in saved.iterdir()) == ["best.ckpt", "last.ckpt"]
    load = functools.partial(torch.load, weights_only=False)
    return trainer, load(saved / "best.ckpt"), load(saved / "last.ckpt")


def test_last_ckpt_holds_the_newest_epoch_even_when_it_is_not_the_best(tmp_path):
    trainer, best, last = fit_three_epochs(compose_train(tmp_path, []))
    assert best["epoch"] == 0
    assert (last["epoch"], last["global_step"]) == (2, trainer.global_step)
    assert torch.equal(last["state_dict"]["weight"], trainer.lightning_module.weight.detach())


def test_last_ckpt_on_a_clock_is_still_written_when_training_ends(tmp_path):
    # experiment=budget writes last.ckpt once a minute: a shorter run still ends with one,
    # holding its final step.
    cfg = compose_train(tmp_path, ["experiment=budget"])
    assert cfg.callbacks.last_checkpoint.train_time_interval.minutes == 1
    trainer, best, last = fit_three_epochs(cfg)
    assert (best["epoch"], last["global_step"]) == (0, trainer.global_step)
    assert torch.equal(last["state_dict"]["weight"], trainer.lightning_module.weight.detach())
