"""Binary masks as they come: the rules that turn a mask file's pixels into 0 / 1 / 255.

Pure functions on arrays, so each rule is tested on arrays and files written for it:

- values {0, 1} or {0, 255} (or {0, 65535} in 16 bits): background / foreground as stored;
- a greyscale mask whose values crowd near 0 and near 255 with a few in between (what JPEG
  does to a 0/255 mask): thresholded at the midpoint, 128; the caller warns once;
- RGB(A) masks whose three channels agree: read as greyscale (alpha dropped);
- palette (indexed) masks: their indices, under the same rules;
- anything else (labels 0/1/2, colours): foreground from `foreground_values`, a list of
  values or "nonzero"; without it a `MaskValueError` lists the values and their shares;
- `ignore_value` (e.g. 255, VOC-style borders) becomes IGNORE_INDEX, which losses and metrics
  leave out, before any other rule looks at the values.

The encoding names returned (`ZERO_ONE`, ...) are what the setup line and warnings report.
"""

from collections.abc import Sequence

import cv2
import numpy as np

from segpets.constants import IGNORE_INDEX
from segpets.errors import ConfigError, DataError

ZERO_ONE, ZERO_255, ZERO_MAX = "0/1", "0/255", "0/65535"
THRESHOLDED = "greyscale thresholded at 128"
CHOSEN = "foreground_values"
NONZERO = "nonzero"
MIDPOINT = 128
NEAR = 64
"""A JPEG-like mask has its values within this of 0 or 255 ..."""
MIDDLE_SHARE = 0.05
"""... except at most this share of its pixels."""
ASPECT_TOLERANCE = 1.0
"""Pixels a resized mask side may be off from its image's and still count as the same shape."""


class MaskValueError(DataError):
    """A mask whose values no rule maps; `values` holds {value: pixel share}."""

    def __init__(self, message: str, values: dict[int, float]) -> None:
        super().__init__(message)
        self.values = values


def check_foreground_values(foreground_values: object) -> list[int] | str | None:
    """`data.foreground_values` as a list of ints, "nonzero" or None; a ConfigError otherwise."""
    if foreground_values is None or foreground_values == NONZERO:
        return foreground_values  # type: ignore[return-value]
    try:
        values = [int(v) for v in foreground_values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = []
    if not values or isinstance(foreground_values, str):
        raise ConfigError(
            "data.foreground_values must be a list of mask values that mean foreground "
            f"(e.g. [1, 2]), nonzero, or null (0/1, 0/255 and JPEG masks), got {foreground_values!r}"
        )
    return values


def single_channel(mask: np.ndarray) -> np.ndarray:
    """(H, W) values of a mask array: alpha dropped, RGB kept only if its channels agree."""
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if mask.ndim == 2:
        return mask
    if mask.ndim == 3 and mask.shape[2] in (2, 4):  # LA, RGBA: drop alpha
        mask = mask[..., :-1]
    if mask.ndim == 3 and mask.shape[2] == 1:
        return mask[..., 0]
    if mask.ndim == 3 and mask.shape[2] == 3:
        if np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(
            mask[..., 0], mask[..., 2]
        ):
            return mask[..., 0]
        raise DataError(
            "RGB mask whose channels differ (a colour mask): save it as greyscale or as a "
            "palette PNG and set data.foreground_values to the foreground indices"
        )
    raise DataError(f"mask of shape {mask.shape}: expected (H, W) or (H, W, 3)")


def value_shares(mask: np.ndarray) -> dict[int, float]:
    """{value: share of pixels} of a mask, values ascending."""
    values, counts = np.unique(mask, return_counts=True)
    total = max(int(counts.sum()), 1)
    return {int(v): float(c) / total for v, c in zip(values, counts, strict=True)}


def describe_values(shares: dict[int, float], limit: int = 8) -> str:
    """ "0 (61.2 %), 1 (30.1 %), 2 (8.7 %)", the largest `limit` shares."""
    ranked = sorted(shares.items(), key=lambda item: -item[1])[:limit]
    more = f" and {len(shares) - limit} more" if len(shares) > limit else ""
    return ", ".join(f"{v} ({100 * s:.1f} %)" for v, s in sorted(ranked)) + more


def looks_like_jpeg(mask: np.ndarray) -> bool:
    """Values near 0 and near 255, with few pixels between, and more than three of them: a
    0/255 mask after lossy saving."""
    if mask.dtype != np.uint8 or mask.size == 0:
        return False
    low, high = int(mask.min()), int(mask.max())
    if low >= NEAR or high < 255 - NEAR:
        return False
    if len(np.unique(mask)) <= 3:  # 0 / 1 / 255 (VOC borders) is labels, not artefacts
        return False
    middle = np.count_nonzero((mask >= NEAR) & (mask <= 255 - NEAR))
    return middle <= MIDDLE_SHARE * mask.size


def encoding_of(values: set[int], mask: np.ndarray) -> str | None:
    """The rule that reads a mask of `values` without foreground_values; None if none does."""
    if values <= {0, 1}:
        return ZERO_ONE
    if values <= {0, 255}:
        return ZERO_255
    if values <= {0, 65535}:
        return ZERO_MAX
    if looks_like_jpeg(mask):
        return THRESHOLDED
    return None


def decode_mask(
    mask: np.ndarray,
    foreground_values: Sequence[int] | str | None = None,
    ignore_value: int | None = None,
) -> tuple[np.ndarray, str]:
    """(H, W) uint8 mask (0 background, 1 foreground, IGNORE_INDEX left out) and the rule used.

    `mask` is the file's pixel array (palette masks: their indices). Raises DataError for
    colour masks and MaskValueError for values no rule maps.
    """
    mask = single_channel(np.asarray(mask))
    ignored = mask == ignore_value if ignore_value is not None else None
    kept = mask[~ignored] if ignored is not None else mask
    if foreground_values is not None:
        foreground = mask != 0 if foreground_values == NONZERO else np.isin(mask, foreground_values)
        encoding = f"{CHOSEN}={foreground_values}"
    else:
        values = set(np.unique(kept).tolist())
        encoding = encoding_of(values, kept)
        if encoding is None:
            shares = value_shares(mask)
            raise MaskValueError(
                f"mask values {describe_values(shares)} are not 0/1, 0/255 or a JPEG-saved "
                "0/255 mask: set data.foreground_values to the values that mean foreground "
                "(a list, or nonzero)"
                + (
                    ""
                    if ignore_value is not None
                    else ", and data.ignore_value to one that means 'leave out'"
                ),
                shares,
            )
        foreground = mask >= MIDPOINT if encoding == THRESHOLDED else mask > 0
    out = foreground.astype(np.uint8)
    if ignored is not None:
        out[ignored] = IGNORE_INDEX
    return out, encoding


def same_aspect(mask_size: tuple[int, int], image_size: tuple[int, int]) -> bool:
    """Whether a (width, height) mask scales to its image's (width, height) within a pixel."""
    (mw, mh), (iw, ih) = mask_size, image_size
    return abs(mw * ih / mh - iw) <= ASPECT_TOLERANCE * max(1.0, iw / mw) and abs(
        mh * iw / mw - ih
    ) <= ASPECT_TOLERANCE * max(1.0, ih / mh)


def fit_to_image(mask: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """`mask` resized nearest-neighbour to the image's (width, height) (a copy-free no-op when
    it already fits); the caller has checked `same_aspect`."""
    width, height = image_size
    if mask.shape[:2] == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
