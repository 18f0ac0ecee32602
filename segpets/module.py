"""The LightningModule: one network, one loss, and metrics per stage."""

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from segpets.constants import IGNORE_INDEX
from segpets.inference import PostProcess, postprocessed, predict_probabilities
from segpets.metrics import BinarySegmentationMetrics, per_image_scores_from_probabilities
from segpets.schedules import time_fraction

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]

MONITOR = "val/dice"
"""The one metric that checkpointing, early stopping and sweeps look at."""


class SegmentationModule(L.LightningModule):
    """Trains a network that maps images (B, 3, H, W) to logits (B, 1, H, W).

    `optimizer` and `scheduler` are partial callables (Hydra `_partial_: true`): the
    module completes them with its parameters and the run's total number of steps.
    `tta` and `postprocess` shape the test's predictions as eval and predict shape them
    (segpets.inference.predict_probabilities); training and validation score the logits.
    """

    run_config: dict[str, Any] | None = None
    """The run's resolved Hydra config, stored in every checkpoint so that eval, predict
    and export can rebuild the model from the checkpoint alone."""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        threshold: float = 0.5,
        ignore_index: int = IGNORE_INDEX,
        channels_last: bool = False,
        compile: bool = False,
        tta: str = "none",
        postprocess: PostProcess | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.channels_last = channels_last
        self.threshold = threshold
        self.ignore_index = ignore_index
        self.tta = tta
        self.postprocess = postprocess
        self.test_scores: list[dict[str, Any]] = []
        """Per-image test scores of the last test run (name, dice, iou, true/pred fraction),
        gathered from every process: what training writes to test_per_image.csv."""
        # One metric object per stage ("train" cannot be a ModuleDict key: nn.Module.train).
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": BinarySegmentationMetrics(
                    threshold, ignore_index, from_logits=stage != "test"
                )
                for stage in ("train", "val", "test")
            }
        )
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:
            # In place: the state dict keeps its keys, so checkpoints load without compiling.
            self.model.compile()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def _shared_step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["mask"])
        if stage != "test":
            self.metrics[f"{stage}_metrics"].update(logits.detach(), batch["mask"])
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=stage != "test",
            batch_size=batch["image"].shape[0],
            sync_dist=stage != "train",
        )
        return loss, logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")[0]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")[1]

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """The loss of the logits; the scores of the predictions (`predict_probabilities`)."""
        logits = self._shared_step(batch, "test")[1]
        probs = self.probabilities(batch["image"], logits.detach())
        self.metrics["test_metrics"].update(probs, batch["mask"])
        scores = per_image_scores_from_probabilities(
            probs, batch["mask"], self.threshold, self.ignore_index
        )
        columns = {key: value.tolist() for key, value in scores.items()}
        for index, name in enumerate(batch["name"]):
            self.test_scores.append({"name": name, **{k: v[index] for k, v in columns.items()}})
        return probs

    def probabilities(
        self, images: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pet probabilities as eval and predict compute them: the test-time augmentation's
        views averaged, then the post-processing at the threshold. `logits`, the network's
        for `images` when already computed, spare the forward pass without augmentation."""
        if self.tta == "none" and logits is not None:
            probs = logits.float().sigmoid()
        else:
            probs = predict_probabilities(self, images, self.tta)
        if self.postprocess is None:
            return probs
        return postprocessed(probs, self.threshold, self.postprocess)

    def _log_epoch_metrics(self, stage: str) -> None:
        # The metric reduces its sums across processes itself; Lightning must not again.
        values = {
            f"{stage}/{name}": value
            for name, value in self.metrics[f"{stage}_metrics"].compute().items()
        }
        self.log(f"{stage}/dice", values.pop(f"{stage}/dice"), prog_bar=stage != "test")
        self.log_dict(values)
        self.metrics[f"{stage}_metrics"].reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_start(self) -> None:
        self.test_scores = []

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")
        if self.trainer.world_size > 1:
            gathered: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, self.test_scores)
            # A distributed sampler pads the last batch with repeats: keep one row per image.
            rows = {row["name"]: row for part in gathered for row in part}
            self.test_scores = list(rows.values())
        self.test_scores.sort(key=lambda row: row["name"])

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        budget = time_fraction(self.trainer)
        scheduler = self.scheduler_factory(
            optimizer,
            total_steps=self.trainer.estimated_stepping_batches,
            **({"time_fraction": budget} if budget is not None else {}),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint["segpets_config"] = self.run_config
