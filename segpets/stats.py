"""Statistics for comparing runs: bootstrap intervals, paired tests, Holm's correction.

The report leans on these to say whether one configuration beats another on the test
images or whether the difference is within the noise of this many images. Every function
is deterministic: bootstraps draw from a fixed seed, so a report written twice reads the same.

Methods, as the report names them:
- confidence intervals: 95% BCa bootstrap (bias-corrected and accelerated) of the mean,
  `scipy.stats.bootstrap`, 9999 resamples;
- paired test: Wilcoxon signed-rank, two-sided, zero differences dropped
  (`scipy.stats.wilcoxon`; exact p for small n without ties, normal approximation otherwise);
- multiple comparisons: Holm's step-down correction of the family's p-values.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from segpets.errors import SegpetsError

CONFIDENCE = 0.95
ALPHA = 0.05
RESAMPLES = 9999
SEED = 0
CI_METHOD = "95% BCa bootstrap"
TEST_NAME = "Wilcoxon signed-rank (two-sided)"
NO_DIFFERENCE = "no difference detectable at this n"


def _scipy_stats() -> ModuleType:
    """scipy.stats, or a SegpetsError that says how to install it."""
    try:
        from scipy import stats
    except ImportError as error:
        raise SegpetsError(
            "the report's statistics need scipy, which is not installed: "
            "python -m pip install scipy"
        ) from error
    return stats


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof=1) of `n` values; std is None for n < 2."""

    mean: float | None
    std: float | None
    n: int

    def __str__(self) -> str:
        if self.mean is None:
            return ""
        return f"{self.mean:.4f}" if self.std is None else f"{self.mean:.4f} ± {self.std:.4f}"


def mean_std(values: Sequence[float | None]) -> Summary:
    """Mean ± std over seeds; None values (unfinished runs, missing metrics) are left out."""
    known = np.array([v for v in values if v is not None], dtype=float)
    if known.size == 0:
        return Summary(None, None, 0)
    std = float(known.std(ddof=1)) if known.size > 1 else None
    return Summary(float(known.mean()), std, int(known.size))


def mean_ci(
    values: Sequence[float], confidence: float = CONFIDENCE, seed: int = SEED
) -> tuple[float, float] | None:
    """The BCa bootstrap confidence interval of the mean of `values` (CI_METHOD).

    None for fewer than two values; a single point when all values are equal (the
    bootstrap has nothing to resample). The same values and seed give the same interval.
    """
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return None
    if np.ptp(data) == 0:
        return float(data[0]), float(data[0])
    result = _scipy_stats().bootstrap(
        (data,),
        np.mean,
        n_resamples=RESAMPLES,
        batch=max(1, 4_000_000 // data.size),  # bounds the memory of large test sets
        confidence_level=confidence,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class Paired:
    """A paired comparison of A and B on the same items: A - B, its interval, the test's p."""

    n: int
    mean_difference: float
    ci: tuple[float, float] | None
    p_value: float
    ci_method: str = CI_METHOD
    test: str = TEST_NAME


def paired(a: Sequence[float], b: Sequence[float], seed: int = SEED) -> Paired:
    """Compare per-item scores a[i] and b[i] (same item i): mean of a - b, its 95% bootstrap
    interval, and the Wilcoxon signed-rank p-value (1.0 when every difference is zero)."""
    a_, b_ = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_.shape != b_.shape or a_.ndim != 1 or a_.size == 0:
        raise ValueError(
            f"paired scores need two equal-length, non-empty lists: {a_.shape}, {b_.shape}"
        )
    differences = a_ - b_
    if not differences.any():
        p_value = 1.0
    else:
        p_value = float(_scipy_stats().wilcoxon(differences, zero_method="wilcox").pvalue)
    return Paired(
        n=int(differences.size),
        mean_difference=float(differences.mean()),
        ci=mean_ci(differences, seed=seed),
        p_value=p_value,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest of m p-values is multiplied by m - i
    (i from 0), kept non-decreasing in that order, and capped at 1. Rejecting where the
    adjusted p < alpha controls the family-wise error rate at alpha."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return []
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(x) for x in adjusted]


def verdict(
    name_a: str, name_b: str, mean_difference: float, adjusted_p: float, alpha: float = ALPHA
) -> str:
    """ "A better than B", "B better than A", or NO_DIFFERENCE: the sign of the mean of
    A - B, where the (Holm-adjusted) p-value is below alpha."""
    if adjusted_p < alpha and mean_difference != 0:
        return (
            f"{name_a} better than {name_b}"
            if mean_difference > 0
            else f"{name_b} better than {name_a}"
        )
    return NO_DIFFERENCE
