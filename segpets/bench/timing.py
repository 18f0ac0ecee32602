"""Timing steps, counting their FLOPs and host syncs, and the process's peak memory."""

import contextlib
import functools
import gc
import platform
import resource
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

import torch

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


def synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], object], steps: int, warmup: int, device: torch.device
) -> list[float]:
    """Seconds of each of `steps` calls of `step`, after `warmup` untimed ones."""
    return time_alternating({"step": step}, steps, warmup, device)["step"]


def time_alternating(
    steps_by_name: dict[str, Callable[[], object]],
    steps: int,
    warmup: int,
    device: torch.device | str = "cpu",
) -> dict[str, list[float]]:
    """`time_steps` for several step functions, called in turn one step at a time, so that
    a busy spell of the machine slows all of them alike."""
    device = torch.device(device)
    for _ in range(warmup):
        for step in steps_by_name.values():
            step()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            start = perf_counter()
            step()
            synchronize(device)
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
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 2**10


def collect() -> None:
    """Free what the last measurement left behind before the next one."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
