"""`model.pretrained`: start an encoder from ImageNet weights or from a state dict on disk.

`none` (the default) trains from scratch; `imagenet` loads torchvision's ImageNet
weights for the encoder; any other value is the path of a torchvision-style state dict
(`conv1.weight`, `layer1.0.conv1.weight`, ...; a classifier `fc.*` is ignored).

torchvision's weights API reads the file from the torch hub cache,
`torch.hub.get_dir()/checkpoints/<file>` (`$TORCH_HOME/hub/checkpoints`), and
downloads it there only if it is missing; on a machine without network, copy the file
there once. ImageNet weights expect inputs normalised with the ImageNet statistics,
which `data.mean` and `data.std` are by default; `CheckInputNormalization`
(segpets.callbacks) stops a run whose data says otherwise.
"""

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import WeightsEnum

from segpets.constants import IMAGENET_MEAN, IMAGENET_STD
from segpets.errors import ConfigError

NONE, IMAGENET = "none", "imagenet"

Normalization = tuple[tuple[float, ...], tuple[float, ...]]
IMAGENET_NORMALIZATION: Normalization = (IMAGENET_MEAN, IMAGENET_STD)
"""(mean, std) that torchvision's ImageNet weights were trained with."""


def is_none(pretrained: str | Path | None) -> bool:
    """`model.pretrained` asks for no weights: `none` or YAML `null`."""
    return pretrained is None or str(pretrained) == NONE


def hub_cache_path(url: str) -> Path:
    """Where torch.hub keeps (and looks for) the file downloaded from `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def imagenet_state_dict(weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """`weights` from the torch hub cache, downloaded there first if missing and online."""
    path = hub_cache_path(weights.url)
    try:
        return weights.get_state_dict(map_location="cpu", progress=False, check_hash=True)
    except OSError as error:  # URLError and socket errors are OSErrors
        raise ConfigError(
            f"model.pretrained=imagenet: the {weights} weights are not in the torch hub "
            f"cache and downloading them failed ({error}). On a machine with network, "
            f"download {weights.url} and copy the file to {path} (set TORCH_HOME to use "
            "another cache), or pass model.pretrained=PATH to a state dict"
        ) from None
    except Exception as error:  # torch.load raises many types for a damaged file
        raise ConfigError(
            f"model.pretrained=imagenet: the cached file {path} is not a readable state dict "
            f"(an interrupted download?): {str(error).splitlines()[0]}. Delete it and run "
            f"again, or replace it with {weights.url}"
        ) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict file, or a ConfigError saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"model.pretrained={path}: no such file. Use none, imagenet, or the path of a "
            "torchvision-style state dict (torch.save(resnet.state_dict(), PATH))"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for foreign files
        raise ConfigError(
            f"model.pretrained={path}: not a readable PyTorch file: {str(error).splitlines()[0]}"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ConfigError(
            f"model.pretrained={path}: expected a state dict (parameter name -> tensor), "
            f"got a {type(state).__name__} that holds other values"
        )
    return dict(state)


def _few(keys: set[str]) -> str:
    listed = sorted(keys)
    return ", ".join(listed[:3]) + (f" and {len(listed) - 3} more" if len(listed) > 3 else "")


def load_encoder_state(
    encoder: nn.Module, state: Mapping[str, torch.Tensor], source: str, expected: str
) -> None:
    """Load `state` (minus a classifier `fc.*`) into `encoder`, naming every misfit."""
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    own = encoder.state_dict()
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    reshaped = {key for key in set(own) & set(state) if own[key].shape != state[key].shape}
    problems = [
        f"{label} {_few(keys)}"
        for label, keys in [
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch for", reshaped),
        ]
        if keys
    ]
    if problems:
        hint = (
            "; weights for RGB images need model.in_channels=3"
            if "conv1.weight" in reshaped
            else ""
        )
        raise ConfigError(
            f"model.pretrained={source}: its keys do not fit the encoder ({'; '.join(problems)}). "
            f"Expected {expected} (with or without fc.*){hint}"
        )
    encoder.load_state_dict(state)


def load_pretrained(
    encoder: nn.Module, pretrained: str | Path | None, imagenet: WeightsEnum, expected: str
) -> Normalization | None:
    """Apply `model.pretrained` to `encoder`, whose parameter names are torchvision's.

    `imagenet` names the torchvision weights for `model.pretrained=imagenet`;
    `expected` describes the state dict a path should hold, for error messages.
    Returns the (mean, std) the loaded weights expect of the inputs, when known
    (ImageNet weights); the model keeps it as `input_normalization`.
    """
    if is_none(pretrained):
        return None
    if str(pretrained) == IMAGENET:
        load_encoder_state(encoder, imagenet_state_dict(imagenet), IMAGENET, str(imagenet))
        return IMAGENET_NORMALIZATION
    load_encoder_state(encoder, read_state_dict(pretrained), str(pretrained), expected)
    return None


def resnet_stem(in_channels: int) -> nn.Conv2d:
    """A ResNet's first convolution (7x7, stride 2, 64 channels) for `in_channels`
    inputs, initialised as torchvision initialises it; ImageNet weights fit only 3."""
    conv = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def check_freeze_epochs(epochs: int) -> int:
    """`model.freeze_encoder_epochs` as a count of epochs, or a ConfigError."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(
            f"model.freeze_encoder_epochs must be a whole number of epochs >= 0 (0: never "
            f"frozen), got {epochs!r}"
        )
    return epochs
