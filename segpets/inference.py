"""Using a trained model: load it from a checkpoint alone, and predict with test-time augmentation.

A segpets checkpoint carries the resolved config of the run that wrote it
(`segpets_config`), so eval, predict and export need nothing but its path; options
given on their command line replace the checkpoint's own.
"""

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from segpets.errors import ConfigError, SegpetsError

CONFIG_KEY = "segpets_config"

# Top-level keys of the train config that a checkpoint's user may replace when reusing it.
REPLACEABLE = ("data", "augment", "model", "module", "trainer")


def read_checkpoint(path: str | Path, option: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents, or a SegpetsError saying what is wrong with the file.

    `option` is the command-line option that named the file, for the messages.
    """
    path = Path(path)
    if not path.is_file():
        raise SegpetsError(
            f"{option}={path}: no such file. Pass the best.ckpt or last.ckpt of a run, "
            f"e.g. {option}=logs/train/runs/<date>/<time>/checkpoints/best.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails in many ways on a file that is not its own
        raise SegpetsError(
            f"{option}={path}: not a readable PyTorch checkpoint (truncated or another kind "
            f"of file): {str(error).splitlines()[0]}"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise SegpetsError(f"{option}={path}: a PyTorch file, but not a Lightning checkpoint")
    if CONFIG_KEY not in checkpoint:
        raise SegpetsError(
            f"{option}={path}: a Lightning checkpoint without a segpets config; only "
            "checkpoints written by `python -m segpets.train` can be used here"
        )
    return checkpoint


def replace_options(
    config: DictConfig, composed: DictConfig, overrides: Sequence[str]
) -> DictConfig:
    """`config` with the options named in `overrides` taken from `composed`.

    `composed` is the command's own Hydra config, where Hydra has already parsed and
    checked the overrides; only their keys are read here, e.g. `data.root=DIR` or
    `data=synthetic`, which replaces the whole `data` node.
    """
    config = config.copy()
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0] in REPLACEABLE:
            OmegaConf.update(
                config, key, OmegaConf.select(composed, key), merge=False, force_add=True
            )
    return config


def load_model(
    checkpoint: dict[str, Any], config: DictConfig, path: str | Path, option: str = "ckpt_path"
) -> nn.Module:
    """The network described by `config.model`, with the checkpoint's weights, in eval mode.

    `model.pretrained` is not applied: the checkpoint's weights replace it, and the
    ImageNet file or state dict it named need not exist where the checkpoint is used.
    A model that brings its own weights (`model=ensemble` over a member's checkpoint)
    is used as built.
    """
    no_pretrained = {"pretrained": "none"} if "pretrained" in config.model else {}
    model = instantiate(config.model, **no_pretrained)
    stored = OmegaConf.select(OmegaConf.create(checkpoint[CONFIG_KEY]), "model._target_")
    if getattr(model, "weights_from_checkpoints", False) and stored != config.model._target_:
        return model.eval()
    state = {
        key.removeprefix("model."): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("model.")
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise SegpetsError(
            f"{option}={path}: its weights do not fit {config.model._target_} as configured "
            f"(a checkpoint of another model, or model.* overrides that change its shape): "
            f"{str(error).splitlines()[0]}"
        ) from None
    return model.eval()


def model_from_checkpoint(
    path: str | Path, option: str = "ckpt_path"
) -> tuple[nn.Module, DictConfig]:
    """Model (in eval mode) and run config from a checkpoint alone, without a composed config."""
    checkpoint = read_checkpoint(path, option)
    config = OmegaConf.create(checkpoint[CONFIG_KEY])
    return load_model(checkpoint, config, path, option), config


def ensemble_checkpoints(composed: DictConfig | None) -> list[str]:
    """The `model.checkpoints` of a composed `model=ensemble` config, else []."""
    if composed is None:
        return []
    return [str(path) for path in OmegaConf.select(composed, "model.checkpoints") or ()]


def load_trained(
    path: str | Path | None, composed: DictConfig | None = None, overrides: Sequence[str] = ()
) -> tuple[nn.Module, DictConfig]:
    """Model and run config from a checkpoint, with command-line `overrides` applied.

    `path=None` with `model=ensemble model.checkpoints=[a.ckpt,...]` among the overrides
    takes the run config (data, module, trainer) from the first member.
    """
    option = "ckpt_path"
    if path is None:
        members = ensemble_checkpoints(composed)
        if not members:
            raise SegpetsError(
                "ckpt_path is missing: pass the checkpoint to use, e.g. ckpt_path=logs/train/"
                "runs/<date>/<time>/checkpoints/best.ckpt, or several to average with "
                "model=ensemble model.checkpoints=[a.ckpt,b.ckpt]"
            )
        path, option = members[0], "model.checkpoints"
    checkpoint = read_checkpoint(path, option)
    config = OmegaConf.create(checkpoint[CONFIG_KEY])
    if composed is not None:
        config = replace_options(config, composed, overrides)
    return load_model(checkpoint, config, path, option), config


def pick_device(name: str) -> torch.device:
    """`auto` is the GPU when there is one, else the CPU; a device not on this machine is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        raise ConfigError(f"device={name}: not available on this machine; use device=auto or cpu")
    return device


def autocast_dtype(precision: Any, device: torch.device) -> torch.dtype | None:
    """The dtype Lightning autocasts to for a `trainer.precision`; None where it does not."""
    name = str(precision)
    if name in {"bf16", "bf16-mixed"}:
        return torch.bfloat16
    if name in {"16", "16-mixed"}:  # Lightning runs 16-mixed as bf16-mixed on a CPU
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    return None


def autocast(precision: Any, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast as the run trained, so eval and predict compute what training's test did."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# Test-time augmentation: pairs of (transform, inverse) on (B, C, H, W) tensors.
Flip = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _dihedral(k: int, flip: bool) -> Flip:
    def forward(x: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(x, k, dims=(-2, -1))
        return x.flip(-1) if flip else x

    def inverse(y: torch.Tensor) -> torch.Tensor:
        y = y.flip(-1) if flip else y
        return torch.rot90(y, -k, dims=(-2, -1))

    return forward, inverse


TTA: dict[str, list[Flip]] = {
    "none": [(_identity, _identity)],
    "hflip": [(_identity, _identity), (_hflip, _hflip)],
    "d4": [_dihedral(k, flip) for flip in (False, True) for k in range(4)],
}


def check_tta(tta: str) -> None:
    if tta not in TTA:
        raise ConfigError(f"tta must be one of {sorted(TTA)}, got {tta!r}")


def check_threshold(threshold: Any) -> None:
    """`threshold=` of eval and predict: a probability in (0, 1), or null for the checkpoint's."""
    if threshold is not None and not (
        isinstance(threshold, int | float) and not isinstance(threshold, bool) and 0 < threshold < 1
    ):
        raise ConfigError(
            f"threshold must be in (0, 1), or null for the checkpoint's, got {threshold!r}"
        )


@torch.no_grad()
def predict_probabilities(
    model: nn.Module, images: torch.Tensor, tta: str = "none"
) -> torch.Tensor:
    """Pet probabilities (B, 1, H, W): the sigmoid of the logits, averaged over the TTA views."""
    check_tta(tta)
    views = TTA[tta]
    total = torch.zeros((), device=images.device)
    for forward, inverse in views:
        total = total + inverse(model(forward(images)).float().sigmoid())
    return total / len(views)
