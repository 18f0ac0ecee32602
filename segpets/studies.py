"""Cross-validation and learning curves in the report: out-of-fold scores and power laws.

segpets.report groups runs and compares them on the test split; this module adds what
folds and training-set sizes tell beyond that, on plain data (run rows and names), so
that it knows nothing of the report's groups.

- Out-of-fold: each fold's run scores its val fold (`val_per_image.csv`, with a `fold`
  column), so a group's fold runs together score every train+val image once, by the
  model that never trained on it; with several seeds per fold, per image the mean over
  seeds. A group's mean out-of-fold Dice gets a BCa interval over those images
  (stats.mean_ci), and two groups split into the same folds (the same splits/folds.csv)
  are compared image by image (stats.paired, Holm over these comparisons).
- Learning curves: groups that differ only in `data.train_fraction` (a group without it
  trains on all, fraction 1) form a curve of test Dice against training images. A power
  law err = a * n^-b, err = 1 - mean test Dice, is fitted by least squares on log err
  against log n where a curve has at least 3 sizes, and extrapolated to twice the largest
  n as an estimate.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpets import stats
from segpets.scores import VAL_SCORES, read_scores

FRACTION = "data.train_fraction"
MIN_SIZES = 3  # a power law (two parameters) fitted through fewer sizes says nothing
OOF_COLUMNS = ("a", "b", "images", "mean_difference", "ci_low", "ci_high", "p_value",
               "p_holm", "verdict")  # fmt: skip
CURVE_COLUMNS = ("curve", "n", "fraction", "mean", "std", "runs", "fit_a", "fit_b",
                 "estimate_2x")  # fmt: skip
OOF_NOTE = (
    "Out-of-fold: each image of train+val scored once, by the fold's model that held it out "
    "(averaged over seeds where several seeds ran each fold); a group's interval is a "
    f"{stats.CI_METHOD} over those images, a comparison is paired by image ({stats.TEST_NAME}, "
    f"{stats.CI_METHOD} of the mean difference) between groups split into the same folds, "
    "Holm-corrected over these comparisons. It speaks for these trained models on these "
    "images: the folds' models are not independent seeds."
)


# --- Reading runs ------------------------------------------------------------------------


def read_val_scores(run: Path) -> dict[str, tuple[float, int]] | None:
    """{image: (Dice, fold)} from a fold run's val_per_image.csv; None without one or
    without its fold column (a run of the layout's own split writes none)."""
    path = run / VAL_SCORES
    if not path.is_file():
        return None
    rows = read_scores(path)
    scored = {n: (v["dice"], int(v["fold"])) for n, v in rows.items() if {"dice", "fold"} <= set(v)}
    return scored or None


def read_folds(run: Path) -> dict[str, int] | None:
    """{stem: fold} of the run's splits/folds.csv (every pooled image), or None."""
    path = run / "splits" / "folds.csv"
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()[1:]
    return {stem: int(fold) for stem, _, fold in (line.rpartition(",") for line in lines if line)}


def train_images(run: Path, metrics: dict[str, Any]) -> int | None:
    """The images a run trained on: metrics.json's train_images (train.py records it), else
    the lines of its splits/train.txt (written with data.folds or data.train_fraction)."""
    if metrics.get("train_images") is not None:
        return int(metrics["train_images"])
    listed = run / "splits" / "train.txt"
    if listed.is_file():
        return sum(1 for line in listed.read_text().splitlines() if line.strip())
    return None


# --- Out-of-fold -------------------------------------------------------------------------


@dataclass(frozen=True)
class OutOfFold:
    """A group's out-of-fold Dice per image and the folds that produced it."""

    dice: dict[str, float]
    folds: dict[str, int]  # stem: fold, from splits/folds.csv (else the val rows)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.dice.values())))

    @property
    def ci(self) -> tuple[float, float] | None:
        return stats.mean_ci(list(self.dice.values()))

    def describe(self) -> str:
        """The folds in words: "5 folds over 200 images"."""
        return f"{len(set(self.folds.values()))} folds over {len(self.folds)} images"


def out_of_fold(runs: Sequence[dict[str, Any]]) -> OutOfFold | None:
    """Pool the finished fold runs' val scores (run rows with `val_scores` and `path`): per
    image the mean Dice over the runs that held it out (one per seed). None without any."""
    with_scores = [run for run in runs if run.get("val_scores")]
    if not with_scores:
        return None
    per_image: dict[str, list[float]] = {}
    for run in with_scores:
        for name, (dice, _) in run["val_scores"].items():
            per_image.setdefault(name, []).append(dice)
    folds = next((run["folds"] for run in with_scores if run.get("folds")), None)
    if folds is None:
        folds = {n: fold for run in with_scores for n, (_, fold) in run["val_scores"].items()}
    dice = {name: sum(values) / len(values) for name, values in sorted(per_image.items())}
    return OutOfFold(dice, folds)


def _not_comparable(name_a: str, a: OutOfFold | None, name_b: str, b: OutOfFold | None) -> str:
    """Why two groups' out-of-fold scores are not compared, or "" where they are."""
    for name, oof in ((name_a, a), (name_b, b)):
        if oof is None:
            return f"no out-of-fold comparison: {name} has no val_per_image.csv with folds"
    assert a is not None and b is not None
    if a.folds != b.folds:
        return (
            f"not paired: different folds: {name_a} split {a.describe()}, {name_b} "
            f"{b.describe()}, and their splits/folds.csv differ (data.folds, data.fold_seed "
            "or the train+val pool)"
        )
    if not set(a.dice) & set(b.dice):
        return f"no out-of-fold comparison: {name_a} and {name_b} scored no image in common"
    return ""


def compare_out_of_fold(
    pairs: Sequence[tuple[str, OutOfFold | None, str, OutOfFold | None]],
) -> list[dict[str, Any]]:
    """One row (OOF_COLUMNS) per pair where at least one group has out-of-fold scores: a - b
    over the images both scored, its BCa interval and Wilcoxon p, Holm over the rows tested;
    a verdict where the adjusted p < alpha and the interval excludes 0."""
    rows, tested = [], []
    for name_a, a, name_b, b in pairs:
        if a is None and b is None:
            continue
        reason = _not_comparable(name_a, a, name_b, b)
        if reason:
            rows.append({"a": name_a, "b": name_b, "verdict": reason})
            continue
        assert a is not None and b is not None
        names = sorted(set(a.dice) & set(b.dice))
        result = stats.paired([a.dice[n] for n in names], [b.dice[n] for n in names])
        low, high = result.ci or (None, None)
        rows.append({"a": name_a, "b": name_b, "images": result.n,
                     "mean_difference": result.mean_difference, "ci_low": low, "ci_high": high,
                     "p_value": result.p_value})  # fmt: skip
        tested.append(rows[-1])
    for row, p_holm in zip(tested, stats.holm([r["p_value"] for r in tested]), strict=True):
        row["p_holm"] = p_holm
        row["verdict"] = _oof_verdict(row)
    return rows


def _oof_verdict(row: dict[str, Any]) -> str:
    low, high = row["ci_low"], row["ci_high"]
    excludes = low is not None and (low > 0 or high < 0)
    if row["p_holm"] < stats.ALPHA and excludes and row["mean_difference"] != 0:
        better, worse = (row["a"], row["b"]) if row["mean_difference"] > 0 else (row["b"], row["a"])
        return f"{better} better than {worse} out of fold (these trained models, over images)"
    return f"{stats.NO_DIFFERENCE} (out of fold, Holm p {row['p_holm']:.2g})"


# --- Learning curves ---------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One training-set size of a curve: a group's mean training images and its runs'
    test Dice (mean per image, one value a seed or fold)."""

    fraction: float
    n: float
    dice: tuple[float, ...]

    @property
    def summary(self) -> stats.Summary:
        return stats.mean_std(list(self.dice))


@dataclass(frozen=True)
class Curve:
    name: str
    points: tuple[Point, ...]  # by n

    @property
    def fit(self) -> tuple[float, float] | None:
        """(a, b) of err = a * n^-b, or None with fewer than MIN_SIZES sizes (or err <= 0)."""
        sizes = [(p.n, 1 - p.summary.mean) for p in self.points if p.summary.mean is not None]
        if len({n for n, _ in sizes}) < MIN_SIZES or any(err <= 0 for _, err in sizes):
            return None
        return fit_power_law([n for n, _ in sizes], [err for _, err in sizes])

    @property
    def largest(self) -> float:
        return max(p.n for p in self.points)

    @property
    def estimate(self) -> float | None:
        """The test Dice the fit gives at twice the largest n (an estimate)."""
        fit = self.fit
        return None if fit is None else 1 - fit[0] * (2 * self.largest) ** -fit[1]


def fit_power_law(n: Sequence[float], err: Sequence[float]) -> tuple[float, float]:
    """(a, b) of err = a * n^-b by least squares on log err = log a - b log n."""
    slope, intercept = np.polyfit(np.log(n), np.log(err), 1)
    return float(math.exp(intercept)), float(-slope)


def _fraction(key: Sequence[str]) -> float:
    values = [o.partition("=")[2] for o in key if o.partition("=")[0].lstrip("+") == FRACTION]
    return float(values[-1]) if values else 1.0


def learning_curves(
    groups: Sequence[tuple[str, Sequence[str], Sequence[dict[str, Any]]]],
) -> list[Curve]:
    """Curves from (name, overrides, finished runs) per group: groups whose overrides are
    the same but for data.train_fraction, at least two fractions, one of them set. A run
    row needs `train_images` and `test_dice`; a group with neither is no point."""
    by_rest: dict[tuple[str, ...], list[tuple[str, Sequence[str], Sequence[dict]]]] = {}
    for name, key, runs in groups:
        rest = tuple(o for o in key if o.partition("=")[0].lstrip("+") != FRACTION)
        by_rest.setdefault(rest, []).append((name, key, runs))
    curves = []
    for members in by_rest.values():
        fractions = {_fraction(key) for _, key, _ in members}
        named = [name for name, key, _ in members if len(fractions) > 1 and _fraction(key) != 1]
        if not named:
            continue
        points = [_point(key, runs) for _, key, runs in members]
        kept = tuple(sorted((p for p in points if p is not None), key=lambda p: p.n))
        if len(kept) > 1:
            curves.append(Curve(_curve_name(named[0]), kept))
    return curves


def _point(key: Sequence[str], runs: Sequence[dict[str, Any]]) -> Point | None:
    known = [
        r for r in runs if r.get("train_images") is not None and r.get("test_dice") is not None
    ]
    if not known:
        return None
    n = sum(r["train_images"] for r in known) / len(known)
    return Point(_fraction(key), n, tuple(r["test_dice"] for r in known))


def _curve_name(group_name: str) -> str:
    """The group's name less its data.train_fraction (the curve's x); "all runs" if that
    was all of it."""
    kept = [word for word in group_name.split(" ") if not word.startswith(f"{FRACTION}=")]
    return " ".join(kept) or "all runs"


def curve_rows(curves: Sequence[Curve]) -> list[dict[str, Any]]:
    """Rows of learning_curve.csv (CURVE_COLUMNS): one per size of each curve."""
    rows = []
    for curve in curves:
        fit = curve.fit or (None, None)
        for point in curve.points:
            summary = point.summary
            rows.append({"curve": curve.name, "n": point.n, "fraction": point.fraction,
                         "mean": summary.mean, "std": summary.std, "runs": summary.n,
                         "fit_a": fit[0], "fit_b": fit[1], "estimate_2x": curve.estimate})  # fmt: skip
    return rows


def curve_lines(curves: Sequence[Curve]) -> list[str]:
    """Per curve one sentence: its fit and the estimate at twice the data, or why none."""
    lines = []
    for curve in curves:
        fit = curve.fit
        if fit is None:
            sizes = len({p.n for p in curve.points})
            lines.append(
                f"{curve.name}: {sizes} training-set sizes; a power law needs at least "
                f"{MIN_SIZES}, so no fit and no extrapolation."
            )
            continue
        lines.append(
            f"{curve.name}: err = {fit[0]:.3g} * n^{-fit[1] + 0:.3g} (err = 1 - mean test Dice); "
            f"about {curve.estimate:.2f} at 2x data, n = {2 * curve.largest:.0f} "
            "(power-law estimate)."
        )
    return lines


CURVE_NOTE = (
    "Test Dice (mean per image) against the number of training images, mean ± std over "
    "seeds and folds (band in the figure: min-max); groups that differ only in "
    f"{FRACTION} form a curve. Fit: err = a * n^-b by least squares on log err against "
    "log n, extrapolated to twice the largest n: an estimate, not a measurement."
)


def plot_learning_curves(curves: Sequence[Curve], path: Path, plt: Any) -> None:
    """learning_curve.png: per curve the mean test Dice against n with a min-max band and
    the fitted power law (dashed) out to twice the largest n."""
    figure, ax = plt.subplots(figsize=(8, 5))
    for index, curve in enumerate(curves):
        color = f"C{index % 10}"
        n = [p.n for p in curve.points]
        ax.plot(n, [p.summary.mean for p in curve.points], marker="o", color=color,
                label=curve.name)  # fmt: skip
        ax.fill_between(n, [min(p.dice) for p in curve.points],
                        [max(p.dice) for p in curve.points], color=color, alpha=0.2)  # fmt: skip
        fit = curve.fit
        if fit is not None:
            x = np.geomspace(min(n), 2 * curve.largest, 50)
            ax.plot(x, 1 - fit[0] * x ** -fit[1], ls="--", color=color, lw=1)
            ax.plot([2 * curve.largest], [curve.estimate], marker="x", color=color)
    ax.set_xscale("log")
    ticks = sorted(
        {p.n for c in curves for p in c.points} | {2 * c.largest for c in curves if c.fit}
    )
    ax.set_xticks(ticks, [f"{n:.0f}" for n in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training images")
    ax.set_ylabel("test Dice (mean per image)")
    ax.set_title("learning curves (band: min-max over seeds/folds; dashed: power law, x: 2x estimate)",
                 fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


# --- Report sections ---------------------------------------------------------------------


@dataclass
class Studies:
    """What folds and training-set sizes add to a report: out-of-fold
    comparisons (empty without fold runs) and learning curves (empty without fractions)."""

    out_of_fold: list[dict[str, Any]]
    curves: list[Curve]


def oof_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["a", "b", "images", "mean OOF Dice a - b", "95% CI (BCa, images)", "image p",
              "Holm p", "verdict"]  # fmt: skip
    cells = [
        [
            row["a"], row["b"], _number(row.get("images")), _number(row.get("mean_difference")),
            _interval((row["ci_low"], row["ci_high"]) if row.get("ci_low") is not None else None),
            _number(row.get("p_value")), _number(row.get("p_holm")), row["verdict"],
        ]
        for row in rows
    ]  # fmt: skip
    return header, cells


def curve_table(curves: Sequence[Curve]) -> tuple[list[str], list[list[str]]]:
    header = ["curve", "training images", "fraction", "test Dice (mean ± std)", "runs"]
    cells = [
        [curve.name, f"{p.n:.0f}", f"{p.fraction:g}", str(p.summary), str(p.summary.n)]
        for curve in curves
        for p in curve.points
    ]
    return header, cells


def sections(found: Studies, table: Any, paragraph: Any, heading: Any) -> list[str]:
    """The out-of-fold and learning-curve sections, in markdown or html (the three
    callables make a table, a paragraph and a heading); none where there is nothing."""
    parts: list[str] = []
    if found.out_of_fold:
        parts += [heading("Out-of-fold comparisons"), paragraph(OOF_NOTE),
                  *table(*oof_table(found.out_of_fold))]  # fmt: skip
    if found.curves:
        parts += [heading("Learning curves"), paragraph(CURVE_NOTE),
                  *table(*curve_table(found.curves)),
                  *(paragraph(line) for line in curve_lines(found.curves))]  # fmt: skip
    return parts


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1e}" if value != 0 and abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def _interval(interval: tuple[float, float] | None) -> str:
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
