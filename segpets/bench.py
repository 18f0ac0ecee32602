"""`python -m segpets.bench`: how fast segpets trains, infers and loads data here.

One process measures, for the same model, inputs and settings (configs/bench.yaml):
the machine's convolution peak, the training step as a plain PyTorch loop and through
segpets' LightningModule + Trainer (their ratio is segpets' overhead), smp's U-Net when it is
installed, inference, and the data pipeline with and without the decoded-image cache. Model
sections train on fixed random tensors, so no data loading is timed there. `bench(cfg)` is
a plain function; `main` is the thin Hydra shell around it.

Times are wall clock: on a busy machine they are noisy, and the JSON records the load
average before and after so that a reader can tell.
"""

import contextlib
import functools
import gc
import importlib.util
import json
import logging
import math
import os
import platform
import re
import resource
import statistics
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from time import perf_counter
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from segpets.builders import build_datamodule, build_module, resolve_trainer_config
from segpets.cli import CONFIG_PATH, exit_on_user_error, run
from segpets.data.augment import PRESETS, augment_preset
from segpets.data.oxford_pet import check_layout
from segpets.errors import ConfigError, DataError
from segpets.inference import autocast_dtype
from segpets.runtime import configure_runtime

log = logging.getLogger("segpets")

SECTIONS = ("peak", "train", "plain", "lightning", "smp", "inference", "loader", "data")
SAMPLE_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "oxford-iiit-pet-sample"
# Python-level Tensor methods that make the host wait for the device's result.
HOST_SYNC_METHODS = (
    "item",
    "tolist",
    "cpu",
    "numpy",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="bench")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    bench(cfg)


def bench(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured sections; write `cfg.output` (JSON) and print a table."""
    sections = _check_options(cfg)
    configure_runtime(cfg)
    resolve_trainer_config(cfg)
    device = _device(cfg)
    workload = Workload(cfg, device)
    results: dict[str, Any] = {"settings": _settings(cfg, device, workload)}
    peak = None
    if "peak" in sections:
        results["peak"] = peak_section(device, cfg.probe, cfg.steps, cfg.warmup)
        peak = results["peak"]["gflops"]
    if "train" in sections:
        results["train"] = workload.cost()
    loops = [name for name in ("plain", "lightning") if name in sections]
    smp_flops = 0.0
    if "smp" in sections:
        results["smp"] = workload.smp_cost()
        if results["smp"]["status"] == "ok":
            loops.append("smp")
            smp_flops = results["smp"]["gflop_per_step"] * 1e9
    for name, timed in workload.loops(loops, cfg.rounds, peak, smp_flops).items():
        results[name] = {**results.get(name, {}), **timed}
    if "plain" in loops and "lightning" in loops:
        results["lightning"]["ratio_to_plain"] = (
            results["lightning"]["ms_median"] / results["plain"]["ms_median"]
        )
    if "plain" in loops and "smp" in loops:
        results["smp"]["plain_gflops_ratio"] = results["plain"]["gflops"] / results["smp"]["gflops"]
    if "inference" in sections:
        results["inference"] = workload.inference(peak)
    if "loader" in sections:
        results["loader"] = workload.loader(peak, data_root(cfg))
    if "data" in sections:
        results["data"] = data_section(cfg)
    results["peak_rss_mb"] = _peak_rss_mb()
    results["settings"]["load_average_after"] = list(os.getloadavg())

    output = Path(cfg.paths.output_dir) / cfg.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    _print_table(results, output)
    return results


# ---------------------------------------------------------------------------- settings


def _check_options(cfg: DictConfig) -> list[str]:
    checks = [("steps", 1), ("warmup", 0), ("rounds", 1), ("data_images", 1)]
    checks += [(f"probe.{name}", 1) for name in ("batch", "channels", "size")]
    for option, minimum in checks:
        value = OmegaConf.select(cfg, option)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{option} must be an integer >= {minimum}, got {value!r}")
    sections = list(cfg.sections)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    return sections


def _device(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in {"gpu", "cuda"} or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def checked_autocast_dtype(precision: object, device: torch.device) -> torch.dtype | None:
    """`autocast_dtype`, for the precisions the bench knows how to time."""
    name = str(precision)
    if name not in {"32", "32-true", "bf16", "bf16-mixed", "16", "16-mixed"}:
        raise ConfigError(
            f"segpets.bench times trainer.precision 32-true, bf16-mixed or 16-mixed, got {name!r}"
        )
    return autocast_dtype(name, device)


def _choice(cfg: DictConfig, group: str) -> str | None:
    """The option chosen for config `group` (augment=basic -> "basic"), when Hydra runs."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def _settings(cfg: DictConfig, device: torch.device, workload: "Workload") -> dict[str, Any]:
    return {
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "image_size": cfg.data.image_size,
        "batch_size": cfg.data.batch_size,
        "precision": str(cfg.trainer.precision),
        "autocast_dtype": str(workload.dtype).removeprefix("torch.") if workload.dtype else None,
        "channels_last": workload.channels_last,
        "loss": cfg.loss._target_.rsplit(".", 1)[-1],
        "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
        "fused_optimizer": bool(cfg.optimizer.get("fused", False)),
        "keep_host_memory": bool(cfg.get("keep_host_memory", False)),
        "steps": cfg.steps,
        "warmup": cfg.warmup,
        "rounds": cfg.rounds,
        "seed": cfg.seed,
        "device": str(device),
        "device_name": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "load_average_before": list(os.getloadavg()),
    }


# ------------------------------------------------------------------------------ timing


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], object], steps: int, warmup: int, device: torch.device
) -> list[float]:
    """Seconds of each of `steps` calls of `step`, after `warmup` untimed ones."""
    return time_alternating({"step": step}, steps, warmup, device)["step"]


