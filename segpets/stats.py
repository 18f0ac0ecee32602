"""Statistics for comparing runs: two-level bootstrap intervals, seed and image tests, Holm.

The report leans on these to say whether one configuration trains better models than
another, or whether the difference is within the noise of this many seeds and images. A
group's test scores form a matrix, seeds x images: seeds (or folds) are one source of
variance, often the largest when training from scratch, and the test images another.
Every function is deterministic: bootstraps draw from a fixed seed, so a report written
twice reads the same.

Methods, as the report names them:
- intervals with several seeds: 95% two-level percentile bootstrap (TWO_LEVEL_METHOD):
  each resample draws the seeds with replacement and, independently, the test images
  with replacement, and takes the mean of that seeds x images table (Owen's "pigeonhole"
  bootstrap for crossed factors). A difference between groups pairs by image always and
  by seed where both groups ran the same seeds (the difference table A - B is resampled);
  groups with other seeds have theirs drawn independently, the images drawn once for both;
- intervals with one seed per group: 95% BCa bootstrap over images (CI_METHOD),
  `scipy.stats.bootstrap`, 9999 resamples: what those trained models score, nothing more;
- seed-level test: Student's paired t-test over the seeds' mean test Dice where the seeds
  are shared, Welch's t-test otherwise (`scipy.stats.ttest_rel` / `ttest_ind`);
- image-level test: Wilcoxon signed-rank, two-sided, zero differences dropped, on the
  per-image Dice averaged over seeds (`scipy.stats.wilcoxon`);
- multiple comparisons: Holm's step-down correction of the family's p-values;
- seeds needed: a power estimate for the seed-level t-test (two-sided alpha 0.05, power
  0.8, t quantiles) at the observed seed spread and difference.
"""

import warnings
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
TWO_LEVEL_METHOD = "95% two-level bootstrap (seeds, then images, each with replacement)"
TEST_NAME = "Wilcoxon signed-rank (two-sided)"
SEED_TEST_PAIRED = "paired t-test"
SEED_TEST_UNPAIRED = "Welch t-test"
NO_DIFFERENCE = "no difference detectable at this n"
# Fewer seeds than this in a group: its comparisons speak for the trained models only.
MIN_SEEDS = 3
POWER = 0.8


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


# --- Seeds x images ----------------------------------------------------------------------


def _table(scores: Sequence[Sequence[float]] | np.ndarray, name: str = "scores") -> np.ndarray:
    table = np.asarray(scores, dtype=float)
    if table.ndim != 2 or 0 in table.shape:
        raise ValueError(f"{name} must be a non-empty seeds x images table, got {table.shape}")
    return table


def _counts(rng: np.random.Generator, resamples: int, n: int) -> np.ndarray:
    """How often each of n items is drawn, in each of `resamples` draws of n with replacement."""
    return rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(float)


