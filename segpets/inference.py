"""Running a trained model: the device, autocast as the run trained, test-time augmentation
and post-processing.

Reading checkpoints is `segpets.checkpointing`; setting a trained model up for eval,
predict or export (checkpoint, device, precision, threshold) is `segpets.trained`.
"""

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segpets.errors import ConfigError


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


PostProcess = Callable[[torch.Tensor], torch.Tensor]
"""Boolean masks (..., H, W) to post-processed masks of the same shape (segpets.postprocess)."""


def postprocess_name(postprocess: PostProcess | None) -> str | None:
    """How metrics.json, eval and predict name a post-processing: its repr, or None."""
    return None if postprocess is None else repr(postprocess)


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


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _scaled(scale: float, flip: bool) -> Flip:
    """The photo resized by `scale` (bilinear; the networks pad sides to their stride) and
    mirrored if `flip`. The inverse undoes the mirror; `predict_probabilities` resizes each
    view's probabilities back to the photo's size."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = _resize(x, (round(height * scale), round(width * scale)))
        return x.flip(-1) if flip else x

    return forward, (_hflip if flip else _identity)


TTA_SCALES = (0.75, 1.0, 1.25)
"""The sizes of `tta=hflip_scales`, as shares of the photo's: the pets a network trained on
random crops has seen are of many sizes."""

TTA: dict[str, list[Flip]] = {
    "none": [(_identity, _identity)],
    "hflip": [(_identity, _identity), (_hflip, _hflip)],
    "d4": [_dihedral(k, flip) for flip in (False, True) for k in range(4)],
    "hflip_scales": [_scaled(scale, flip) for scale in TTA_SCALES for flip in (False, True)],
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
    model: nn.Module,
    images: torch.Tensor,
    tta: str = "none",
    postprocess: PostProcess | None = None,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Pet probabilities (B, 1, H, W): the sigmoid of the logits, averaged over the TTA views,
    then, with `postprocess`, made to threshold (at `threshold`) to its mask."""
    check_tta(tta)
    views = TTA[tta]
    total = torch.zeros((), device=images.device)
    size = tuple(images.shape[-2:])
    for forward, inverse in views:
        total = total + _resize(inverse(model(forward(images)).float().sigmoid()), size)
    probs = total / len(views)
    return probs if postprocess is None else postprocessed(probs, threshold, postprocess)


def postprocessed(probs: torch.Tensor, threshold: float, postprocess: PostProcess) -> torch.Tensor:
    """`probs` where `postprocess` keeps the mask `probs >= threshold`; 0 where it removes pet,
    1 where it adds pet. Thresholding the result gives the post-processed mask, and a
    resize before the threshold (predict's, at each photo's size) moves only its edges."""
    mask = probs >= threshold
    kept = postprocess(mask)
    return torch.where(kept == mask, probs, kept.to(probs.dtype))


def probabilities_at_size(probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Probabilities (height, width), float32, from probabilities (..., h, w) at the model's
    size, resized bilinearly: what `mask_at_size` thresholds."""
    probs = probs.float().reshape(1, 1, *probs.shape[-2:])
    resized = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
    return resized[0, 0]


def mask_at_size(probs: torch.Tensor, height: int, width: int, threshold: float) -> np.ndarray:
    """Mask (height, width) uint8 in {0, 255} from probabilities (..., h, w) at the model's size.

    Probabilities are resized, bilinearly, before thresholding: the edge then falls where
    the interpolated probability crosses the threshold, not on the model's pixel grid.
    """
    resized = probabilities_at_size(probs, height, width)
    return ((resized >= threshold).to(torch.uint8) * 255).cpu().numpy()
