"""The configured model, loss, optimizer, batch and precision, timed several ways: a plain
PyTorch loop, segpets' LightningModule + Trainer, smp's U-Net, inference, and training on
real files through the data loader."""

import contextlib
import copy
import importlib.util
import logging
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from time import perf_counter
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segpets.bench.data import dataset_status, train_size
from segpets.bench.timing import (
    collect,
    count_host_syncs,
    summarize,
    synchronize,
    time_alternating,
    time_steps,
)
from segpets.builders import build_datamodule, build_module, resolve_trainer_config
from segpets.cost import count_flops
from segpets.errors import ConfigError, DataError
from segpets.inference import autocast_dtype
from segpets.runs import hydra_choices

# The trainer.precision values the bench knows how to time.
TIMED_PRECISIONS = frozenset({"32", "32-true", "bf16", "bf16-mixed", "16", "16-mixed"})


def checked_autocast_dtype(precision: object, device: torch.device) -> torch.dtype | None:
    """`autocast_dtype`, for the precisions the bench knows how to time."""
    name = str(precision)
    if name not in TIMED_PRECISIONS:
        raise ConfigError(
            f"segpets.bench times trainer.precision 32-true, bf16-mixed or 16-mixed, got {name!r}"
        )
    return autocast_dtype(name, device)


