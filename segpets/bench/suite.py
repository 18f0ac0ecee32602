"""`bench(cfg)`: run the configured sections, write the JSON, print the table."""

import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from segpets.bench.data import data_root, data_section, train_size
from segpets.bench.peak import peak_section
from segpets.bench.precisions import precision_section
from segpets.bench.table import print_table
from segpets.bench.timing import peak_rss_mb
from segpets.bench.workload import Workload
from segpets.builders import resolve_trainer_config
from segpets.errors import ConfigError
from segpets.precision import AUTO, cpu_name, machine, uses_cuda
from segpets.runtime import configure_runtime

SECTIONS = (
    "peak",
    "train",
    "plain",
    "lightning",
    "smp",
    "inference",
    "precision",
    "loader",
    "data",
)


def bench(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured sections; write `cfg.output` (JSON) and print a table."""
    sections = check_options(cfg)
    configure_runtime(cfg)
    resolve_trainer_config(cfg)
    device = bench_device(cfg)
    workload = Workload(cfg, device)
    results: dict[str, Any] = {"settings": _settings(cfg, device, workload), "machine": machine()}
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
    if "precision" in sections:
        results["precision"] = precision_section(workload, _accelerator(cfg), peak)
    if "loader" in sections:
        results["loader"] = workload.loader(peak, data_root(cfg))
    if "data" in sections:
        results["data"] = data_section(cfg)
    results["peak_rss_mb"] = peak_rss_mb()
    results["settings"]["load_average_after"] = list(os.getloadavg())

    output = Path(cfg.paths.output_dir) / cfg.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, output)
    return results


def check_options(cfg: DictConfig) -> list[str]:
    """The sections to run; a ConfigError naming the option for a bad count or section."""
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


def _accelerator(cfg: DictConfig) -> Any:
    return cfg.trainer.get("accelerator", AUTO)


def bench_device(cfg: DictConfig) -> torch.device:
    """The CUDA GPU where the Trainer would train on one, else the CPU."""
    return torch.device("cuda" if uses_cuda(_accelerator(cfg)) else "cpu")


def _settings(cfg: DictConfig, device: torch.device, workload: Workload) -> dict[str, Any]:
    return {
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "image_size": cfg.data.image_size,
        "train_size": train_size(cfg),
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
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "load_average_before": list(os.getloadavg()),
    }
