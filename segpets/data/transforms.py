"""Albumentations pipelines: the augment config's transforms, then normalise and to-tensor.

Albumentations moves image and mask together; masks use nearest interpolation and a fill
of 0 (background), and colour transforms touch the image only, so a mask keeps the values
{0, 1, 255} through any pipeline built here.
"""

import statistics
from collections.abc import Sequence
from functools import cache
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from segpets.constants import IMAGENET_MEAN, IMAGENET_STD
from segpets.errors import ConfigError

COARSE_SIGMA = 1.25
"""FastElasticTransform's field is drawn on a grid where the smoothing sigma spans this
many cells: fine enough for the smoothed field to be resolved, coarse enough to be cheap."""


@cache
def median_max_abs_normal(count: int) -> float:
    """The median of max |z| over `count` standard normal draws: P(max <= m) = 0.5 gives
    (2 Phi(m) - 1) ** count = 0.5."""
    return statistics.NormalDist().inv_cdf((1 + 0.5 ** (1 / count)) / 2)


class FastElasticTransform(A.ElasticTransform):
    """Albumentations' ElasticTransform with its displacement field drawn on a coarse grid.

    Albumentations draws one normal variate per pixel and direction, divides the noise by
    its largest magnitude, smooths it with a `sigma`-pixel Gaussian and scales it by
    `alpha`. A field smoothed that much has no detail finer than `sigma`, so this draws it
    on a grid `sigma / 1.25` pixels apart, smooths it with a 1.25-cell Gaussian,
    interpolates it up (bicubic) and divides it by the median of that largest magnitude.
    Away from the borders the displacements match albumentations' in size and smoothness
    (tests/data/test_augment.py); near them albumentations' smoothing repeats the edge pixel,
    which inflates its field there when `sigma` is a large part of the image. Warping the
    image and mask is albumentations' own code, so options and targets are the same;
    `approximate` has no effect. docs/performance.md times both.
    """

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        step = max(1, int(self.sigma / COARSE_SIGMA))
        fields = 1 if self.same_dxdy else 2
        coarse = (fields, -(-height // step), -(-width // step))
        if self.noise_distribution == "gaussian":
            noise = self.random_generator.standard_normal(coarse, dtype=np.float32)
            scale = self.alpha / (step * median_max_abs_normal(fields * height * width))
        else:  # uniform noise in [-1, 1], which albumentations does not rescale
            noise = self.random_generator.uniform(-1, 1, coarse).astype(np.float32)
            scale = self.alpha / step
        maps = []
        for field in noise:
            cv2.GaussianBlur(
                field, (0, 0), self.sigma / step, dst=field, borderType=cv2.BORDER_REPLICATE
            )
            maps.append(cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC))
        map_x, map_y = maps * 2 if self.same_dxdy else maps
        return {
            "map_x": map_x * scale + np.arange(width, dtype=np.float32),
            "map_y": map_y * scale + np.arange(height, dtype=np.float32)[:, None],
        }


def build_transform(
    augment: Sequence[A.BasicTransform | A.BaseCompose],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    option: str = "augment.train",
) -> A.Compose:
    """`augment`, then `A.Normalize(mean, std)` and `ToTensorV2` (image float32 CHW)."""
    for transform in augment:
        if not isinstance(transform, A.BasicTransform | A.BaseCompose):
            raise ConfigError(
                f"{option} must list Albumentations transforms, got {transform!r}; "
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
    train_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    option: str = "augment.train",
    size_option: str = "data.train_size",
) -> A.Compose:
    """The training pipeline, ending at `train_size` squares; without `augment` it
    resizes, as eval does.

    One non-square probe image goes through it, so that a pipeline that does not end at
    train_size x train_size fails here, naming the config `option` that lists it and the
    `size_option` it must end at, and not in the collate.
    """
    if augment is None:
        return eval_transform(train_size, mean, std)
    transform = build_transform(list(augment), mean, std, option)
    probe = np.zeros((train_size + 16, 2 * train_size + 8, 3), np.uint8)
    height, width = transform(image=probe, mask=probe[..., 0])["image"].shape[-2:]
    if (height, width) != (train_size, train_size):
        raise ConfigError(
            f"{option} turns a {probe.shape[0]}x{probe.shape[1]} image into "
            f"{height}x{width}, but batches need {size_option} x {size_option} "
            f"({train_size}x{train_size}): end the list with a transform that outputs that "
            "size, e.g. albumentations.Resize or RandomResizedCrop with size "
            f"[${{{size_option}}}, ${{{size_option}}}]"
        )
    return transform
