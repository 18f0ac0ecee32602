"""Error analysis of a split: who fails (species, breed), where (outline or body), how sure.

What eval adds to its scores, and what training can call for its test split:

- `read_species(root)` and `breed_of(name)`: each image's species (from the official list
  files' third column, 1 = cat, 2 = dog) and breed (the name without its `_<number>`);
  `scores_by_group` averages per-image Dice over them.
- `border_bands` and `boundary_scores`: Dice in the band around the pet's outline (the
  trimap's border pixels, 3, widened by `BAND_RADIUS` pixels) and in the rest of the image,
  so that "fails at the outline" is told apart from "misses the pet".
- `CalibrationHistogram`: pixel-level expected calibration error of the pet probability.
- `ThresholdSweep`: mean per-image Dice at each threshold of a grid, and the best one.
- `worst_sheet` and `write_worst_sheet`: a contact sheet of the lowest-Dice images with
  true-positive, false-positive and false-negative pixels coloured.

The accumulators hold sums only (histograms, per-threshold Dice totals), never all pixels.
"""

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from segpets.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from segpets.data.oxford_pet import load_trimap, parse_list_rows
from segpets.errors import ConfigError, DataError
from segpets.metrics import per_image_scores_from_probabilities
from segpets.visual import SheetLayout, denormalize, error_sheet

SPECIES = {"1": "cat", "2": "dog"}
"""The official list files' species column."""
UNKNOWN = "unknown"
"""Species of an image whose list line has no species we know."""
LIST_FILES = ("annotations/trainval.txt", "annotations/test.txt")
BORDER = 3
"""Trimap value of the unclassified border around the pet."""
BAND_RADIUS = 2
"""The border band is the trimap's border widened by this many pixels, at the scored size."""
CALIBRATION_BINS = 15
THRESHOLD_GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))
"""0.05, 0.10, ..., 0.95: the thresholds `ThresholdSweep` tries."""


# Species and breed ------------------------------------------------------------------


def breed_of(name: str) -> str:
    """The breed in an image name: "Abyssinian_201" -> "Abyssinian",
    "american_bulldog_10" -> "american_bulldog"; a name without `_<number>` is its own breed."""
    return re.sub(r"_\d+$", "", name)


def read_species(root: str | Path) -> dict[str, str]:
    """{image name: "cat" | "dog" | "unknown"} from root's trainval.txt and test.txt.

    Reads the third column of the "<name> <class-id> <species> <breed-id>" lines as the
    dataset reader does; a species other than 1 or 2 gives "unknown", and a list file
    that is missing gives nothing.
    """
    species: dict[str, str] = {}
    for relative in LIST_FILES:
        path = Path(root) / relative
        if path.is_file():
            for name, _, kind, _ in parse_list_rows(path):
                species[name] = SPECIES.get(kind, UNKNOWN)
    return species


def scores_by_group(
    rows: Iterable[Mapping[str, Any]], key: str, score: str = "dice"
) -> dict[str, dict[str, float | int]]:
    """{group: {"images": n, score: mean}} over `rows` grouped by `row[key]`, groups sorted."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        groups.setdefault(str(row[key]), []).append(float(row[score]))
    return {
        group: {"images": len(values), score: sum(values) / len(values)}
        for group, values in sorted(groups.items())
    }


# Outline and interior ---------------------------------------------------------------


def trimap_at_size(root: str | Path, name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """The trimap of `name` (H, W) uint8, resized to `size` = (height, width) by nearest
    neighbour, the interpolation the data pipeline uses for masks; None keeps its own size."""
    path = Path(root) / "annotations" / "trimaps" / f"{name}.png"
    try:
        trimap = load_trimap(path)
    except OSError as error:
        raise DataError(f"trimap of {name} unreadable: {path} ({error})") from None
    if size is not None and trimap.shape[:2] != tuple(size):
        trimap = cv2.resize(trimap, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return trimap


def border_band(trimap: torch.Tensor, radius: int = BAND_RADIUS) -> torch.Tensor:
    """Bool (..., H, W): the trimap's border pixels (3), widened by `radius` pixels
    (a square of side 2 radius + 1 around each)."""
    border = (trimap == BORDER).float().reshape(-1, 1, *trimap.shape[-2:])
    if radius > 0:
        border = F.max_pool2d(border, 2 * radius + 1, stride=1, padding=radius)
    return border.reshape(trimap.shape) > 0


def border_bands(
    root: str | Path,
    names: Sequence[str],
    size: tuple[int, int] | None = None,
    radius: int = BAND_RADIUS,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bool (B, 1, H, W): `border_band` of each name's trimap at `size` (see trimap_at_size).

    A root without trimaps (data=folder) has no border class: with `masks` (B, 1, H, W) at
    the scored size, the band is then `outline_band` of the masks.
    """
    if masks is not None and not (Path(root) / "annotations" / "trimaps").is_dir():
        return outline_band(masks, radius).cpu()
    trimaps = np.stack([trimap_at_size(root, name, size) for name in names])
    return border_band(torch.from_numpy(trimaps)[:, None], radius)