def two_level_draws(
    tables: Sequence[np.ndarray], signs: Sequence[float], seed: int, resamples: int
) -> np.ndarray:
    """Bootstrap draws of sum(sign * mean(table)): each table's seeds (rows) drawn on their
    own, the images (columns, the same in every table) drawn once per resample for all."""
    rng = np.random.default_rng(seed)
    images = tables[0].shape[1]
    draws = np.empty(resamples)
    chunk = max(1, 2_000_000 // images)  # bounds the memory of large test sets
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        image_counts = _counts(rng, size, images)
        total = np.zeros(size)
        for table, sign in zip(tables, signs, strict=True):
            seed_counts = _counts(rng, size, table.shape[0])
            drawn = np.einsum("rs,si,ri->r", seed_counts, table, image_counts)
            total += sign * drawn / (table.shape[0] * images)
        draws[start : start + size] = total
    return draws


def _percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def two_level_ci(
    scores: Sequence[Sequence[float]] | np.ndarray,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
    resamples: int = RESAMPLES,
) -> tuple[float, float] | None:
    """The interval of a group's mean score from its seeds x images table (TWO_LEVEL_METHOD);
    with one seed, the BCa interval over its images (CI_METHOD). None for one score."""
    table = _table(scores)
    if table.shape[0] == 1:
        return mean_ci(table[0], confidence, seed)
    if np.ptp(table) == 0:
        return float(table[0, 0]), float(table[0, 0])
    return _percentile_interval(two_level_draws([table], [1.0], seed, resamples), confidence)


def two_level_difference_ci(
    a: Sequence[Sequence[float]] | np.ndarray,
    b: Sequence[Sequence[float]] | np.ndarray,
    paired_seeds: bool,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
    resamples: int = RESAMPLES,
) -> tuple[float, float] | None:
    """The interval of mean(a) - mean(b), tables of seeds x the same images in the same
    order. `paired_seeds`: row s of a and of b share a seed, so the table a - b is resampled;
    otherwise each group's seeds are drawn on their own (images drawn once for both)."""
    a_, b_ = _table(a, "a"), _table(b, "b")
    if a_.shape[1] != b_.shape[1] or (paired_seeds and a_.shape != b_.shape):
        raise ValueError(f"a {a_.shape} and b {b_.shape} must score the same images (and seeds)")
    if a_.shape[0] == b_.shape[0] == 1:
        return paired(a_[0], b_[0], seed).ci
    if paired_seeds:
        return two_level_ci(a_ - b_, confidence, seed, resamples)
    draws = two_level_draws([a_, b_], [1.0, -1.0], seed, resamples)
    return _percentile_interval(draws, confidence)


@dataclass(frozen=True)
class SeedTest:
    """The seed-level comparison of two groups: their seeds' mean scores, the test's p, and
    the spread the power estimate uses (sd of the paired differences, or of each group)."""

    test: str
    p_value: float
    spread: tuple[float, ...]


def seed_test(
    a_means: Sequence[float], b_means: Sequence[float], paired_seeds: bool
) -> SeedTest | None:
    """Paired t-test over the seeds' means where the seeds are shared (a_means[s] and
    b_means[s] from seed s), Welch's t-test otherwise; None with fewer than two seeds a
    group. p is 1.0 where the differences are all zero, 0.0 where they are equal and not
    zero (no spread at all: the seeds agree exactly)."""
    a_, b_ = np.asarray(a_means, dtype=float), np.asarray(b_means, dtype=float)
    if min(a_.size, b_.size) < 2:
        return None
    with warnings.catch_warnings():
        # Nearly equal seeds make scipy warn of precision loss; the p it returns is still
        # the test's (tiny), which is what the verdict needs.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return _seed_test(a_, b_, paired_seeds)


def _seed_test(a_: np.ndarray, b_: np.ndarray, paired_seeds: bool) -> SeedTest:
    stats = _scipy_stats()
    if paired_seeds:
        differences = a_ - b_
        spread = (float(differences.std(ddof=1)),)
        if spread[0] == 0:
            return SeedTest(SEED_TEST_PAIRED, 1.0 if differences[0] == 0 else 0.0, spread)
        return SeedTest(SEED_TEST_PAIRED, float(stats.ttest_rel(a_, b_).pvalue), spread)
    spread = (float(a_.std(ddof=1)), float(b_.std(ddof=1)))
    if max(spread) == 0:
        return SeedTest(SEED_TEST_UNPAIRED, 1.0 if a_[0] == b_[0] else 0.0, spread)
    p_value = float(stats.ttest_ind(a_, b_, equal_var=False).pvalue)
    return SeedTest(SEED_TEST_UNPAIRED, p_value, spread)


def seeds_needed(
    difference: float, spread: Sequence[float], alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Seeds per group for the seed-level t-test at `alpha` (two-sided) to detect
    `difference` with `power`, at the seed spread observed (one sd: of paired differences;
    two: of each group's seed means): the smallest n with
    n >= ((t(1 - alpha/2, df) + t(power, df)) * sd / d)^2, df = n - 1 paired, 2n - 2 not
    (the normal approximation with t quantiles, which small n needs). At least MIN_SEEDS;
    None where the difference is zero (no size to detect)."""
    if difference == 0:
        return None
    t = _scipy_stats().t.ppf
    variance, groups = sum(s * s for s in spread), len(spread)
    n = MIN_SEEDS
    while n < 100_000:
        df = groups * (n - 1)
        if n >= ((t(1 - alpha / 2, df) + t(power, df)) ** 2) * variance / difference**2:
            return n
        n = max(n + 1, int(n * 1.05))
    return n


CONFIGURATION = "configuration"
TRAINED_MODELS = "trained models"


@dataclass(frozen=True)
class GroupComparison:
    """Group a against group b on the images both scored: the evidence at both levels.

    `level` is CONFIGURATION where both groups have at least MIN_SEEDS seeds: the verdict
    then rests on the seed-level test (`p_value` is its p) and the two-level interval; else
    TRAINED_MODELS, and it rests on the image-level test of those very networks.
    """

    seeds: tuple[int, int]
    images: int
    paired_seeds: bool
    mean_difference: float
    ci: tuple[float, float] | None
    image_p: float
    seed: SeedTest | None

    @property
    def level(self) -> str:
        return CONFIGURATION if min(self.seeds) >= MIN_SEEDS else TRAINED_MODELS

    @property
    def p_value(self) -> float:
        """The p the verdict rests on: the seed-level test's, or the image-level one's."""
        return self.seed.p_value if self.level == CONFIGURATION and self.seed else self.image_p

    @property
    def test(self) -> str:
        return self.seed.test if self.level == CONFIGURATION and self.seed else TEST_NAME


def compare_tables(
    a: Sequence[Sequence[float]] | np.ndarray,
    b: Sequence[Sequence[float]] | np.ndarray,
    paired_seeds: bool,
    seed: int = SEED,
) -> GroupComparison:
    """Compare two groups' seeds x images tables (the same images, in the same order; with
    `paired_seeds`, row s of both from the same seed)."""
    a_, b_ = _table(a, "a"), _table(b, "b")
    images = paired(a_.mean(axis=0), b_.mean(axis=0), seed)
    return GroupComparison(
        seeds=(a_.shape[0], b_.shape[0]),
        images=images.n,
        paired_seeds=paired_seeds,
        mean_difference=float(a_.mean() - b_.mean()),
        ci=two_level_difference_ci(a_, b_, paired_seeds, seed=seed),
        image_p=images.p_value,
        seed=seed_test(a_.mean(axis=1), b_.mean(axis=1), paired_seeds),
    )


def decide(
    comparison: GroupComparison, adjusted_p: float, alpha: float = ALPHA
) -> tuple[int, list[str]]:
    """(+1 a better, -1 b better, 0 neither) and, for 0, what lacks evidence, in words.

    At the configuration level both must agree: the Holm-adjusted seed-level p below alpha
    and the two-level interval on one side of 0. For trained models, the adjusted
    image-level p alone, as a comparison of those networks on these images.
    """
    sign = int(np.sign(comparison.mean_difference))
    lacking = []
    if comparison.level == CONFIGURATION:
        if not adjusted_p < alpha:
            lacking.append(
                f"the seed level ({comparison.test} over {_seed_counts(comparison)}, "
                f"Holm p {adjusted_p:.2g})"
            )
        low, high = comparison.ci or (0.0, 0.0)
        if not (low > 0 or high < 0):
            lacking.append(f"the image level (two-level interval [{low:.4f}, {high:.4f}] holds 0)")
    elif not adjusted_p < alpha:
        lacking.append(f"the image level ({TEST_NAME}, Holm p {adjusted_p:.2g})")
    if sign == 0 and not lacking:
        lacking.append("the means are equal")
    return (0, lacking) if lacking else (sign, [])


def _seed_counts(comparison: GroupComparison) -> str:
    a, b = comparison.seeds
    return f"{a} shared seeds" if comparison.paired_seeds else f"{a} and {b} seeds"
