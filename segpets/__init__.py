"""segpets: binary semantic segmentation experiments with Lightning and Hydra."""

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _run_dir(ckpt_path: str | None, runs_dir: str, new_dir: str) -> str:
    from segpets.checkpointing import resume_dir

    return resume_dir(ckpt_path, runs_dir, new_dir)


# Hydra resolves configs before any task code runs: register the resolvers on import.
OmegaConf.register_new_resolver("segpets.run_dir", _run_dir, use_cache=True, replace=True)