def time_alternating(
    steps_by_name: dict[str, Callable[[], object]], steps: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """`time_steps` for several step functions, called in turn one step at a time, so that
    a busy spell of the machine slows all of them alike."""
    for _ in range(warmup):
        for step in steps_by_name.values():
            step()
    _synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            start = perf_counter()
            step()
            _synchronize(device)
            times[name].append(perf_counter() - start)
    return times


def summarize(
    times: list[float], items: int, flops: float | None = None, peak: float | None = None
) -> dict[str, Any]:
    """img/s and ms per step (median, min, max); GFLOP/s and its fraction of `peak`."""
    median = statistics.median(times)
    gflops = flops / median / 1e9 if flops else None
    return {
        "img_s": items / median,
        "ms_median": 1e3 * median,
        "ms_min": 1e3 * min(times),
        "ms_max": 1e3 * max(times),
        "gflops": gflops,
        "fraction_of_peak": gflops / peak if gflops and peak else None,
        "peak_rss_mb": _peak_rss_mb(),
    }


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs of the ops `run` dispatches (convolutions and matmuls, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def _peak_rss_mb() -> float:
    """The process's peak resident memory so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 2**10


@contextlib.contextmanager
def count_host_syncs() -> Iterator[Counter]:
    """Count calls of Tensor methods that wait for the device (`.item()`, `.cpu()`, `bool(t)`...).

    Only Python-level calls are seen, which is where a module's per-step syncs come from.
    On a CPU they cost little, but each one stalls a GPU's queue.
    """
    counts: Counter = Counter()
    originals = {name: torch.Tensor.__dict__.get(name) for name in HOST_SYNC_METHODS}

    def counted(name: str, method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            counts[name] += 1
            return method(self, *args, **kwargs)

        return wrapper

    for name in HOST_SYNC_METHODS:
        setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


# ------------------------------------------------------------------------------ peak


def peak_section(
    device: torch.device, probe: DictConfig, steps: int, warmup: int
) -> dict[str, Any]:
    """fwd+bwd GFLOP/s of a 3x3 convolution in fp32 and bf16, contiguous and channels_last:
    what the machine's convolution kernels reach, to compare the models with."""
    batch, channels, size = probe.batch, probe.channels, probe.size
    variants = {}
    for dtype in (torch.float32, torch.bfloat16):
        for channels_last in (False, True):
            name = ("fp32" if dtype == torch.float32 else "bf16") + ("_cl" if channels_last else "")
            variants[name] = _conv_probe(
                device, dtype, channels_last, (batch, channels, size, size), steps, warmup
            )
    best = max(variants, key=lambda name: variants[name]["gflops"])
    return {
        "probe": f"Conv2d {channels}->{channels} 3x3, batch {batch} at {size} px, "
        "forward + backward",
        "variants": variants,
        "best": best,
        "gflops": variants[best]["gflops"],
    }


def _conv_probe(
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
    shape: tuple[int, int, int, int],
    steps: int,
    warmup: int,
) -> dict[str, Any]:
    torch.manual_seed(0)
    batch, channels, height, width = shape
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    conv = nn.Conv2d(channels, channels, 3, padding=1).to(device, dtype)
    conv = conv.to(memory_format=memory_format)
    x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    x.requires_grad_()
    grad = torch.ones_like(x)

    def step() -> None:
        conv(x).backward(grad)
        conv.zero_grad(set_to_none=True)
        x.grad = None

    # Forward 2 * B*H*W * C*C*9; backward twice that (input and weight gradients), as
    # FlopCounterMode counts it.
    flops = 3 * 2 * batch * height * width * channels * channels * 9
    return summarize(time_steps(step, steps, warmup, device), batch, flops)


# ---------------------------------------------------------------------------- workload


class Workload:
    """The configured model, loss, optimizer, batch and precision, timed several ways."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.dtype = checked_autocast_dtype(cfg.trainer.precision, device)
        self.channels_last = bool(cfg.module.get("channels_last", False))
        self.steps, self.warmup = cfg.steps, cfg.warmup
        size, batch = cfg.data.image_size, cfg.data.batch_size
        generator = torch.Generator().manual_seed(cfg.seed)
        in_channels = cfg.model.get("in_channels", 3)
        self.images = torch.randn(batch, in_channels, size, size, generator=generator)
        self.masks = (torch.rand(batch, 1, size, size, generator=generator) > 0.5).to(torch.uint8)
        self.batch_size = batch
        self._flops: dict[str, int] = {}

    # The plain loop and the Lightning run start from the same weights.
    def _seeded(self, build: Callable[[], Any]) -> Any:
        torch.manual_seed(self.cfg.seed)
        return build()

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def _inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.images.to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, self.masks.to(self.device)

    def _prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def _train_step(self, model: nn.Module) -> tuple[Callable[[], None], Callable[[], None]]:
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

    def _segpets_model(self) -> nn.Module:
        return self._seeded(lambda: instantiate(self.cfg.model))

    def flops(self, kind: str) -> int:
        """FLOPs of one training step ("train": forward + backward) or forward ("inference")."""
        if kind not in self._flops:
            model = self._segpets_model()
            if kind == "train":
                self._flops[kind] = count_flops(self._train_step(model)[1])
            else:
                self._flops[kind] = count_flops(self._inference_step(model))
        return self._flops[kind]

    def cost(self) -> dict[str, Any]:
        """What one step of the model costs: parameters and FLOPs."""
        model = self._segpets_model()
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
        builders = {"plain": self._segpets_model, "smp": self._smp_model}
        for _ in range(rounds):
            plain_loops = {
                name: self._train_step(builders[name]())[0] for name in names if name in builders
            }
            timed = time_alternating(plain_loops, self.steps, self.warmup, self.device)
            del plain_loops
            _collect()
            if "lightning" in names:
                lightning_times, lightning_syncs = self.lightning()
                timed["lightning"] = lightning_times
                syncs.update(lightning_syncs)
                _collect()
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
        what they take from it (on a CPU they share its cores)."""
        results: dict[str, Any] = {"root": str(root), "augment": _choice(self.cfg, "augment")}
        for workers in self.cfg.loader_workers:
            datamodule = build_datamodule(self.cfg, root=str(root), num_workers=workers)
            module = self._seeded(lambda: build_module(self.cfg))
            try:
                times = self._fit_timed(module, self.warmup + self.steps + 1, datamodule=datamodule)
            except DataError as error:
                return {**results, "status": f"no usable dataset: {error}"}
            results[str(workers)] = {
                "num_workers": datamodule.train_dataloader().num_workers,
                **summarize(times, self.batch_size, self.flops("train"), peak),
            }
            del datamodule, module
            _collect()
        results["status"] = "ok"
        return results

    def smp_cost(self) -> dict[str, Any]:
        """smp.Unet("resnet34")'s size and FLOPs per training step, with "status": "ok";
        or only the status saying why it cannot be timed here."""
        if importlib.util.find_spec("segmentation_models_pytorch") is None:
            return {"status": "not installed (pip install segmentation-models-pytorch)"}
        if self.cfg.data.image_size % 32:
            return {"status": "skipped: smp.Unet needs sides divisible by 32"}
        import segmentation_models_pytorch as smp

        model = self._smp_model()
        return {
            "status": "ok",
            "version": smp.__version__,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflop_per_step": count_flops(self._train_step(model)[1]) / 1e9,
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
        images, _ = self._inputs()

        def step() -> None:
            with torch.no_grad(), self._autocast():
                model(images)

        return step

    def inference(self, peak: float | None) -> dict[str, Any]:
        """Forward passes in eval mode without gradients, same precision and layout."""
        step = self._inference_step(self._segpets_model())
        times = time_steps(step, self.steps, self.warmup, self.device)
        _collect()
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
        _synchronize(self.device)
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


def _collect() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ data


def data_root(cfg: DictConfig) -> Path:
    """data.root when it holds a dataset (or data.synthetic generates one), else the real
    sample beside the repo when present; a missing data.root is reported by the caller."""
    root = Path(cfg.data.root)
    if cfg.data.get("synthetic") is not None or not SAMPLE_ROOT.is_dir():
        return root
    try:
        check_layout(root)
    except DataError:
        return SAMPLE_ROOT
    return root


def data_section(cfg: DictConfig) -> dict[str, Any]:
    """Samples per second of the train dataset in this process, i.e. per loader worker:
    decode (or cache read), augment, normalise, to tensor; no collation.

    Throughput is `data_images` samples over the time they take together, not a median
    of per-sample times: with transforms applied at p=0.5 (the strong preset's elastic
    warp) the sample times split into two groups and their median lands between them.
    Each pass reseeds the augmentations, so the decoded and the cached pass draw the same
    transforms; the passes alternate `rounds` times and the median pass counts.
    """
    root = data_root(cfg)
    if root != Path(cfg.data.root):
        log.info(f"data.root {cfg.data.root} holds no dataset: the data section reads {root}")
    results: dict[str, Any] = {"root": str(root), "image_size": cfg.data.image_size}
    for augment in PRESETS:
        transforms = augment_preset(augment, cfg.data.image_size)
        datasets = {}
        for cache in (False, True):
            datamodule = instantiate(
                cfg.data, root=str(root), augment=transforms, num_workers=0, cache=cache
            )
            try:
                datamodule.prepare_data()
                datasets["cached" if cache else "decoded"] = datamodule.dataset("train")
            except DataError as error:
                return {**results, "status": f"no usable dataset: {error}"}
        rates = _samples_per_second(datasets, cfg.data_images, cfg.rounds, cfg.seed)
        results[augment] = {
            "decoded_img_s": rates["decoded"],
            "cached_img_s": rates["cached"],
            "cache_speedup": rates["cached"] / rates["decoded"],
        }
    results["status"] = "ok"
    return results


def _samples_per_second(
    datasets: dict[str, Dataset], count: int, rounds: int, seed: int
) -> dict[str, float]:
    """Each dataset's throughput: `count` samples over their total time, median of
    `rounds` alternating passes (after one untimed pass, so the files are in the page
    cache either way), each pass starting from the augmentations' `seed`."""
    times: dict[str, list[float]] = {name: [] for name in datasets}
    for timed in [False] + [True] * rounds:
        for name, dataset in datasets.items():
            dataset.seed_augmentations(seed)
            start = perf_counter()
            for index in range(count):
                dataset[index % len(dataset)]
            if timed:
                times[name].append(perf_counter() - start)
    return {name: count / statistics.median(passes) for name, passes in times.items()}


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def _timed_row(table: Table, name: str, result: dict[str, Any], note: str = "") -> None:
    spread = f"{_fmt(result['ms_median'])} ({_fmt(result['ms_min'])}-{_fmt(result['ms_max'])})"
    fraction = result.get("fraction_of_peak")
    table.add_row(
        name,
        _fmt(result["img_s"]),
        spread,
        _fmt(result.get("gflops")),
        f"{100 * fraction:.0f} %" if fraction else "-",
        note,
    )


def _print_table(results: dict[str, Any], output: Path) -> None:
    settings = results["settings"]
    title = (
        f"segpets.bench: {settings['model']}, batch {settings['batch_size']} at "
        f"{settings['image_size']} px, {settings['precision']}"
        f"{', channels_last' if settings['channels_last'] else ''}, {settings['device']} "
        f"({settings['torch_threads']} thread{'s' if settings['torch_threads'] != 1 else ''}), "
        f"median of {settings['steps']} steps"
        f"{' x ' + str(settings['rounds']) + ' rounds' if settings['rounds'] > 1 else ''}"
    )
    table = Table(title=title)
    for column in ("section", "img/s", "ms/step: median (min-max)", "GFLOP/s", "of peak", "note"):
        table.add_column(column, justify="left" if column in {"section", "note"} else "right")
    peak = results.get("peak")
    if peak:
        for name, variant in peak["variants"].items():
            note = "peak" if name == peak["best"] else ""
            _timed_row(table, f"conv {name.replace('_cl', ' cl')}", variant, note)
    train = results.get("train")
    if train:
        table.add_row(
            "train cost",
            "",
            "",
            "",
            "",
            f"{train['params_m']:.1f} M params, {train['gflop_per_step']:.2f} GFLOP/step (fwd+bwd)",
        )
    for section, name in (("plain", "plain PyTorch"), ("lightning", "segpets Lightning")):
        if section in results:
            result = results[section]
            notes = []
            if "ratio_to_plain" in result:
                notes.append(f"{result['ratio_to_plain']:.2f} x plain time")
            if section == "lightning":
                syncs = sum(result["host_syncs_per_step"].values())
                notes.append(f"{syncs:g} host syncs/step")
            _timed_row(table, name, result, ", ".join(notes))
    smp = results.get("smp")
    if smp:
        if smp["status"] == "ok":
            note = f"{smp['params_m']:.1f} M params, {smp['gflop_per_step']:.2f} GFLOP/step"
            if "plain_gflops_ratio" in smp:
                note += f"; plain reaches {smp['plain_gflops_ratio']:.2f} x its GFLOP/s"
            _timed_row(table, "smp Unet-resnet34", smp, note)
        else:
            table.add_row("smp Unet-resnet34", "", "", "", "", smp["status"])
    if "inference" in results:
        _timed_row(table, "inference", results["inference"])
    loader = results.get("loader")
    if loader:
        if loader["status"] != "ok":
            table.add_row("loader", "", "", "", "", loader["status"])
        for setting, result in loader.items():
            if isinstance(result, dict):
                note = f"augment={loader['augment']}, num_workers={result['num_workers']}"
                _timed_row(table, f"loader workers={setting}", result, note)
    data = results.get("data")
    if data:
        if data["status"] != "ok":
            table.add_row("data", "", "", "", "", data["status"])
        for augment in PRESETS:
            if augment in data:
                row = data[augment]
                table.add_row(f"data {augment}", _fmt(row["decoded_img_s"]), "", "", "", "decoded")
                table.add_row(
                    f"data {augment} cached",
                    _fmt(row["cached_img_s"]),
                    "",
                    "",
                    "",
                    f"{row['cache_speedup']:.1f} x decoded",
                )
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    if data and data["status"] == "ok":
        console.print(f"data: {data['root']} at {data['image_size']} px, one process")
    load = settings["load_average_before"], settings["load_average_after"]
    console.print(
        f"load average before/after: {load[0][0]:.2f} / {load[1][0]:.2f} on "
        f"{settings['cpu_count']} CPUs; peak RSS {results['peak_rss_mb']:.0f} MB; JSON: {output}"
    )


if __name__ == "__main__":
    run(main)
