"""Dice and IoU of thresholded predictions, per image (the lab's metric) and over the dataset."""

import torch
from torchmetrics import Metric

from segpets.constants import IGNORE_INDEX


def _per_image_counts(
    probs: torch.Tensor, target: torch.Tensor, threshold: float, ignore_index: int
) -> dict[str, torch.Tensor]:
    """Per-image true positives, false positives, false negatives, true and valid pixels."""
    if probs.shape != target.shape:
        raise ValueError(
            f"predictions {tuple(probs.shape)} and target {tuple(target.shape)} differ in shape"
        )
    valid = target != ignore_index
    pred = (probs >= threshold) & valid
    truth = (target == 1) & valid
    dims = tuple(range(1, target.ndim))
    return {
        "tp": (pred & truth).sum(dims),
        "fp": (pred & ~truth).sum(dims),
        "fn": (~pred & truth).sum(dims),
        "pred": pred.sum(dims),
        "truth": truth.sum(dims),
        "valid": valid.sum(dims),
    }


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor, empty: float) -> torch.Tensor:
    """numerator / denominator, and `empty` where the denominator is 0."""
    numerator, denominator = numerator.float(), denominator.float()
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), empty)


def _scores(counts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    # Empty truth and empty prediction agree perfectly: Dice and IoU 1.
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, empty=1.0),
        "iou": _ratio(tp, tp + fp + fn, empty=1.0),
        "true_fraction": _ratio(counts["truth"], counts["valid"], empty=0.0),
        "pred_fraction": _ratio(counts["pred"], counts["valid"], empty=0.0),
    }


def per_image_scores(
    logits: torch.Tensor,
    target: torch.Tensor,
    threshold: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, torch.Tensor]:
    """Dice, IoU, true and predicted pet fraction of the valid pixels, each of shape (B,).

    A pixel is predicted pet when sigmoid(logit) >= threshold; pixels equal to
    `ignore_index` count for nothing. An image with empty truth scores Dice and IoU 1
    if the prediction is empty too, else 0.
    """
    return per_image_scores_from_probabilities(
        torch.sigmoid(logits.float()), target, threshold, ignore_index
    )


def per_image_scores_from_probabilities(
    probs: torch.Tensor,
    target: torch.Tensor,
    threshold: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, torch.Tensor]:
    """`per_image_scores` for probabilities, e.g. averaged over test-time augmentations."""
    return _scores(_per_image_counts(probs, target, threshold, ignore_index))


class BinarySegmentationMetrics(Metric):
    """Per-image mean and dataset-level Dice and IoU, plus dataset precision and recall.

    `dice` and `iou` average per-image scores, so a small pet counts as much as a
    large one; `*_dataset` pool all pixels first (micro averaging, torchmetrics'
    BinaryF1Score and BinaryJaccardIndex), which is what smp reports as "dataset IoU".
    All states are sums, so the DDP reduction is exact; `update` never syncs with the host.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        threshold: float = 0.5,
        ignore_index: int = IGNORE_INDEX,
        from_logits: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        # False for probabilities, e.g. averaged over test-time augmentations.
        self.from_logits = from_logits
        self.ignore_index = ignore_index
        for name in ("dice_sum", "iou_sum"):
            self.add_state(name, torch.tensor(0.0), dist_reduce_fx="sum")
        for name in ("images", "tp", "fp", "fn"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        probs = torch.sigmoid(preds.float()) if self.from_logits else preds
        counts = _per_image_counts(probs, target, self.threshold, self.ignore_index)
        scores = _scores(counts)
        self.dice_sum += scores["dice"].sum()
        self.iou_sum += scores["iou"].sum()
        self.images += target.shape[0]
        self.tp += counts["tp"].sum()
        self.fp += counts["fp"].sum()
        self.fn += counts["fn"].sum()

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, fn = self.tp, self.fp, self.fn
        return {
            "dice": self.dice_sum / self.images,
            "iou": self.iou_sum / self.images,
            "dice_dataset": _ratio(2 * tp, 2 * tp + fp + fn, empty=1.0),
            "iou_dataset": _ratio(tp, tp + fp + fn, empty=1.0),
            # No prediction (or no pet) at all: 0, as torchmetrics' zero_division default.
            "precision": _ratio(tp, tp + fp, empty=0.0),
            "recall": _ratio(tp, tp + fn, empty=0.0),
        }
