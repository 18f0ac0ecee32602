"""segpets: binary semantic segmentation experiments with Lightning and Hydra.

From Python (docs/python.md):

    import segpets
    segmenter = segpets.load("RUN/checkpoints/best.ckpt")  # or a model folder
    mask = segmenter.predict("photo.jpg")                  # uint8 0/255, the photo's size
    metrics = segpets.train(overrides=["experiment=quickstart"])

The names are attributes loaded on first use, so `import segpets` stays light.
"""

import importlib
from typing import Any

from omegaconf import OmegaConf

__version__ = "0.1.0"
__all__ = ["Segmenter", "SegpetsError", "__version__", "load", "train"]

# Public name -> (module, attribute); `train` is the module segpets.train itself, callable.
_LAZY = {
    "load": ("segpets.segmenter", "load"),
    "Segmenter": ("segpets.segmenter", "Segmenter"),
    "SegpetsError": ("segpets.errors", "SegpetsError"),
    "train": ("segpets.train", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'segpets' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    # Importing segpets.train binds it here itself; the others are bound once looked up.
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _run_dir(ckpt_path: str | None, runs_dir: str, new_dir: str) -> str:
    from segpets.checkpointing import resume_dir

    return resume_dir(ckpt_path, runs_dir, new_dir)


def _scale(size: int, factor: float) -> int:
    return max(1, round(size * factor))


# Hydra resolves configs before any task code runs: register the resolvers on import.
OmegaConf.register_new_resolver("segpets.run_dir", _run_dir, use_cache=True, replace=True)
# ${segpets.scale:${data.image_size},0.75}: a size that follows another, rounded to pixels.
OmegaConf.register_new_resolver("segpets.scale", _scale, replace=True)
