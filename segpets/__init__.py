"""segpets: binary semantic segmentation experiments with Lightning and Hydra."""

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _run_dir(ckpt_path: str | None, runs_dir: str, new_dir: str) -> str:
    from segpets.checkpointing import resume_dir

    return resume_dir(ckpt_path, runs_dir, new_dir)


def _auto_precision() -> str:
    """bf16-mixed where the hardware computes in bfloat16 (CPUs, Ampere and newer GPUs),
    else 16-mixed.

    On this project's 2-core CPU it trains ResNet34-UNet 1.7x faster than 32-true
    (`python -m segpets.bench`); losses stay in float32 either way.
    """
    import torch

    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "16-mixed"
    return "bf16-mixed"


# Hydra resolves configs before any task code runs: register the resolvers on import.
OmegaConf.register_new_resolver("segpets.run_dir", _run_dir, use_cache=True, replace=True)
OmegaConf.register_new_resolver(
    "segpets.auto_precision", _auto_precision, use_cache=True, replace=True
)
