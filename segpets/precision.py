"""Which precision to compute in, decided by what the hardware computes natively.

`trainer.precision: auto` resolves here, once, before anything is built:

- on a CUDA GPU: `bf16-mixed` where the GPU computes in bfloat16 (Ampere and newer),
  else `16-mixed` (with Lightning's gradient scaler);
- on a CPU: `bf16-mixed` only where the CPU has bfloat16 instructions (AVX512-BF16 or
  AMX tiles); elsewhere (AVX2-only and AVX512 CPUs without them) bfloat16 is emulated and
  many times slower than float32, so `32-true`;
- elsewhere (Apple's mps): `32-true`.

An explicit `bf16-mixed` or `16-mixed` runs as asked (Lightning runs 16-mixed as
bf16-mixed on a CPU), with one warning where the CPU would emulate it. The figures behind
this rule are in docs/performance.md, per machine.
"""

import functools
import os
import platform
import warnings
from pathlib import Path
from typing import Any

import torch

from segpets.errors import ConfigError

AUTO = "auto"
CUDA_ACCELERATORS = frozenset({"gpu", "cuda"})
# What Lightning accepts for `precision` (lightning.fabric.connector._PRECISION_INPUT_STR).
HALF = frozenset({"16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true"})


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 7B13"), as /proc/cpuinfo or the platform tells it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_capability() -> dict[str, Any]:
    """The CPU's vector instruction set as torch dispatches to it, and its bfloat16 support."""
    avx512_bf16 = bool(torch.cpu._is_avx512_bf16_supported())
    amx = bool(torch.cpu._is_amx_tile_supported())
    return {
        "isa": torch.backends.cpu.get_cpu_capability(),  # DEFAULT | AVX2 | AVX512 | ...
        "avx512_bf16": avx512_bf16,
        "amx": amx,
        "native_bf16": avx512_bf16 or amx,
    }


def cpu_isa_label() -> str:
    """One word for the CPU's kind: AMX, AVX512-BF16, AVX512, AVX2 or DEFAULT."""
    capability = cpu_capability()
    if capability["amx"]:
        return "AMX"
    if capability["avx512_bf16"]:
        return "AVX512-BF16"
    return capability["isa"]


def machine() -> dict[str, Any]:
    """What a measured figure depends on: CPU, its instruction set, threads, GPU, versions."""
    gpu = torch.cuda.is_available()
    return {
        "cpu": cpu_name(),
        "cpu_isa": cpu_isa_label(),
        **{f"cpu_{key}": value for key, value in cpu_capability().items() if key != "isa"},
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if gpu else None,
        "gpu_bf16": bool(torch.cuda.is_bf16_supported()) if gpu else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if gpu else None,
        "python": platform.python_version(),
    }


def uses_cuda(accelerator: Any) -> bool:
    """Whether a Trainer with this `accelerator` runs on a CUDA GPU on this machine."""
    name = str(accelerator)
    return name in CUDA_ACCELERATORS or (name == AUTO and torch.cuda.is_available())


def check_accelerator(accelerator: Any) -> None:
    """A GPU accelerator on a machine without one: say so, and what to use instead."""
    if str(accelerator) in CUDA_ACCELERATORS and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: this machine has no CUDA GPU that torch can "
            "use (torch.cuda.is_available() is False); train on the CPU with trainer=cpu or "
            "trainer.accelerator=auto"
        )


def auto_precision(accelerator: Any = AUTO) -> str:
    """The precision `auto` stands for on this machine and accelerator (see the module doc)."""
    if uses_cuda(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if str(accelerator) in {AUTO, "cpu"} and cpu_capability()["native_bf16"]:
        return "bf16-mixed"
    return "32-true"


def resolve_precision(precision: Any, accelerator: Any = AUTO) -> str:
    """`precision` as Lightning takes it: `auto` resolved, an explicit value checked.

    Raises a ConfigError for bf16 on a GPU without it; warns once for half precision
    on a CPU that emulates bfloat16.
    """
    name = str(precision)
    if name == AUTO:
        return auto_precision(accelerator)
    if uses_cuda(accelerator):
        if name.startswith("bf16") and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"trainer.precision={name}: this GPU ({torch.cuda.get_device_name()}) cannot "
                "compute in bfloat16; use trainer.precision=16-mixed or auto"
            )
    elif name in HALF and not cpu_capability()["native_bf16"]:
        _warn_emulated_bf16(name, cpu_isa_label())
    return name


@functools.cache
def _warn_emulated_bf16(precision: str, isa: str) -> None:
    warnings.warn(
        f"trainer.precision={precision} runs in bfloat16 on this CPU ({isa}, no AVX512-BF16 or "
        "AMX), which emulates it: training is many times slower than in float32. "
        "trainer.precision=32-true (what auto picks here) is the faster option.",
        UserWarning,
        stacklevel=3,
    )
