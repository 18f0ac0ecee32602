"""DataLoader settings chosen for where the batches go: `data.num_workers=auto` and friends.

On a GPU the training step runs on the device and the host's cores only feed it, so each
training process gets loader workers for the cores it can spare (one stays with the
process that drives the GPU), pinned host memory for faster copies, and a deeper
prefetch queue to ride out slow samples. On a CPU the step itself runs on
`torch.get_num_threads()` cores per process, and a worker on one of those cores slows
the step more than decoding in the training process does (docs/performance.md): workers
get only the cores the compute threads leave free. Workers are persistent either way, so
the validation loader does not start new processes every epoch.
"""

import os
from typing import Any

import torch

from segpets.errors import ConfigError

AUTO = "auto"
MAX_WORKERS = 8
"""Per training process: a common cap (each worker holds its own prefetched batches); the
GPU rule was not measured here, no GPU being at hand."""
GPU_PREFETCH = 4
"""Batches each worker prepares ahead on a GPU (torch's default, kept on a CPU, is 2)."""


def available_cpus() -> int:
    """Cores this process may run on (a SLURM or taskset allocation, not the whole machine)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_loader_options(
    num_workers: object, prefetch_factor: object, prefix: str = "data."
) -> None:
    """ConfigErrors for `num_workers` and `prefetch_factor` (options under `prefix`) that
    are neither `auto` nor a whole number in range."""
    for option, value, minimum in (
        (prefix + "num_workers", num_workers, 0),
        (prefix + "prefetch_factor", prefetch_factor, 1),
    ):
        whole = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        if value != AUTO and not whole:
            raise ConfigError(f"{option} must be {AUTO} or an integer >= {minimum}, got {value!r}")


def loader_options(
    num_workers: int | str,
    pin_memory: bool | None,
    prefetch_factor: int | str,
    device_type: str,
    processes_per_node: int = 1,
) -> dict[str, Any]:
    """DataLoader keyword arguments for batches bound to a `device_type` device.

    `auto` picks per device type (module docstring); numbers and booleans are kept.
    `processes_per_node` training processes share this node's cores (DDP: one per device).
    """
    check_loader_options(num_workers, prefetch_factor)
    accelerated = device_type != "cpu"
    processes = max(processes_per_node, 1)
    if num_workers == AUTO:
        if accelerated:
            spare = available_cpus() // processes - 1
        else:
            spare = (available_cpus() - torch.get_num_threads() * processes) // processes
        num_workers = min(MAX_WORKERS, max(spare, 0))
    if pin_memory is None:
        # Pinned (page-locked) memory speeds host-to-GPU copies; only CUDA has it.
        pin_memory = device_type == "cuda"
    options: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        if prefetch_factor == AUTO:
            prefetch_factor = GPU_PREFETCH if accelerated else 2
        options.update(persistent_workers=True, prefetch_factor=prefetch_factor)
    return options
