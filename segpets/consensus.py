"""How far an image's label disagrees with a confident consensus of several trained models.

The label audit (`python -m segpets.audit`) feeds this module plain arrays: per image the
label (0 background, 1 pet, 255 ignored) and the pet probabilities of each model that
predicted it (out-of-fold, or several seeds on one split), all at one size. Per image:

- consensus: the mean probability over those models; its mask is consensus >= 0.5.
- confidence: the mean over the label's valid pixels of |2 p - 1| of the consensus: 1 where
  every pixel is certain, 0 where all are at 0.5. Models that disagree average towards 0.5,
  so it drops with their disagreement too.
- score = (1 - Dice(label, consensus mask)) * confidence: high where a confident consensus
  contradicts the label. Images are ranked by it, highest first.

The kind of a disagreement (Dice < AGREES), by these rules in this order (A = label pet,
C = consensus mask, both over valid pixels):

- inverted: Dice(1 - A, C) >= KIND_DICE while Dice(A, C) <= 1 - KIND_DICE: pet and
  background swapped (not merely a consensus that calls everything pet).
- shifted: moving A by one of SHIFTS (pixels at the audit size, 8 directions each) raises
  Dice by at least SHIFT_GAIN, to at least KIND_DICE: the outline is right but misplaced.
- missing part: A lies inside C (|A & C| >= INSIDE * |A|) while C has at least PART of its
  pixels outside A: the label leaves out part of the pet (an erased leg, half a body).
- extra region: C lies inside A with at least PART of A outside C, or A has a connected
  region of at least MIN_REGION of the pixels that lies at least INSIDE outside C: the
  label marks something the models see as background.
- other: none of these (a different object, a mixture).
- agrees: Dice >= AGREES; no disagreement to name.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE = 255
THRESHOLD = 0.5
AGREES = 0.9
KIND_DICE = 0.8
SHIFT_GAIN = 0.15
SHIFTS = (1, 2, 4, 8)
INSIDE = 0.9
PART = 0.2
MIN_REGION = 0.01
KINDS = ("inverted", "shifted", "missing part", "extra region", "other", "agrees")


@dataclass(frozen=True)
class Disagreement:
    """One image's audit: its label against the consensus of `models` models."""

    name: str
    dice: float
    """Dice(label, consensus mask) over the valid pixels."""
    confidence: float
    score: float
    kind: str
    models: int
    where: str = ""
    """Where the image was predicted: a split (test) or the fold that held it out."""
    shift: tuple[int, int] = (0, 0)
    """(dy, dx) of the best shift of the label, (0, 0) unless it raised Dice."""
    shifted_dice: float | None = None

    def row(self) -> dict[str, object]:
        """audit.csv's columns."""
        return {
            "image": self.name,
            "label_vs_consensus_dice": round(self.dice, 4),
            "confidence": round(self.confidence, 4),
            "score": round(self.score, 4),
            "kind": self.kind,
            "models": self.models,
            "where": self.where,
            "shift": "" if self.shift == (0, 0) else f"{self.shift[0]},{self.shift[1]}",
            "shifted_dice": "" if self.shifted_dice is None else round(self.shifted_dice, 4),
        }


COLUMNS = tuple(Disagreement("", 0, 0, 0, "", 0).row())


