"""Losses on logits (B, 1, H, W) against uint8 masks (B, 1, H, W) of 0, 1 and IGNORE_INDEX.

Every loss computes in float32 with autocast off, so bf16/fp16 training cannot
overflow or round the reductions away, and works from logits with log-sigmoid
forms, so saturated logits (+-1e4) stay finite. Pixels equal to IGNORE_INDEX
contribute nothing: no loss and exactly zero gradient. A batch with no valid pixel
gives loss 0.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from segpets.constants import IGNORE_INDEX
from segpets.errors import ConfigError


def _prepare(
    logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 logits and 0/1 targets with ignored pixels zeroed, and the valid-pixel mask."""
    if logits.shape != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape"
        )
    valid = target != IGNORE_INDEX
    # `where`, not a product: the ignored logits' values (even inf) then cannot reach the loss.
    logits = torch.where(valid, logits.float(), 0.0)
    target = torch.where(valid, target, 0).float()
    return logits, target, valid.float()


def _masked_mean(loss: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (loss * valid).sum() / valid.sum().clamp_min(1.0)


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"loss.{name} must be in [0, 1], got {value}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"loss.{name} must be > 0, got {value}")


class BCELoss(nn.Module):
    """Binary cross-entropy; `pos_weight` > 1 up-weights pet pixels (recall over precision)."""

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        if pos_weight is not None:
            _check_positive("pos_weight", pos_weight)
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, target, valid = _prepare(logits, target)
            pos_weight = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
            bce = F.binary_cross_entropy_with_logits(
                logits, target, pos_weight=pos_weight, reduction="none"
            )
            return _masked_mean(bce, valid)


class TverskyLoss(nn.Module):
    """1 - soft Tversky index on sigmoid probabilities.

    `alpha` weighs false positives and `beta` false negatives (as in smp); raise beta
    to trade precision for recall on thin structures. The index is written as
    (2TP + smooth) / (2TP + 2*alpha*FP + 2*beta*FN + smooth) so that alpha = beta = 0.5
    is exactly DiceLoss with the same `smooth` (smp adds `smooth` to TP instead; the
    difference is smooth / 2 against pixel counts). `per_image=False` pools the
    batch into one index like smp; True averages the per-image losses, like the
    per-image Dice metric.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        smooth: float = 1.0,
        per_image: bool = False,
    ) -> None:
        super().__init__()
        _check_unit_interval("alpha", alpha)
        _check_unit_interval("beta", beta)
        _check_positive("smooth", smooth)
        self.alpha, self.beta, self.smooth, self.per_image = alpha, beta, smooth, per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, target, valid = _prepare(logits, target)
            prob = torch.sigmoid(logits) * valid
            dims = (1, 2, 3) if self.per_image else (0, 1, 2, 3)
            tp = (prob * target).sum(dims)
            fp = (prob * (1.0 - target)).sum(dims)
            fn = ((1.0 - prob) * target).sum(dims)
            denominator = 2 * tp + 2 * self.alpha * fp + 2 * self.beta * fn + self.smooth
            return (1.0 - (2 * tp + self.smooth) / denominator).mean()


class DiceLoss(TverskyLoss):
    """1 - soft Dice, (2TP + smooth) / (sum(p) + sum(t) + smooth): overlap, not pixel accuracy.

    Insensitive to the pet/background imbalance; the Tversky index with alpha = beta = 0.5.
    """

    def __init__(self, smooth: float = 1.0, per_image: bool = False) -> None:
        super().__init__(alpha=0.5, beta=0.5, smooth=smooth, per_image=per_image)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): BCE scaled by (1 - p_t)**gamma to focus on hard pixels.

    `alpha` weighs pet pixels and 1 - alpha background; None weighs both 1. Mean over
    valid pixels.
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        if alpha is not None:
            _check_unit_interval("alpha", alpha)
        if not gamma >= 0:
            raise ConfigError(f"loss.gamma must be >= 0, got {gamma}")
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, target, valid = _prepare(logits, target)
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            # 1 - p_t = sigmoid(-z_t) with z_t the logit signed towards the true class.
            signed = torch.where(target > 0, logits, -logits)
            loss = torch.exp(self.gamma * F.logsigmoid(-signed)) * bce
            if self.alpha is not None:
                loss = loss * torch.where(target > 0, self.alpha, 1.0 - self.alpha)
            return _masked_mean(loss, valid)


class WeightedSum(nn.Module):
    """sum(weights[name] * terms[name](logits, target)), e.g. BCE for calibration plus Dice for overlap."""

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        if set(terms) != set(weights):
            raise ConfigError(
                f"loss.weights must name the same terms as loss.terms: "
                f"terms {sorted(terms)}, weights {sorted(weights)}"
            )
        for name, weight in weights.items():
            if not weight >= 0:
                raise ConfigError(f"loss.weights.{name} must be >= 0, got {weight}")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {name: float(weights[name]) for name in self.terms}

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each term's unweighted value, for logging the parts."""
        return {name: term(logits, target) for name, term in self.terms.items()}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        parts = self.components(logits, target)
        return sum(self.weights[name] * value for name, value in parts.items())
