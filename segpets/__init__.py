"""segpets: binary semantic segmentation experiments with Lightning and Hydra."""

__version__ = "0.1.0"
