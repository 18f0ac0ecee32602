"""Albumentations pipelines: the augment config's transforms, then normalise and to-tensor.

Albumentations moves image and mask together; masks use nearest interpolation and a fill
of 0 (background), and colour transforms touch the image only, so a mask keeps the values
{0, 1, 255} through any pipeline built here.
"""

from collections.abc import Sequence

import albumentations as A
import numpy as np
from albumentations.pytorch import ToTensorV2

from segpets.constants import IMAGENET_MEAN, IMAGENET_STD
from segpets.errors import ConfigError


def build_transform(
    augment: Sequence[A.BasicTransform | A.BaseCompose],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """`augment`, then `A.Normalize(mean, std)` and `ToTensorV2` (image float32 CHW)."""
    for transform in augment:
        if not isinstance(transform, A.BasicTransform | A.BaseCompose):
            raise ConfigError(
                f"augment.train must list Albumentations transforms, got {transform!r}; "
                "give each entry a _target_ (e.g. albumentations.HorizontalFlip) so Hydra "
                "instantiates it"
            )
    return A.Compose([*augment, A.Normalize(mean=mean, std=std), ToTensorV2()])


def eval_transform(
    image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> A.Compose:
    """Validation and test: resize to a square and normalise, nothing random."""
    return build_transform([A.Resize(image_size, image_size)], mean, std)


def train_transform(
    augment: Sequence[A.BasicTransform | A.BaseCompose] | None,
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """The training pipeline; without `augment` it is the eval one (augment=none).

    One non-square probe image goes through it, so that a pipeline that does not end at
    image_size x image_size fails here, with the option to fix, and not in the collate.
    """
    if augment is None:
        return eval_transform(image_size, mean, std)
    transform = build_transform(list(augment), mean, std)
    probe = np.zeros((image_size + 16, 2 * image_size + 8, 3), np.uint8)
    height, width = transform(image=probe, mask=probe[..., 0])["image"].shape[-2:]
    if (height, width) != (image_size, image_size):
        raise ConfigError(
            f"augment.train turns a {probe.shape[0]}x{probe.shape[1]} image into "
            f"{height}x{width}, but batches need data.image_size x data.image_size "
            f"({image_size}x{image_size}): end the list with a transform that outputs that "
            "size, e.g. albumentations.Resize or RandomResizedCrop with size "
            "[${data.image_size}, ${data.image_size}]"
        )
    return transform
