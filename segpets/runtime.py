"""Process-wide settings every segpets command applies before it builds anything.

`configure_runtime(cfg)` reads two options of configs/train.yaml:

- `matmul_precision`: float32 matmul precision on GPUs with tensor cores.
- `keep_host_memory`: on Linux with glibc, keep freed host memory for reuse. By default
  glibc serves every allocation above its mmap threshold (128 KiB, rising to at most
  32 MiB) with a fresh mapping and unmaps it on free, so a CPU training step that frees
  and reallocates gigabytes of activations has the kernel fault and zero them in again
  page by page, every step. Serving them from the heap and never trimming it keeps the
  pages; the cost is that the process holds on to its peak memory until it exits.
  docs/performance.md has what it buys, per machine.
"""

import ctypes
import ctypes.util
import logging
import platform

import torch
from omegaconf import DictConfig

log = logging.getLogger("segpets")

# mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER = 2**31 - 1  # mallopt takes an int: the largest threshold it can express


def configure_runtime(cfg: DictConfig) -> None:
    hide_lightning_tips()
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    if cfg.get("keep_host_memory", False):
        keep_host_memory()


class _LightningTips(logging.Filter):
    """Drops Lightning's advertisements ("💡 Tip: ... try installing litlogger")."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("💡") or "pypi.org/project/lit" in message)


_LIGHTNING_TIPS = _LightningTips()


def hide_lightning_tips() -> None:
    """Keep Lightning's promotional tips out of segpets' output; its other messages stay.

    Lightning logs them with `rank_zero_info` when a Trainer is built (no LitLogger among
    the loggers). Idempotent.
    """
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _LIGHTNING_TIPS not in logger.filters:
            logger.addFilter(_LIGHTNING_TIPS)


def keep_host_memory() -> bool:
    """Have glibc malloc keep freed memory instead of returning it to the OS.

    No mmap-served chunks (`M_MMAP_MAX=0`: large blocks come from the heap, which is
    reused) and no trimming of the heap's top. Returns whether the settings took; False
    where the C library is not glibc (macOS, musl, Windows), which have their own policies.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    applied = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, NEVER) == 1
    if not applied:
        log.warning("keep_host_memory: glibc refused mallopt; freed memory goes back to the OS")
    return applied
