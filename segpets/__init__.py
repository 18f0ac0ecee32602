"""segpets: binary semantic segmentation experiments with Lightning and Hydra."""

__version__ = "0.1.0"

from omegaconf import OmegaConf

from segpets.checkpointing import resume_dir

# Hydra resolves the run dir before any segpets code runs: register the resolver on import.
OmegaConf.register_new_resolver("segpets.run_dir", resume_dir, use_cache=True, replace=True)