def dice(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Dice of two boolean masks over `valid` pixels; 1 where both are empty."""
    if valid is not None:
        a, b = a & valid, b & valid
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int((a & b).sum()) / total


def consensus(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of the models' probability maps (H, W), float32."""
    if not len(probabilities):
        raise ValueError("consensus needs at least one model's probabilities")
    return np.mean(np.stack([np.asarray(p, np.float32) for p in probabilities]), axis=0)


def confidence(consensus_map: np.ndarray, valid: np.ndarray) -> float:
    """Mean of |2 p - 1| over the valid pixels (0 without any)."""
    values = np.abs(2 * consensus_map[valid] - 1)
    return float(values.mean()) if values.size else 0.0


def shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`mask` moved by (dy, dx) pixels, background filling what moves in."""
    out = np.zeros_like(mask)
    height, width = mask.shape
    ys, yd = (
        (slice(0, height - dy), slice(dy, height))
        if dy >= 0
        else (slice(-dy, height), slice(0, height + dy))
    )
    xs, xd = (
        (slice(0, width - dx), slice(dx, width))
        if dx >= 0
        else (slice(-dx, width), slice(0, width + dx))
    )
    out[yd, xd] = mask[ys, xs]
    return out


def best_shift(
    label: np.ndarray, mask: np.ndarray, valid: np.ndarray
) -> tuple[tuple[int, int], float]:
    """The (dy, dx) among SHIFTS in 8 directions whose moved label best matches `mask`, and
    that Dice."""
    best, best_dice = (0, 0), dice(label, mask, valid)
    for step in SHIFTS:
        for dy, dx in ((step, 0), (-step, 0), (0, step), (0, -step),
                       (step, step), (step, -step), (-step, step), (-step, -step)):  # fmt: skip
            value = dice(shifted(label, dy, dx), mask, valid)
            if value > best_dice:
                best, best_dice = (dy, dx), value
    return best, best_dice


def _has_extra_region(label: np.ndarray, mask: np.ndarray, valid: np.ndarray) -> bool:
    from scipy import ndimage

    regions, count = ndimage.label(label)
    minimum = MIN_REGION * max(int(valid.sum()), 1)
    for index in range(1, count + 1):
        region = regions == index
        size = int(region.sum())
        if size >= minimum and int((region & ~mask).sum()) >= INSIDE * size:
            return True
    return False


def classify(
    label: np.ndarray, mask: np.ndarray, valid: np.ndarray
) -> tuple[str, tuple[int, int], float | None]:
    """The kind of disagreement of boolean `label` with the consensus `mask` (module
    docstring), with the best shift and its Dice where the shift was checked."""
    agreement = dice(label, mask, valid)
    if agreement >= AGREES:
        return "agrees", (0, 0), None
    label, mask = label & valid, mask & valid
    if dice(~label & valid, mask) >= KIND_DICE and agreement <= 1 - KIND_DICE:
        return "inverted", (0, 0), None
    shift, shift_dice = best_shift(label, mask, valid)
    if shift_dice >= KIND_DICE and shift_dice - agreement >= SHIFT_GAIN:
        return "shifted", shift, shift_dice
    checked = shift_dice if shift != (0, 0) else None
    label_pixels, mask_pixels = int(label.sum()), int(mask.sum())
    both = int((label & mask).sum())
    if mask_pixels and both >= INSIDE * label_pixels and mask_pixels - both >= PART * mask_pixels:
        return "missing part", shift, checked
    if label_pixels and (
        (both >= INSIDE * mask_pixels and label_pixels - both >= PART * label_pixels)
        or _has_extra_region(label, mask, valid)
    ):
        return "extra region", shift, checked
    return "other", shift, checked


def audit_image(
    name: str, label: np.ndarray, probabilities: Sequence[np.ndarray], where: str = ""
) -> Disagreement:
    """One image's Disagreement: `label` (H, W) with 0, 1 and 255 = ignored, and each
    model's pet probabilities (H, W) at the label's size."""
    label = np.asarray(label)
    valid = label != IGNORE
    pet = (label == 1) & valid
    mean = consensus(probabilities)
    if mean.shape != label.shape:
        raise ValueError(f"{name}: probabilities {mean.shape} and label {label.shape} differ")
    mask = (mean >= THRESHOLD) & valid
    agreement = dice(pet, mask, valid)
    sure = confidence(mean, valid)
    kind, shift, shift_dice = classify(pet, mask, valid)
    return Disagreement(
        name=name,
        dice=agreement,
        confidence=sure,
        score=(1 - agreement) * sure,
        kind=kind,
        models=len(probabilities),
        where=where,
        shift=shift,
        shifted_dice=shift_dice,
    )


def rank(entries: Sequence[Disagreement]) -> list[Disagreement]:
    """Highest score first; ties by name, so the order never depends on the input's."""
    return sorted(entries, key=lambda entry: (-entry.score, entry.name))
