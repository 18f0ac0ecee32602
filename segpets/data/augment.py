"""The augmentation presets of configs/augment, built outside a Hydra run."""

from importlib.resources import files
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

PRESETS = ("none", "basic", "strong")


def augment_preset(name: str, train_size: int) -> list[Any]:
    """The transforms of configs/augment/<name>.yaml, as a run builds them with
    data.train_size = `train_size`."""
    preset = OmegaConf.create((files("segpets.configs") / "augment" / f"{name}.yaml").read_text())
    node = OmegaConf.create({"data": {"train_size": train_size}, "augment": preset})
    return list(instantiate(node.augment.train))