def outline_band(masks: torch.Tensor, radius: int = BAND_RADIUS) -> torch.Tensor:
    """Bool, shaped as `masks` (..., H, W of 0 / 1 / IGNORE_INDEX): the pixels next to a
    change of value (the outline, and any ignored border), widened by `radius` pixels, the
    band `border_band` draws around a trimap's border."""
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    size = 2 * radius + 3  # the 3 x 3 neighbourhood that finds the outline, then the widening
    high = F.max_pool2d(flat, size, stride=1, padding=size // 2)
    low = -F.max_pool2d(-flat, size, stride=1, padding=size // 2)
    return (high != low).reshape(masks.shape)


def boundary_scores(
    probs: torch.Tensor,
    target: torch.Tensor,
    band: torch.Tensor,
    threshold: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, torch.Tensor]:
    """Per-image `boundary_dice` (pixels in `band`) and `interior_dice` (pixels outside it),
    each (B,), with the lab's Dice (segpets.metrics): a region with neither truth nor
    prediction scores 1.

    The band's truth is the mask's, so it follows data.boundary: with `foreground` the
    border pixels count as pet; with `ignore` they are left out and `boundary_dice` scores
    only the widened ring next to the border.
    """
    band = band.to(target.device)
    ignored = torch.full_like(target, ignore_index)
    inside = torch.where(band, target, ignored)
    outside = torch.where(band, ignored, target)
    return {
        "boundary_dice": per_image_scores_from_probabilities(
            probs, inside, threshold, ignore_index
        )["dice"],
        "interior_dice": per_image_scores_from_probabilities(
            probs, outside, threshold, ignore_index
        )["dice"],
    }


# Calibration and threshold ----------------------------------------------------------


class CalibrationHistogram:
    """Expected calibration error of pixel probabilities, accumulated batch by batch.

    The pet probabilities of the valid pixels (target != ignore_index) fall into `bins`
    equal-width bins over [0, 1] (1 goes in the last); ECE is the pixel-weighted mean over
    bins of |fraction of pet pixels - mean probability|. 0 means probabilities that say
    what they mean, e.g. exactly 0 and 1 on right answers.
    """

    def __init__(self, bins: int = CALIBRATION_BINS, ignore_index: int = IGNORE_INDEX) -> None:
        self.bins = bins
        self.ignore_index = ignore_index
        self.pixels = torch.zeros(bins, dtype=torch.float64)
        self.probability_sum = torch.zeros(bins, dtype=torch.float64)
        self.pet = torch.zeros(bins, dtype=torch.float64)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        valid = target != self.ignore_index
        p = probs[valid].double()
        index = (p * self.bins).long().clamp(0, self.bins - 1)
        count = torch.bincount(index, minlength=self.bins).double()
        self.pixels += count.cpu()
        self.probability_sum += torch.bincount(index, p, minlength=self.bins).cpu()
        pet = (target[valid] == 1).double()
        self.pet += torch.bincount(index, pet, minlength=self.bins).cpu()

    def compute(self) -> float:
        """The ECE; 0 before any pixel."""
        total = self.pixels.sum()
        if total == 0:
            return 0.0
        filled = self.pixels > 0
        gap = (self.pet[filled] - self.probability_sum[filled]).abs()  # = n |acc - conf|
        return float(gap.sum() / total)


def expected_calibration_error(
    probs: torch.Tensor,
    target: torch.Tensor,
    bins: int = CALIBRATION_BINS,
    ignore_index: int = IGNORE_INDEX,
) -> float:
    """`CalibrationHistogram` of one set of probabilities and targets."""
    histogram = CalibrationHistogram(bins, ignore_index)
    histogram.update(probs, target)
    return histogram.compute()


class ThresholdSweep:
    """Mean per-image Dice at each threshold of `grid`, accumulated batch by batch.

    A pixel is pet at threshold t when its probability >= t, as segpets.metrics decides,
    so the Dice at a grid threshold equals eval's `dice` at that `threshold=`.
    """

    def __init__(
        self, grid: Sequence[float] = THRESHOLD_GRID, ignore_index: int = IGNORE_INDEX
    ) -> None:
        if not grid or sorted(grid) != list(grid):
            raise ConfigError(f"threshold grid must be increasing and non-empty, got {grid}")
        self.grid = tuple(float(t) for t in grid)
        self.ignore_index = ignore_index
        self.dice_sum = torch.zeros(len(grid), dtype=torch.float64)
        self.images = 0

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Add the images of `probs` and `target` (B, ...), the same shape."""
        batch = target.shape[0]
        probs, target = probs.reshape(batch, -1), target.reshape(batch, -1)
        valid = target != self.ignore_index
        truth = ((target == 1) & valid).long()
        grid = torch.tensor(self.grid, dtype=probs.dtype, device=probs.device)
        # Level k: the pixel reaches the first k thresholds (probability >= grid[k - 1]).
        level = torch.bucketize(probs.contiguous(), grid, right=True)
        levels = len(self.grid) + 1
        pet = torch.zeros(batch, levels, dtype=torch.long, device=probs.device)
        other = torch.zeros_like(pet)
        pet.scatter_add_(1, level, truth)
        other.scatter_add_(1, level, (valid.long() - truth))
        # Pixels at level > k are predicted pet at grid[k]: reverse cumulative sums.
        tp = pet.flip(1).cumsum(1).flip(1)[:, 1:]
        fp = other.flip(1).cumsum(1).flip(1)[:, 1:]
        fn = truth.sum(1, keepdim=True) - tp
        denominator = (2 * tp + fp + fn).double()
        dice = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), 1.0)
        self.dice_sum += dice.sum(0).cpu()
        self.images += batch

    def dice(self) -> dict[float, float]:
        """{threshold: mean per-image Dice}."""
        mean = self.dice_sum / max(self.images, 1)
        return dict(zip(self.grid, mean.tolist(), strict=True))

    def best(self, prefer: float = 0.5) -> tuple[float, float]:
        """(threshold, Dice) with the highest Dice; among equal ones, the nearest `prefer`."""
        dice = self.dice()
        top = max(dice.values())
        ties = [t for t, value in dice.items() if value >= top - 1e-12]
        threshold = min(ties, key=lambda t: abs(t - prefer))
        return threshold, dice[threshold]


# The worst images -------------------------------------------------------------------


def check_worst(worst: Any, option: str = "worst") -> None:
    """`worst=` (panels in the worst-images sheet): a whole number >= 0."""
    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
        raise ConfigError(
            f"{option} must be a whole number >= 0 (how many of the lowest-Dice images "
            f"worst.png shows; 0 for no sheet), got {worst!r}"
        )


def worst_sheet(
    images: torch.Tensor,
    masks: torch.Tensor,
    probs: torch.Tensor,
    names: Sequence[str],
    dice: Sequence[float] | torch.Tensor,
    path: str | Path,
    k: int | None = None,
    threshold: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SheetLayout:
    """Write a PNG of the `k` lowest-Dice images (all with k=None), worst first.

    `images` (B, 3, H, W) as the data module normalised them (`mean`, `std`), `masks`
    (B, 1, H, W) truth with 0, 1 and ignore_index, `probs` (B, 1, H, W) pet probabilities,
    `names` and `dice` one per image. Each panel is the photo with true-positive (green),
    false-positive (red) and false-negative (blue) pixels tinted, captioned with its name
    and Dice; ignored pixels are left untinted. Returns the sheet's layout, whose `panels`
    is min(k, B).
    """
    dice = torch.as_tensor(dice, dtype=torch.float64).flatten().cpu()
    if not len(names) == len(dice) == images.shape[0] == masks.shape[0] == probs.shape[0]:
        raise ValueError(
            f"worst_sheet needs one name and Dice per image: {images.shape[0]} images, "
            f"{masks.shape[0]} masks, {probs.shape[0]} probabilities, {len(names)} names, "
            f"{len(dice)} Dice values"
        )
    count = len(names) if k is None else min(k, len(names))
    order = torch.argsort(dice, stable=True)[:count]
    photos = denormalize(images[order].float().cpu(), tuple(mean), tuple(std))
    truth = masks[order].cpu()
    pred = probs[order].float().cpu() >= threshold
    captions = [f"{names[i]}\nDice {dice[i]:.3f}" for i in order.tolist()]
    sheet, layout = error_sheet(photos, pred, truth, captions)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return layout


def write_worst_sheet(
    dataset: Any,
    predict: Callable[[torch.Tensor], torch.Tensor],
    dice_by_name: Mapping[str, float],
    path: str | Path,
    k: int,
    threshold: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SheetLayout | None:
    """`worst_sheet` of the `k` lowest-Dice images of `dataset`, predicted again.

    `dataset` gives `dataset.names` and `dataset[i]` -> {"image", "mask", "name"} (an
    OxfordPetDataset at the model's input size); `predict` maps images (B, 3, H, W), on the
    CPU, to pet probabilities (B, 1, H, W) on any device; `dice_by_name` holds the Dice
    to rank and caption by (names it lacks are not shown). Only the k shown images are
    read and predicted. Returns None, writing nothing, when k is 0 or no image is scored.
    """
    check_worst(k, "k")
    ranked = sorted((value, name) for name, value in dice_by_name.items())
    index = {name: i for i, name in enumerate(dataset.names)}
    chosen = [name for _, name in ranked if name in index][:k]
    if not chosen:
        return None
    samples = [dataset[index[name]] for name in chosen]
    images = torch.stack([sample["image"] for sample in samples])
    masks = torch.stack([sample["mask"] for sample in samples])
    with torch.no_grad():
        probs = predict(images).float().cpu()
    dice = [dice_by_name[name] for name in chosen]
    return worst_sheet(images, masks, probs, chosen, dice, path, None, threshold, mean, std)
