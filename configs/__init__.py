"""segpets' Hydra configs, installed as the package `segpets.configs` (see pyproject.toml)."""