class Workload:
    """The configured model, loss, optimizer, batch and precision, timed several ways."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        resolve_trainer_config(cfg)  # trainer.precision auto -> what this machine runs
        self.dtype = checked_autocast_dtype(cfg.trainer.precision, device)
        self.channels_last = bool(cfg.module.get("channels_last", False))
        self.steps, self.warmup = cfg.steps, cfg.warmup
        size, batch = train_size(cfg), cfg.data.batch_size
        generator = torch.Generator().manual_seed(cfg.seed)
        in_channels = cfg.model.get("in_channels", 3)
        # Training steps see batches at data.train_size, eval passes at data.image_size.
        self.images = torch.randn(batch, in_channels, size, size, generator=generator)
        self.masks = (torch.rand(batch, 1, size, size, generator=generator) > 0.5).to(torch.uint8)
        eval_size = cfg.data.image_size
        self.eval_images = torch.randn(
            batch, in_channels, eval_size, eval_size, generator=generator
        )
        self.batch_size = batch
        self._flops: dict[str, int] = {}

    def variant(self, precision: str, channels_last: bool) -> "Workload":
        """The same workload in another precision and memory layout. It shares the FLOP
        counts, which depend on neither."""
        other = copy.copy(self)
        other.dtype = checked_autocast_dtype(precision, self.device)
        other.channels_last = channels_last
        return other

    # The plain loop and the Lightning run start from the same weights.
    def _seeded(self, build: Callable[[], Any]) -> Any:
        torch.manual_seed(self.cfg.seed)
        return build()

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def _inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._placed(self.images), self.masks.to(self.device)

    def _placed(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def train_step(self, model: nn.Module) -> tuple[Callable[[], None], Callable[[], None]]:
        """A plain PyTorch training step of `model`, and its forward + backward alone."""
        model = self._prepare(model).train()
        loss_fn = instantiate(self.cfg.loss).to(self.device)
        optimizer = instantiate(self.cfg.optimizer)(params=model.parameters())
        scheduler = None
        if self.cfg.get("scheduler"):
            total = self.warmup + self.steps
            scheduler = instantiate(self.cfg.scheduler)(optimizer, total_steps=total)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        images, masks = self._inputs()

        def forward_backward() -> None:
            with self._autocast():
                loss = loss_fn(model(images), masks)
            scaler.scale(loss).backward()

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            forward_backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()

        def forward_backward_only() -> None:
            forward_backward()
            optimizer.zero_grad(set_to_none=True)

        return step, forward_backward_only

    def segpets_model(self) -> nn.Module:
        """The configured model, seeded."""
        return self._seeded(lambda: instantiate(self.cfg.model))

    def flops(self, kind: str) -> int:
        """FLOPs of one training step ("train": forward + backward) or forward ("inference")."""
        if kind not in self._flops:
            model = self.segpets_model()
            if kind == "train":
                self._flops[kind] = count_flops(self.train_step(model)[1])
            else:
                self._flops[kind] = count_flops(self._inference_step(model))
        return self._flops[kind]

    def cost(self) -> dict[str, Any]:
        """What one step of the model costs: parameters and FLOPs."""
        model = self.segpets_model()
        return {
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflop_per_step": self.flops("train") / 1e9,
            "gflop_per_image_train": self.flops("train") / 1e9 / self.batch_size,
            "gflop_per_image_inference": self.flops("inference") / 1e9 / self.batch_size,
        }

    def loops(
        self, names: list[str], rounds: int, peak: float | None, smp_flops: float = 0.0
    ) -> dict[str, Any]:
        """Time the training loops `names` ("plain", "lightning", "smp"), `rounds` times;
        `smp_flops` is smp's cost per step (`smp_cost`).

        In each round the plain loops (ours and smp's) alternate step by step, then the
        Trainer runs its steps: a busy spell of the machine slows the plain loops alike
        and is spread over the rounds for the Trainer. Each result pools its rounds'
        step times (steps x rounds of them).
        """
        times: dict[str, list[float]] = {name: [] for name in names}
        syncs: Counter = Counter()
        builders = {"plain": self.segpets_model, "smp": self._smp_model}
        for _ in range(rounds):
            plain_loops = {
                name: self.train_step(builders[name]())[0] for name in names if name in builders
            }
            timed = time_alternating(plain_loops, self.steps, self.warmup, self.device)
            del plain_loops
            collect()
            if "lightning" in names:
                lightning_times, lightning_syncs = self.lightning()
                timed["lightning"] = lightning_times
                syncs.update(lightning_syncs)
                collect()
            for name, round_times in timed.items():
                times[name] += round_times
        results: dict[str, Any] = {}
        for name in names:
            flops = smp_flops if name == "smp" else self.flops("train")
            results[name] = summarize(times[name], self.batch_size, flops, peak)
        if "lightning" in names:
            batches = rounds * (self.warmup + self.steps + 1)
            results["lightning"]["host_syncs_per_step"] = {
                method: n / batches for method, n in syncs.items()
            }
        return results

    def lightning(self) -> tuple[list[float], Counter]:
        """The same step through segpets' LightningModule and a Trainer (no logger, no checkpoint).

        A step is timed from one on_train_batch_start to the next, so it includes what the
        loop does between batches; the module's own host syncs are counted in training_step.
        """
        module = self._seeded(lambda: build_module(self.cfg))
        syncs: Counter = Counter()
        training_step = module.training_step

        def counted_training_step(*args, **kwargs):
            with count_host_syncs() as counts:
                out = training_step(*args, **kwargs)
            syncs.update(counts)
            return out

        module.training_step = counted_training_step
        batches = self.warmup + self.steps + 1  # + 1: the last step ends at the next start
        batch = {"image": self.images, "mask": self.masks}
        loader = DataLoader(_SameBatch(batch, batches), batch_size=None)
        return self._fit_timed(module, batches, train_dataloaders=loader), syncs

    def _fit_timed(self, module: L.LightningModule, batches: int, **data: Any) -> list[float]:
        """Fit `module` for `batches` steps without logger or checkpoints; the step times
        after warm-up, each from one on_train_batch_start to the next (so it includes
        fetching the next batch and whatever the loop does between batches)."""
        timer = _StepTimer(self.device)
        with _quiet_lightning():
            trainer = instantiate(
                self.cfg.trainer,
                default_root_dir=self.cfg.paths.output_dir,
                callbacks=[timer],
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                max_epochs=-1,
                max_steps=batches,
                limit_val_batches=0,
                num_sanity_val_steps=0,
            )
            trainer.fit(module, **data)
        times = [b - a for a, b in zip(timer.starts, timer.starts[1:], strict=False)]
        return times[self.warmup :]

    def loader(self, peak: float | None, root: Path) -> dict[str, Any]:
        """Training through the Trainer on real files with the configured augmentation, for
        each `loader_workers` setting: whether loader workers keep up with the step and
        what they take from it (on a CPU they share its cores). Without a dataset in
        data.root, only a "status" saying so."""
        results: dict[str, Any] = {"root": str(root), "augment": hydra_choices().get("augment")}
        status = dataset_status(self.cfg)
        if status is not None:
            return {**results, "status": status}
        for workers in self.cfg.loader_workers:
            datamodule = build_datamodule(self.cfg, root=str(root), num_workers=workers)
            module = self._seeded(lambda: build_module(self.cfg))
            try:
                times = self._fit_timed(module, self.warmup + self.steps + 1, datamodule=datamodule)
            except DataError as error:
                return {**results, "status": f"no usable dataset in data.root: {error}"}
            results[str(workers)] = {
                "num_workers": datamodule.train_dataloader().num_workers,
                **summarize(times, self.batch_size, self.flops("train"), peak),
            }
            del datamodule, module
            collect()
        results["status"] = "ok"
        return results

    def smp_cost(self) -> dict[str, Any]:
        """smp.Unet("resnet34")'s size and FLOPs per training step, with "status": "ok";
        or only the status saying why it cannot be timed here."""
        if importlib.util.find_spec("segmentation_models_pytorch") is None:
            return {"status": "not installed (pip install segmentation-models-pytorch)"}
        if train_size(self.cfg) % 32:
            return {"status": "skipped: smp.Unet needs sides divisible by 32"}
        import segmentation_models_pytorch as smp

        model = self._smp_model()
        return {
            "status": "ok",
            "version": smp.__version__,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflop_per_step": count_flops(self.train_step(model)[1]) / 1e9,
        }

    def _smp_model(self) -> nn.Module:
        """smp.Unet("resnet34", encoder_weights=None, classes=1), seeded like ours."""
        import segmentation_models_pytorch as smp

        in_channels = self.cfg.model.get("in_channels", 3)
        return self._seeded(
            lambda: smp.Unet("resnet34", encoder_weights=None, in_channels=in_channels, classes=1)
        )

    def _inference_step(self, model: nn.Module) -> Callable[[], None]:
        model = self._prepare(model).eval()
        images = self._placed(self.eval_images)

        def step() -> None:
            with torch.no_grad(), self._autocast():
                model(images)

        return step

    def inference(self, peak: float | None) -> dict[str, Any]:
        """Forward passes in eval mode without gradients, same precision and layout."""
        step = self._inference_step(self.segpets_model())
        times = time_steps(step, self.steps, self.warmup, self.device)
        collect()
        return summarize(times, self.batch_size, self.flops("inference"), peak)


class _SameBatch(Dataset):
    """One ready batch, `length` times: the Trainer's loop without data loading."""

    def __init__(self, batch: dict[str, torch.Tensor], length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batch


class _StepTimer(Callback):
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        synchronize(self.device)
        self.starts.append(perf_counter())


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Without Lightning's device banner and its advice for real runs."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in (
                "does not have many workers",
                "smaller than the logging interval",
                "defined a `validation_step` but have no `val_dataloader`",
                "isinstance(treespec, LeafSpec)` is deprecated",
            ):
                warnings.filterwarnings("ignore", message=".*" + re.escape(message))
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
