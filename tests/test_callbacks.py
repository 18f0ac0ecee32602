import torch

from segpets.callbacks import denormalize, triptychs
from segpets.constants import IMAGENET_MEAN, IMAGENET_STD


def test_denormalize_inverts_the_data_modules_normalize():
    images = torch.rand(2, 3, 8, 8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    restored = denormalize((images - mean) / std, IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(restored, images)


def test_triptychs_lay_out_image_prediction_truth():
    images = torch.rand(2, 3, 4, 4)
    probs = torch.zeros(2, 1, 4, 4)
    probs[:, :, :2] = 0.9
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    masks[:, :, :, :2] = 1
    masks[:, :, 3, 3] = 255
    panels = triptychs(images, probs, masks)
    assert panels.shape == (6, 3, 4, 4)
    torch.testing.assert_close(panels[0], images[0])
    assert panels[1, :, :2].eq(1).all() and panels[1, :, 2:].eq(0).all()
    assert panels[2, :, :3, :2].eq(1).all() and panels[2, :, :3, 2:].eq(0).all()
    assert panels[2, :, 3, 3].eq(0.5).all()  # ignored pixels are grey
    assert panels[5, :, 3, 3].eq(0.5).all()


def test_the_progress_bar_reads_logged_values_only_every_n_steps():
    from types import SimpleNamespace

    from segpets.callbacks import ProgressBar

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
