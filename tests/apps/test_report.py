"""The comparison report on synthetic run folders: statistics, groups, paired tests, files."""

import csv
import itertools
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpets import stats
from segpets.errors import SegpetsError
from segpets.report import (
    compare,
    compare_robustness,
    find_baseline,
    group_runs,
    main,
    read_runs,
    write_report,
)
from segpets.scores import TEST_SCORES, VAL_SCORES, write_scores
from segpets.studies import fit_power_law
from tests.helpers import run_segpets

IMAGES = [f"image_{i:03d}" for i in range(60)]
TRAINVAL = [f"pet_{i:03d}" for i in range(30)]
ROOT = "/data/pets"


def write_run(
    folder: Path,
    overrides: list[str],
    dice: float | None = 0.8,
    noise: float = 0.05,
    root: str = ROOT,
    seed: int = 0,
    scores: bool = True,
    epochs: int = 3,
    fold: int | None = None,
    folds: dict[str, int] | None = None,
    val_dice: dict[str, float] | None = None,
    train_images: int | None = None,
) -> Path:
    """A finished run as train.py leaves it: overrides, metrics.json, per-image test
    scores drawn around `dice` (rng seeded by `seed` and `fold`) and a CSV log of `epochs`
    epochs. A fold run (`fold`, `folds`: {stem: fold}) also writes splits/folds.csv and
    val_per_image.csv: `val_dice` of the stems in its fold, with a fold column."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    rng = np.random.default_rng(seed if fold is None else seed * 100 + fold + 1)
    if fold is not None:
        (folder / "splits").mkdir()
        rows = "".join(f"{stem},{k}\n" for stem, k in sorted(folds.items()))
        (folder / "splits" / "folds.csv").write_text(f"stem,fold\n{rows}")
        write_scores(
            folder / VAL_SCORES,
            [
                {"name": n, "dice": val_dice[n], "iou": 0.5, "true_fraction": 0.3,
                 "pred_fraction": 0.3, "fold": fold}
                for n, k in folds.items()
                if k == fold
            ],
        )  # fmt: skip
    per_image = np.clip(rng.normal(dice, noise, len(IMAGES)), 0, 1)
    if scores:
        write_scores(
            folder / TEST_SCORES,
            [
                {
                    "name": n,
                    "dice": d,
                    "iou": d / (2 - d),
                    "true_fraction": 0.3,
                    "pred_fraction": 0.3,
                }
                for n, d in zip(IMAGES, per_image, strict=True)
            ],
        )
    metrics = {
        "seed": seed,
        "precision": "32-true",
        "choices": {"model": "unet", "loss": "bce_dice"},
        "overrides": overrides,
        "parameters": 1_000_000,
        "gflops_forward": 2.5 if "model=big" in overrides else 1.0,
        "train_seconds": 30.0 + seed,
        "best_epoch": epochs - 1,
        "epochs_trained": epochs,
        "val": {"val/dice": float(per_image.mean()) - 0.01},
        "test": {"test/dice": float(per_image.mean()), "test/dice_dataset": dice, "test/iou": 0.6},
    }
    if train_images is not None:
        metrics["train_images"] = train_images
    if scores:
        metrics["test_images_per_second"] = 100.0
        metrics["test_data"] = {
            "dataset": "segpets.data.OxfordPetDataModule",
            "root": root,
            "split": "test",
            "boundary": "ignore",
            "images": len(IMAGES),
        }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "csv").mkdir()
    with open(folder / "csv" / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "step", "train/loss_epoch", "train/dice", "val/loss",
                         "val/dice", "time/train_seconds"])  # fmt: skip
        for epoch in range(epochs):
            progress = (epoch + 1) / epochs
            writer.writerow([epoch, epoch * 10, "", "", 1 - progress / 2, progress * 0.8,
                             10.0 * (epoch + 1) + seed])  # fmt: skip
            writer.writerow([epoch, epoch * 10, 1 - progress / 2, progress * 0.8] + [""] * 3)
    return folder


def write_seeds(folder: Path, overrides: list[str], seeds=(1, 2, 3), **kwargs) -> None:
    """One run per seed, numbered like a multirun's jobs after those already in `folder`."""
    start = len(list(folder.glob("*/metrics.json"))) if folder.is_dir() else 0
    for index, seed in enumerate(seeds):
        write_run(folder / str(start + index), [*overrides, f"seed={seed}"], seed=seed, **kwargs)


def write_folds(folder: Path, overrides: list[str], folds=3, seeds=(1,), fold_seed=0,
                val_shift=0.0, **kwargs) -> dict[tuple[int, int], dict[str, float]]:  # fmt: skip
    """The runs of `data.folds=K data.fold=k` for every fold and seed, each scoring its
    val fold around 0.7 + `val_shift` (per image and seed its own draw); TRAINVAL's stems in
    folds by a permutation drawn with `fold_seed`. Returns each (seed, fold) run's val Dice."""
    order = np.random.default_rng(fold_seed).permutation(len(TRAINVAL))
    assignment = {TRAINVAL[i]: int(rank % folds) for rank, i in enumerate(order)}
    start = len(list(folder.glob("*/metrics.json"))) if folder.is_dir() else 0
    written = {}
    for index, (seed, fold) in enumerate(itertools.product(seeds, range(folds))):
        rng = np.random.default_rng(1000 * seed + fold)
        val = {n: float(0.7 + val_shift + rng.normal(0, 0.05)) for n in TRAINVAL}
        write_run(folder / str(start + index), [*overrides, f"data.folds={folds}",
                  f"data.fold={fold}", f"seed={seed}"], seed=seed, fold=fold,
                  folds=assignment, val_dice=val, **kwargs)  # fmt: skip
        written[(seed, fold)] = {n: d for n, d in val.items() if assignment[n] == fold}
    return written


def groups_of(folder: Path, evals=()):
    return group_runs(read_runs(folder, evals).rows)


def write_robustness_per_image(folder: Path, clean: dict[str, float], corrupted) -> None:
    """robustness_per_image.csv as eval writes it: the clean rows (severity 0), then a row
    per (image, corruption, severity) with Dice corrupted[(name, corruption, severity)]."""
    rows = [(n, "clean", 0, d) for n, d in clean.items()]
    rows += [(n, c, k, d) for (n, c, k), d in corrupted.items()]
    with open(folder / "robustness_per_image.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "corruption", "severity", "dice", "iou"])
        writer.writerows([n, c, k, d, d / (2 - d)] for n, c, k, d in rows)


def write_eval(folder: Path, train_run: Path, root: str = ROOT, dice: float = 0.8,
               corrupted=None, overrides=(), record_run: bool = True) -> Path:  # fmt: skip
    """An eval run as `python -m segpets.eval ckpt_path=TRAIN_RUN/checkpoints/best.ckpt`
    leaves it: every test image scores `dice`; with `corrupted` (a function of image,
    corruption, severity; 2 corruptions x severities 1, 2) robustness_per_image.csv.
    `record_run=False`: an eval from before metrics.json named its training run."""
    (folder / ".hydra").mkdir(parents=True)
    ckpt = train_run / "checkpoints" / "best.ckpt"
    named = [f"ckpt_path={ckpt}", *overrides, *(["corruptions=standard"] if corrupted else [])]
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in named))
    write_scores(folder / "per_image.csv", [
        {"name": n, "dice": dice, "iou": 0.6, "true_fraction": 0.3, "pred_fraction": 0.3}
        for n in IMAGES
    ])  # fmt: skip
    metrics = {
        "dice": dice, "dice_dataset": dice, "iou": 0.6, "images": len(IMAGES), "split": "test",
        "checkpoint": str(ckpt), "data_root": root,
        "test_data": {"dataset": "segpets.data.OxfordPetDataModule", "root": root,
                      "split": "test", "boundary": "ignore", "images": len(IMAGES)},
    }  # fmt: skip
    if record_run:
        metrics["train_run"] = str(train_run)
    if corrupted is not None:
        cells = itertools.product(IMAGES, ("gaussian_noise", "jpeg"), (1, 2))
        write_robustness_per_image(
            folder, dict.fromkeys(IMAGES, dice), {c: corrupted(*c) for c in cells}
        )
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


# --- Statistics -------------------------------------------------------------------------


def test_mean_std_over_seeds_leaves_missing_values_out():
    summary = stats.mean_std([0.7, None, 0.9])
    assert summary.mean == pytest.approx(0.8) and summary.n == 2
    assert summary.std == pytest.approx(np.sqrt(0.02))  # sample std: ((0.1² + 0.1²) / 1) ** 0.5
    assert stats.mean_std([0.5]).std is None and stats.mean_std([None]).mean is None


def test_bootstrap_interval_holds_the_mean_narrows_with_data_and_repeats():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.8, 0.1, 20), rng.normal(0.8, 0.1, 500)
    for values in (small, large):
        low, high = stats.mean_ci(values)
        assert low < values.mean() < high
    assert np.diff(stats.mean_ci(large)) < np.diff(stats.mean_ci(small))
    assert stats.mean_ci(small) == stats.mean_ci(small)  # fixed seed: the same interval
    assert stats.mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5) and stats.mean_ci([0.5]) is None


def exact_wilcoxon_p(differences: list[float]) -> float:
    """Two-sided exact signed-rank p by enumerating every sign pattern (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(differences))) + 1
    observed = sum(r for r, d in zip(ranks, differences, strict=True) if d > 0)
    sums = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s)
        for signs in itertools.product((0, 1), repeat=len(differences))
    ]
    low = sum(s <= observed for s in sums) / len(sums)
    high = sum(s >= observed for s in sums) / len(sums)
    return min(1.0, 2 * min(low, high))


@pytest.mark.parametrize(
    ("differences", "by_hand"),
    [
        ([0.1, 0.2, 0.3, 0.4, 0.5], 2 / 32),  # all positive: only 1 of 32 patterns as extreme
        ([0.1, 0.2, -0.3, 0.4, 0.5, 0.6], 10 / 64),  # W- = 3: {}, {1}, {2}, {3}, {1,2} ≤ 3
    ],
)
def test_wilcoxon_p_is_the_exact_value_by_enumeration(differences, by_hand):
    b = np.full(len(differences), 0.5)
    result = stats.paired(b + np.array(differences), b)
    assert exact_wilcoxon_p(differences) == pytest.approx(by_hand)
    assert result.p_value == pytest.approx(by_hand)
    assert result.mean_difference == pytest.approx(np.mean(differences))
    assert result.n == len(differences) and "Wilcoxon" in result.test and "BCa" in result.ci_method


def test_identical_scores_give_p_one():
    result = stats.paired([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert result.p_value == 1.0 and result.mean_difference == 0.0 and result.ci == (0.0, 0.0)


def test_holm_by_hand():
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04; kept non-decreasing: 0.06.
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert stats.holm([0.02]) == [0.02] and stats.holm([]) == []


def scores(rng, seeds, images=40, mean=0.8, seed_sd=0.0, image_sd=0.1, noise=0.05, effects=None):
    """A seeds x images table: mean + a seed effect + an image effect (`effects`: the same
    images as another table's) + noise, as test Dice of networks trained with other seeds."""
    image_effects = rng.normal(0, image_sd, images) if effects is None else effects
    table = (
        mean
        + rng.normal(0, seed_sd, (seeds, 1))
        + image_effects
        + rng.normal(0, noise, (seeds, images))
    )
    return table, image_effects


def configuration_verdict(a, b, paired_seeds=False):
    result = stats.compare_tables(a, b, paired_seeds)
    return stats.decide(result, result.p_value)[0], result


def test_seed_variance_without_a_true_difference_rarely_gets_a_verdict():
    """Large seed spread, equal configurations: "better" in at most about 5 % of draws,
    where the images-only test (what the report did before) calls most of them."""
    rng = np.random.default_rng(0)
    draws, better, images_only = 100, 0, 0
    for _ in range(draws):
        a, effects = scores(rng, 3, seed_sd=0.08)
        b, _ = scores(rng, 3, seed_sd=0.08, effects=effects)
        direction, result = configuration_verdict(a, b)
        assert result.level == stats.CONFIGURATION
        better += direction != 0
        images_only += result.image_p < stats.ALPHA
    assert better / draws <= 0.08
    assert images_only / draws > 0.5


def test_a_difference_larger_than_the_seed_spread_is_found_with_five_seeds():
    """A difference of 0.1 at a seed spread of 0.03: found in nearly every draw (the power
    estimate says 3 seeds a group suffice), never the wrong way round."""
    rng = np.random.default_rng(1)
    for paired_seeds in (False, True):
        found = []
        for _ in range(20):
            a, effects = scores(rng, 5, mean=0.85, seed_sd=0.03)
            b, _ = scores(rng, 5, mean=0.75, seed_sd=0.03, effects=effects)
            found.append(configuration_verdict(a, b, paired_seeds)[0])
            assert configuration_verdict(b, a, paired_seeds)[0] == -found[-1]
        assert found.count(1) >= 18 and -1 not in found


def width(interval):
    return interval[1] - interval[0]


def test_the_two_level_interval_widens_with_seed_spread_only():
    rng = np.random.default_rng(2)
    spread, effects = scores(rng, 5, seed_sd=0.05)
    same, _ = scores(rng, 5, seed_sd=0.0, noise=0.0, effects=effects)
    images_only = stats.mean_ci(spread.mean(axis=0))
    # Seed variance 0.05² / 5 on top of the images' 0.1² / 40: about sqrt(3) times as wide.
    assert width(stats.two_level_ci(spread)) > 1.4 * width(images_only)
    # Seeds that agree: the seed draw changes nothing; within noise of the images-only BCa.
    ratio = width(stats.two_level_ci(same)) / width(stats.mean_ci(same.mean(axis=0)))
    assert 0.9 < ratio < 1.1
    low, high = stats.two_level_ci(spread)
    assert low < spread.mean() < high


def test_two_level_bootstrap_variance_is_the_pigeonhole_formula_by_hand():
    """Rows and columns drawn independently: the variance of the resampled mean is
    var(row means)/k + var(column means)/n + var(residuals)/(k n), variances with ddof 0."""
    table = np.array([[0.9, 0.7, 0.8, 0.6], [0.5, 0.4, 0.7, 0.2], [0.8, 0.9, 0.6, 0.7]])
    k, n = table.shape
    rows = table.mean(axis=1) - table.mean()
    columns = table.mean(axis=0) - table.mean()
    residuals = table - table.mean() - rows[:, None] - columns[None, :]
    by_hand = (rows**2).mean() / k + (columns**2).mean() / n + (residuals**2).mean() / (k * n)
    draws = stats.two_level_draws([table], [1.0], seed=0, resamples=200_000)
    assert draws.mean() == pytest.approx(table.mean(), abs=1e-3)
    assert draws.var() == pytest.approx(by_hand, rel=0.03)
    # A difference of two groups with other seeds: the seeds are drawn for each, the images
    # once for both, so the row and residual terms add up and the column effects the two
    # tables share (here all: reversing the rows keeps the column means) cancel.
    other = table[::-1] - 0.1
    draws = stats.two_level_draws([table, other], [1.0, -1.0], seed=0, resamples=200_000)
    assert draws.mean() == pytest.approx(0.1, abs=1e-3)
    by_hand = 2 * (rows**2).mean() / k + 2 * (residuals**2).mean() / (k * n)
    assert draws.var() == pytest.approx(by_hand, rel=0.03)


def test_seed_level_test_and_seeds_needed_by_hand():
    # Differences 0.02, 0.03, 0.04: mean 0.03, sd 0.01, t = 0.03 / (0.01 / sqrt 3) with 2
    # degrees of freedom, whose two-sided p is 1 - t / sqrt(2 + t^2).
    result = stats.seed_test([0.82, 0.84, 0.86], [0.80, 0.81, 0.82], paired_seeds=True)
    t = 0.03 / (0.01 / np.sqrt(3))
    assert result.p_value == pytest.approx(1 - t / np.sqrt(2 + t * t))
    assert result.spread == pytest.approx((0.01,)) and result.test == stats.SEED_TEST_PAIRED
    assert stats.seed_test([0.8], [0.7, 0.6], paired_seeds=False) is None
    # The smallest n with n >= ((t(0.975, df) + t(0.8, df)) * sd / d)^2: df = n - 1 paired,
    # 2n - 2 for two groups' spreads; never fewer than 3.
    from scipy.stats import t as student

    def enough(n, sd, groups):
        df = groups * (n - 1)
        return n >= ((student.ppf(0.975, df) + student.ppf(0.8, df)) * sd / 0.01) ** 2

    for spread in ([0.02], [0.012, 0.016]):
        n = stats.seeds_needed(0.01, spread)
        sd = float(np.hypot(*spread)) if len(spread) == 2 else spread[0]
        assert enough(n, sd, len(spread)) and not enough(n - 1, sd, len(spread))
        assert 32 < n < 36  # the normal approximation's 31.4, a little more for t
    assert stats.seeds_needed(0.5, [0.01]) == stats.MIN_SEEDS
    assert stats.seeds_needed(0.0, [0.01]) is None


def test_decide_names_the_level_that_lacks_evidence():
    def comparison(seeds, ci, seed_p, image_p=0.001):
        seed = stats.SeedTest(stats.SEED_TEST_PAIRED, seed_p, (0.01,))
        return stats.GroupComparison((seeds, seeds), 40, True, 0.02, ci, image_p, seed)

    assert stats.decide(comparison(3, (0.01, 0.03), 0.01), 0.01) == (1, [])
    direction, lacking = stats.decide(comparison(3, (-0.01, 0.03), 0.01), 0.01)
    assert direction == 0 and lacking == [
        "the image level (two-level interval [-0.0100, 0.0300] holds 0)"
    ]
    direction, lacking = stats.decide(comparison(3, (0.01, 0.03), 0.2), 0.2)
    assert direction == 0 and lacking[0].startswith("the seed level (paired t-test over 3 shared")
    # Two seeds: the trained models, on the image-level p alone.
    assert comparison(2, (-0.01, 0.03), 0.5).level == stats.TRAINED_MODELS
    assert stats.decide(comparison(2, (-0.01, 0.03), 0.5), 0.001) == (1, [])


def test_missing_scipy_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)  # `from scipy import stats` fails
    with pytest.raises(SegpetsError, match=r"python -m pip install scipy"):
        stats.paired([0.1, 0.2], [0.2, 0.1])


# --- Groups and comparisons -------------------------------------------------------------


def test_runs_that_differ_only_in_seed_form_one_group(tmp_path):
    write_seeds(tmp_path, ["model=unet"])
    [group] = groups_of(tmp_path)
    assert len(group.finished) == 3 and group.key == ("model=unet",)
    write_seeds(tmp_path, ["model=unet", "loss=dice"], seeds=(1,))
    groups = groups_of(tmp_path)
    assert sorted(len(g.runs) for g in groups) == [1, 3]
    # Named by what sets them apart; the left-out loss is looked up in the run's choices.
    assert {g.name for g in groups} == {"loss=dice", "loss=bce_dice"}


def test_a_large_difference_is_found_and_equal_draws_are_not(tmp_path):
    write_seeds(tmp_path, ["model=big"], dice=0.9)
    write_seeds(tmp_path, ["model=small"], dice=0.7, seeds=(4, 5, 6))
    write_seeds(tmp_path, ["model=twin"], dice=0.7, seeds=(7, 8, 9))
    groups = groups_of(tmp_path)
    assert groups[0].name == "model=big"  # the best mean val Dice first
    verdicts = {(row["a"], row["b"]): row for row in compare(groups)}
    assert len(verdicts) == 3 and all(row["images"] == 60 for row in verdicts.values())
    for small in ("model=small", "model=twin"):
        row = verdicts[("model=big", small)]
        assert row["verdict"] == f"model=big better than {small}"
        assert row["ci_low"] < row["mean_difference"] < row["ci_high"]
        assert row["mean_difference"] == pytest.approx(0.2, abs=0.02)
    [twins] = [row for key, row in verdicts.items() if "model=big" not in key]
    assert twins["verdict"].startswith("no difference detectable at this n (no evidence at")
    assert twins["p_holm"] >= twins["p_value"]
    # The group's interval over images brackets its mean test Dice.
    low, high = groups[0].summary["test_dice_ci"]
    assert low < groups[0].summary["test_dice"].mean < high


def write_spread(folder: Path, model: str, seeds_and_dice, noise=0.05) -> None:
    """Runs of `model=NAME` whose seeds train networks of different quality: seed s scores
    around its own dice (the issue's UNet: 0.20 and 0.52)."""
    start = len(list(folder.glob("*/.hydra"))) if folder.is_dir() else 0
    for index, (seed, dice) in enumerate(seeds_and_dice):
        write_run(folder / str(start + index), [f"model={model}", f"seed={seed}"], dice=dice,
                  seed=seed, noise=noise)  # fmt: skip


def test_seeds_are_pooled_per_image_and_two_seeds_speak_for_the_trained_models_only(tmp_path):
    """The issue's case: two seeds a group, far apart; the images alone would call UNet
    better, the report says for which models it holds and which seeds to add."""
    write_spread(tmp_path, "unet", [(1, 0.20), (2, 0.52)])
    write_spread(tmp_path, "resnet34_unet", [(1, 0.13), (2, 0.38)])
    groups = {group.name: group for group in groups_of(tmp_path)}
    unet = groups["model=unet"]
    one, two = (read_scores_of(tmp_path / str(i)) for i in (0, 1))
    assert unet.image_dice == pytest.approx({n: (one[n] + two[n]) / 2 for n in IMAGES})
    means = [np.mean(list(one.values())), np.mean(list(two.values()))]
    assert unet.summary["test_dice"].mean == pytest.approx(np.mean(means))
    low, high = unet.summary["test_dice_ci"]  # no narrower than the seeds' own spread
    assert low < min(means) + 0.02 and high > max(means) - 0.02
    [row] = compare(list(groups.values()))
    assert row["mean_difference"] == pytest.approx(
        unet.summary["test_dice"].mean - groups["model=resnet34_unet"].summary["test_dice"].mean
    )
    assert row["level"] == stats.TRAINED_MODELS and row["pairing"] == "by seed and image"
    assert row["verdict"] == (
        "model=unet better than model=resnet34_unet for these trained models only (seeds "
        "model=unet: 2, model=resnet34_unet: 2; add seed=3,4 for a verdict on the configuration)"
    )  # seed differences 0.07 and 0.14: 4 seeds detect their mean at their spread
    # Paired by seed: the interval of a - b spans the two seeds' own differences.
    assert row["ci_low"] < 0.07 + 0.02 and row["ci_high"] > 0.14 - 0.02


def read_scores_of(run: Path) -> dict[str, float]:
    with open(run / TEST_SCORES) as f:
        return {row["name"]: float(row["dice"]) for row in csv.DictReader(f)}


def test_three_seeds_without_a_seed_level_difference_get_no_verdict_and_a_seed_count(tmp_path):
    write_spread(tmp_path, "unet", [(1, 0.70), (2, 0.80), (3, 0.75)])
    write_spread(tmp_path, "fpn", [(1, 0.74), (2, 0.72), (3, 0.78)])
    [row] = compare(groups_of(tmp_path))
    assert row["level"] == stats.CONFIGURATION and row["seed_test"] == stats.SEED_TEST_PAIRED
    assert row["p_images"] < 0.05 < row["p_holm"]  # the images alone would have called it
    assert row["verdict"].startswith(
        "no difference detectable at this n (no evidence at the seed level (paired t-test "
        "over 3 shared seeds, Holm p"
    )
    needed = row["seeds_needed"]
    assert needed > 3 and f"about {needed} seeds a group would detect" in row["verdict"]


def test_groups_with_other_seeds_pair_by_image_only_and_unfinished_seeds_are_named(tmp_path):
    write_seeds(tmp_path, ["model=big"], dice=0.9)
    write_seeds(tmp_path, ["model=small"], dice=0.7, seeds=(4, 5, 6))
    unfinished = tmp_path / "6"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "overrides.yaml").write_text("- model=small\n- seed=7\n")
    (unfinished / ".hydra" / "config.yaml").write_text("seed: 7\n")  # as Hydra writes at start
    paths = write_report(tmp_path)
    with open(paths["comparisons"]) as f:
        [row] = list(csv.DictReader(f))
    assert row["pairing"] == "by image only (seeds 1,2,3 vs 4,5,6)"
    assert row["seed_test"] == stats.SEED_TEST_UNPAIRED and row["level"] == stats.CONFIGURATION
    assert row["verdict"] == "model=big better than model=small"
    markdown = paths["md"].read_text()
    assert "1 comparison paired by image only: the groups ran different seeds" in markdown
    assert "Left out: 6 (model=small, seed 7: unfinished or failed)." in markdown


def test_a_run_without_per_image_scores_is_listed_but_not_paired(tmp_path):
    write_seeds(tmp_path, ["model=unet"], seeds=(1, 2))
    write_seeds(tmp_path, ["model=old"], seeds=(1,), scores=False)
    paths = write_report(tmp_path)
    markdown = paths["md"].read_text()
    assert (
        "no paired test: model=old has no test_per_image.csv "
        "(trained before segpets wrote per-image scores)" in markdown
    )
    with open(paths["groups"]) as f:
        assert {row["group"]: row["seeds"] for row in csv.DictReader(f)} == {
            "model=unet": "2",
            "model=old": "1",
        }


def test_different_test_sets_are_not_paired_and_both_roots_are_named(tmp_path):
    write_seeds(tmp_path, ["data.root=/a/pets"], root="/a/pets")
    write_seeds(tmp_path, ["data.root=/b/pets"], root="/b/pets")
    [row] = compare(groups_of(tmp_path))
    assert "p_value" not in row and row["verdict"].startswith("not paired: different test sets")
    for root in ("/a/pets", "/b/pets"):  # each group by name, and where it was tested
        assert f"data.root={root} " in row["verdict"] and f" {root} (test split" in row["verdict"]


def test_one_group_has_nothing_to_compare(tmp_path):
    write_seeds(tmp_path, ["model=unet"], seeds=(1, 2))
    paths = write_report(tmp_path)
    assert "one group: nothing to compare" in paths["md"].read_text()
    assert paths["comparisons"].read_text().count("\n") == 1  # the header only


def test_a_baseline_is_compared_with_each_other_group_only(tmp_path, capsys):
    for model in ("unet", "fpn", "deeplab"):
        write_seeds(tmp_path, [f"model={model}"], seeds=(1, 2))
    main([str(tmp_path), "report.baseline=fpn"])  # part of a group's name will do
    with open(tmp_path / "comparisons.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["a"], r["b"]) for r in rows} == {
        ("model=unet", "model=fpn"),
        ("model=deeplab", "model=fpn"),
    }
    assert "Holm correction applied over 2 comparisons" in (tmp_path / "report.md").read_text()
    groups = groups_of(tmp_path)
    assert {r["b"] for r in compare(groups, find_baseline(groups, "model=deeplab"))} == {
        "model=deeplab"
    }
    capsys.readouterr()
    for option, message in (
        ("baseline=resnet", "matches no group"),
        ("baseline=model=", "matches several groups"),
        ("base=unet", "unknown option"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main([str(tmp_path), option])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"segpets: error: {option}") and message in err


class Page(HTMLParser):
    """The text and the image sources of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_the_html_report_is_one_page_naming_every_group_with_images_inline(tmp_path):
    write_seeds(tmp_path, ["model=unet", "loss=dice"], seeds=(1, 2))
    write_seeds(tmp_path, ["model=unet", "loss=bce"], seeds=(1, 2))
    write_seeds(tmp_path, ["model=fpn", "loss=dice"], seeds=(1,))
    Image.new("RGB", (8, 8), "magenta").save(tmp_path / "0" / "worst.png")  # loss=dice model=unet
    paths = write_report(tmp_path)
    page = Page()
    page.feed(paths["html"].read_text())
    page.close()
    text = " ".join(page.text)
    for name in ("loss=dice model=unet", "loss=bce model=unet", "loss=dice model=fpn"):
        assert name in text
    assert len(page.images) == 3 and all(  # curves, pareto and one worst.png
        src.startswith("data:image/png;base64,") for src in page.images
    )
    assert "image_" in text  # a group without worst.png lists its worst images by name
    for figure in ("curves", "pareto"):
        assert paths[figure].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(paths["csv"]) as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 5 and {r["group"] for r in runs} == {
        "loss=dice model=unet",
        "loss=bce model=unet",
        "loss=dice model=fpn",
    }


def test_a_folder_without_runs_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"segpets: error: no runs under {tmp_path}")


def test_seed_verdict_script_prints_the_reports_seed_level_test(capsys):
    """scripts/seed_verdict.py: the report's seed-level half, for docs' per-seed figures."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "seed_verdict.py"
    spec = importlib.util.spec_from_file_location("seed_verdict", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    a, b = [0.82, 0.84, 0.86], [0.80, 0.81, 0.82]
    script.main(["--a", *map(str, a), "--b", *map(str, b), "--paired", "--holm", "2"])
    out = capsys.readouterr().out
    p = stats.seed_test(a, b, paired_seeds=True).p_value
    assert "mean a - b over seeds: +0.0300" in out
    assert f"paired t-test: p = {p:.2g} (x2 comparisons: {2 * p:.2g})" in out
    assert "level: configuration; the seed level does not support a verdict" in out  # 0.07
    script.main(["--a", *map(str, a), "--b", *map(str, b), "--paired"])
    assert "level: configuration; the seed level supports a verdict" in capsys.readouterr().out
    script.main(["--a", "0.8", "0.7", "--b", "0.8", "0.6"])
    out = capsys.readouterr().out
    assert "Welch t-test" in out and "does not support a verdict (fewer than 3 seeds" in out
    with pytest.raises(SystemExit):
        script.main(["--a", "0.8", "0.7", "--b", "0.8", "--paired"])
    assert "--paired needs as many a as b values, got 2 and 1" in capsys.readouterr().err


# --- Folds and learning curves ----------------------------------------------------------


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_folds_group_like_seeds_and_pool_out_of_fold_scores_by_hand(tmp_path):
    """3 folds x 2 seeds: one group named without data.fold; out-of-fold Dice per image is
    the mean over seeds of the fold that held it out, over all 30 train+val images."""
    val = write_folds(tmp_path, ["model=unet"], seeds=(1, 2))
    [group] = groups_of(tmp_path)
    assert group.name == "model=unet" and group.key == ("data.folds=3", "model=unet")
    assert len(group.finished) == 6 and {run["fold"] for run in group.runs} == {0, 1, 2}
    by_hand = {n: (sum(v.get(n, 0) for (s, _), v in val.items() if s == 1)
                   + sum(v.get(n, 0) for (s, _), v in val.items() if s == 2)) / 2
               for n in TRAINVAL}  # fmt: skip
    assert group.out_of_fold.dice == pytest.approx(by_hand)
    # The group's test interval resamples its 6 (seed, fold) runs, as it does seeds.
    assert len(group.table(IMAGES)) == 6
    paths = write_report(tmp_path)
    [row] = read_csv_rows(paths["groups"])
    assert float(row["oof_dice"]) == pytest.approx(np.mean(list(by_hand.values())))
    assert float(row["oof_dice_ci_low"]) < float(row["oof_dice"]) < float(row["oof_dice_ci_high"])
    assert (row["seeds"], row["folds"], row["oof_images"]) == ("6", "3", "30")
    markdown = paths["md"].read_text()
    assert "| 6 (2 seeds x 3 folds) |" in markdown and "(out-of-fold, over 30 images)" in markdown
    assert {r["fold"] for r in read_csv_rows(paths["csv"])} == {"0", "1", "2"}


def test_one_seed_of_three_folds_by_hand(tmp_path):
    """With one seed, the out-of-fold mean is the mean of the pooled val rows."""
    write_folds(tmp_path, ["model=unet"])
    pooled = [float(r["dice"]) for run in sorted(tmp_path.glob("*/"))
              for r in read_csv_rows(run / VAL_SCORES)]  # fmt: skip
    assert len(pooled) == len(TRAINVAL)
    paths = write_report(tmp_path)
    [row] = read_csv_rows(paths["groups"])
    assert float(row["oof_dice"]) == pytest.approx(sum(pooled) / len(pooled))
    assert "| **model=unet** | 3 folds |" in paths["md"].read_text()
    assert "oof_comparisons" not in paths  # one group: nothing to compare


def test_groups_with_the_same_folds_pair_fold_by_fold(tmp_path):
    val_a = write_folds(tmp_path, ["model=unet"], dice=0.85, val_shift=0.1)
    val_b = write_folds(tmp_path, ["model=fpn"], dice=0.75)
    groups = groups_of(tmp_path)
    [row] = compare(groups)
    assert row["pairing"] == "by fold and image" and (row["seeds_a"], row["seeds_b"]) == (3, 3)
    assert row["level"] == stats.CONFIGURATION and row["seed_test"] == stats.SEED_TEST_PAIRED
    paths = write_report(tmp_path)
    [oof] = read_csv_rows(paths["oof_comparisons"])
    a = {n: d for v in val_a.values() for n, d in v.items()}
    b = {n: d for v in val_b.values() for n, d in v.items()}
    assert (oof["a"], oof["b"], oof["images"]) == ("model=unet", "model=fpn", "30")
    assert float(oof["mean_difference"]) == pytest.approx(np.mean([a[n] - b[n] for n in a]))
    assert float(oof["p_holm"]) == pytest.approx(float(oof["p_value"]))  # one comparison
    assert oof["verdict"].startswith("model=unet better than model=fpn out of fold")
    markdown = paths["md"].read_text()
    assert "## Out-of-fold comparisons" in markdown and "Folds count as seeds" in markdown


def test_groups_with_other_folds_are_not_paired_out_of_fold_and_say_why(tmp_path):
    write_folds(tmp_path, [], folds=3, dice=0.9)
    write_folds(tmp_path, [], folds=5, dice=0.7)
    [row] = compare(groups_of(tmp_path))
    assert (row["a"], row["b"]) == ("data.folds=3", "data.folds=5")  # by val Dice
    assert row["pairing"] == "by image only (seed/fold 1/0,1/1,1/2 vs 1/0,1/1,1/2,1/3,1/4)"
    paths = write_report(tmp_path)
    [oof] = read_csv_rows(paths["oof_comparisons"])
    assert oof["mean_difference"] == "" and oof["verdict"] == (
        "not paired: different folds: data.folds=3 split 3 folds over 30 images, data.folds=5 "
        "5 folds over 30 images, and their splits/folds.csv differ (data.folds, "
        "data.fold_seed or the train+val pool)"
    )
    # The same number of folds, drawn with another fold seed: not paired fold by fold either.
    other = tmp_path / "other"
    write_folds(other, ["data.fold_seed=0"])
    write_folds(other, ["data.fold_seed=1"], fold_seed=1)
    [row] = compare(groups_of(other))
    assert row["pairing"].startswith("by image only (the same fold numbers, but other folds")
    assert "not paired: different folds" in write_report(other)["md"].read_text()


def test_power_law_fit_recovers_exact_points():
    n = [20, 40, 80]
    a, b = fit_power_law(n, [0.5 * x**-0.3 for x in n])
    assert (a, b) == (pytest.approx(0.5), pytest.approx(0.3))


def test_fractions_form_a_learning_curve_with_a_power_law_estimate(tmp_path):
    """err = 0.5 n^-0.3 at n = 20, 40, 80 (three seeds each, no noise): the curve's fit
    recovers a and b, and its estimate at 2x data is 1 - 0.5 * 160^-0.3."""
    for fraction, n in ((0.25, 20), (0.5, 40), (1.0, 80)):
        overrides = [f"data.train_fraction={fraction}"] if fraction != 1 else []
        write_seeds(tmp_path, overrides, dice=1 - 0.5 * n**-0.3, noise=0.0,
                    train_images=None if n == 20 else n)  # fmt: skip
    for run in [
        p for p in tmp_path.glob("*/") if "0.25" in (p / ".hydra/overrides.yaml").read_text()
    ]:
        (run / "splits").mkdir()  # n from splits/train.txt where metrics.json has none
        (run / "splits" / "train.txt").write_text("".join(f"pet_{i}\n" for i in range(20)))
    paths = write_report(tmp_path)
    rows = read_csv_rows(paths["learning_curve_csv"])
    assert [(r["curve"], float(r["n"]), float(r["fraction"]), r["runs"]) for r in rows] == [
        ("all runs", 20.0, 0.25, "3"), ("all runs", 40.0, 0.5, "3"), ("all runs", 80.0, 1.0, "3")
    ]  # fmt: skip
    for row, n in zip(rows, (20, 40, 80), strict=True):
        assert float(row["mean"]) == pytest.approx(1 - 0.5 * n**-0.3)
        assert float(row["fit_a"]) == pytest.approx(0.5) and float(row["fit_b"]) == pytest.approx(
            0.3
        )
    estimate = 1 - 0.5 * 160**-0.3
    assert float(rows[0]["estimate_2x"]) == pytest.approx(estimate)
    markdown = paths["md"].read_text()
    assert "## Learning curves" in markdown
    assert f"about {estimate:.2f} at 2x data, n = 160 (power-law estimate)" in markdown
    assert paths["learning_curve"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "learning curves" in paths["html"].read_text()


def test_two_sizes_get_no_fit_and_no_fractions_no_learning_curve(tmp_path):
    for fraction, n in ((0.5, 40), (1.0, 80)):
        write_seeds(tmp_path, ["model=unet", f"data.train_fraction={fraction}"],
                    dice=0.8, train_images=n)  # fmt: skip
    paths = write_report(tmp_path)
    assert [r["fit_a"] for r in read_csv_rows(paths["learning_curve_csv"])] == ["", ""]
    assert "2 training-set sizes; a power law needs at least 3" in paths["md"].read_text()
    plain = tmp_path / "plain"
    write_seeds(plain, ["model=unet"])
    write_seeds(plain, ["model=fpn"])
    paths = write_report(plain)
    assert "learning_curve" not in paths and not (plain / "learning_curve.png").exists()
    assert not (plain / "learning_curve.csv").exists()
    assert "oof_comparisons" not in paths and not (plain / "oof_comparisons.csv").exists()
    for text in (paths["md"].read_text(), paths["html"].read_text()):
        assert "earning curve" not in text and "ut-of-fold" not in text


def test_two_folds_speak_for_the_trained_models_and_suggest_seeds_on_every_fold(tmp_path):
    write_folds(tmp_path, ["model=unet"], folds=2, dice=0.85)
    write_folds(tmp_path, ["model=fpn"], folds=2, dice=0.75)
    [row] = compare(groups_of(tmp_path))
    assert row["level"] == stats.TRAINED_MODELS and row["pairing"] == "by fold and image"
    assert row["verdict"] == (
        "model=unet better than model=fpn for these trained models only (seeds model=unet: 2, "
        "model=fpn: 2; add seed=2 on every fold for a verdict on the configuration)"
    )  # 3 runs a group: 2 seeds x 2 folds


# --- Robustness and shift ---------------------------------------------------------------


def test_a_groups_mean_corruption_dice_and_relative_robustness_by_hand(tmp_path):
    """Seed 1's model keeps 0.6 under every corruption, seed 2's 0.5 at severity 1 and 0.3
    at 2, both 0.8 clean: mean corruption Dice 0.6 and 0.4, relative 0.75 and 0.5."""
    write_seeds(tmp_path, ["model=unet"], seeds=(1, 2))
    write_eval(tmp_path / "0" / "eval", tmp_path / "0", corrupted=lambda n, c, k: 0.6)
    write_eval(tmp_path / "1" / "eval", tmp_path / "1", corrupted=lambda n, c, k: 0.7 - 0.2 * k)
    [group] = groups_of(tmp_path)
    assert len(group.runs) == 2  # the evals are no runs of their own
    found = group.summary["robustness"]
    assert found.mean_corruption_dice.mean == pytest.approx(0.5)
    assert found.mean_corruption_dice.std == pytest.approx(np.std([0.6, 0.4], ddof=1))
    assert found.relative_robustness.mean == pytest.approx((0.75 + 0.5) / 2)
    assert found.relative_robustness.std == pytest.approx(np.std([0.75, 0.5], ddof=1))
    paths = write_report(tmp_path)
    [row] = read_csv_rows(paths["groups"])
    assert float(row["mean_corruption_dice"]) == pytest.approx(0.5)
    assert float(row["relative_robustness"]) == pytest.approx(0.625)
    assert row["robustness_runs"] == "2"
    runs = {r["seed"]: r for r in read_csv_rows(paths["csv"])}
    assert float(runs["2"]["mean_corruption_dice"]) == pytest.approx(0.4)
    markdown = paths["md"].read_text()
    assert "| corruption Dice | relative robustness |" in markdown
    assert "| 0.5000 ± 0.1414 | 0.6250 ± 0.1768 |" in markdown
    assert "## Robustness comparisons" in markdown and "nothing to compare" in markdown


def robust_groups(folder: Path, effects: dict[str, float], seed_effect: dict[int, float]):
    """3 seeds a model; each run's eval placed beside the runs (matched by checkpoint): an
    image's corrupted Dice is its own base plus the model's and the seed's effect, minus
    0.1 a severity."""
    base = {n: 0.5 + 0.2 * np.sin(i) for i, n in enumerate(IMAGES)}
    for model, effect in effects.items():
        start = len(list(folder.glob("*/metrics.json"))) if folder.is_dir() else 0
        write_seeds(folder, [f"model={model}"])
        for index, seed in enumerate((1, 2, 3)):

            def corrupted(n, c, k, shift=effect + seed_effect[seed]):
                return base[n] + shift - 0.1 * k

            write_eval(folder / "evals" / f"{model}_{seed}", folder / str(start + index),
                       corrupted=corrupted)  # fmt: skip
    return base


def robustness_table(folder: Path, model: str) -> list[list[float]]:
    """Seeds x images of each image's mean corrupted Dice, read back from the files."""
    table = []
    for seed in (1, 2, 3):
        rows = read_csv_rows(folder / "evals" / f"{model}_{seed}" / "robustness_per_image.csv")
        table.append([np.mean([float(r["dice"]) for r in rows if r["name"] == n
                               and r["corruption"] != "clean"]) for n in IMAGES])  # fmt: skip
    return table


def test_robustness_comparison_pairs_by_image_and_seed_with_the_seed_level_verdict(tmp_path):
    robust_groups(tmp_path, {"a": 0.05, "b": 0.0, "c": 0.04}, {1: 0.0, 2: 0.01, 3: -0.005})
    groups = {g.name: g for g in groups_of(tmp_path)}
    rows = {(r["a"], r["b"]): r for r in compare_robustness(list(groups.values()), None)}
    row = rows[("model=a", "model=b")]
    assert row["pairing"] == "by seed and image" and row["images"] == len(IMAGES)
    by_hand = stats.compare_tables(
        robustness_table(tmp_path, "a"), robustness_table(tmp_path, "b"), paired_seeds=True
    )
    assert row["mean_difference"] == pytest.approx(0.05) == pytest.approx(by_hand.mean_difference)
    assert row["p_seeds"] == pytest.approx(by_hand.seed.p_value)
    assert row["level"] == stats.CONFIGURATION and row["seed_test"] == stats.SEED_TEST_PAIRED
    assert row["p_holm"] == pytest.approx(min(1, stats.holm([r["p_value"] for r in rows.values()])[
        list(rows).index(("model=a", "model=b"))]))  # fmt: skip
    assert row["verdict"] == "model=a better than model=b"
    paths = write_report(tmp_path)
    written = read_csv_rows(paths["robustness_comparisons"])
    assert {(r["a"], r["b"]) for r in written} == set(rows)
    markdown = paths["md"].read_text()
    assert "Holm correction applied over 3 comparisons." in markdown
    assert "| mean corruption Dice a - b |" in markdown


def test_a_robustness_difference_within_the_seed_spread_gets_no_verdict(tmp_path):
    """Every image 0.02 better under a's corruptions, but a's seeds swing by more: the
    images alone would call it, the seed-level rule does not."""
    base = {n: 0.5 + 0.2 * np.sin(i) for i, n in enumerate(IMAGES)}
    swings = {"a": {1: 0.12, 2: -0.08, 3: 0.02}, "b": {1: 0.0, 2: 0.0, 3: 0.0}}
    for index, model in enumerate(("a", "b")):
        write_seeds(tmp_path, [f"model={model}"])
        for seed in (1, 2, 3):

            def corrupted(n, c, k, shift=swings[model][seed] + (0.02 if model == "a" else 0)):
                return base[n] + shift - 0.1 * k

            run = tmp_path / str(3 * index + seed - 1)
            write_eval(run / "eval", run, corrupted=corrupted)
    [row] = compare_robustness(groups_of(tmp_path), None)
    assert row["level"] == stats.CONFIGURATION and row["p_images"] < 0.05 < row["p_holm"]
    assert row["verdict"].startswith(
        "no difference detectable at this n (no evidence at the seed level (paired t-test over "
        "3 shared seeds"
    )


def test_no_robustness_files_no_robustness_in_the_report(tmp_path):
    write_seeds(tmp_path, ["model=unet"], seeds=(1, 2))
    write_seeds(tmp_path, ["model=fpn"], seeds=(1, 2))
    paths = write_report(tmp_path)
    assert "robustness_comparisons" not in paths
    assert not (tmp_path / "robustness_comparisons.csv").exists()
    for text in (paths["md"].read_text(), paths["html"].read_text(), paths["groups"].read_text(),
                 paths["csv"].read_text()):  # fmt: skip
        text = text.replace(str(tmp_path), "DIR").lower()  # the folder is named after the test
        assert "robust" not in text and "corruption" not in text and "shift" not in text


def test_a_shift_is_labelled_and_never_paired_with_in_distribution_results(tmp_path):
    """Evals of the unet runs on another data root, kept in a folder of their own (the
    report's evals=DIR), one of them from before eval named its training run."""
    train, evals = tmp_path / "train", tmp_path / "evals"
    write_seeds(train, ["model=unet"], seeds=(1, 2), dice=0.85)
    write_seeds(train, ["model=fpn"], seeds=(1, 2), dice=0.8)
    for run, record in ((train / "0", True), (train / "1", False)):
        write_eval(evals / run.name, run, root="/other/pets", dice=0.6,
                   overrides=["data.root=/other/pets"], record_run=record)  # fmt: skip
    write_eval(evals / "elsewhere", tmp_path / "not_a_run", root="/other/pets")
    shifted = "model=unet (shift: trained on /data/pets, tested on /other/pets)"
    groups = {g.name: g for g in groups_of(train, [evals])}
    assert set(groups) == {"model=unet", "model=fpn", shifted}
    assert len(groups[shifted].finished) == 2
    assert groups[shifted].summary["test_dice"].mean == pytest.approx(0.6)
    rows = {(r["a"], r["b"]): r for r in compare(list(groups.values()))}
    assert "p_value" in rows[("model=unet", "model=fpn")]  # in distribution: paired
    for pair, row in rows.items():
        if shifted in pair:
            assert "p_value" not in row
            assert (
                row["verdict"].startswith("not paired: shift: both trained on /data/pets, ")
                and " on /other/pets (test split" in row["verdict"]
            )
    main([str(train), f"evals={evals}"])
    by_group = {r["group"]: r for r in read_csv_rows(train / "groups.csv")}
    assert by_group[shifted]["shift"] == "shift: trained on /data/pets, tested on /other/pets"
    assert by_group["model=unet"]["shift"] == ""
    markdown = (train / "report.md").read_text()
    assert f"| {shifted} |" in markdown
    assert (
        "Eval runs not used: " in markdown
        and "is in none of the report's training runs" in markdown
    )
    assert "oof_comparisons" not in markdown and "Robustness comparisons" not in markdown


def test_the_reports_robustness_names_are_evals():
    from segpets import corruptions, robustness_report

    assert robustness_report.CLEAN == corruptions.CLEAN
    assert robustness_report.PER_IMAGE == corruptions.PER_IMAGE


def test_the_report_reads_an_eval_run_made_from_the_command_line(tiny_run, tmp_path):
    """A real eval dir kept apart (evals=DIR): matched to its training run by its
    checkpoint; threshold=0.4 (the tiny model's probabilities stay below 0.5) sets it apart
    as a group of its own, on the training run's own test set, so the two pair by image."""
    evals = tmp_path / "evals"
    result = run_segpets(
        "eval", f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}", "threshold=0.4",
        "worst=0", "corruptions=standard", "corruptions.select=[gaussian_noise,jpeg]",
        f"hydra.run.dir={evals / 'robust'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((evals / "robust" / "metrics.json").read_text())
    read = read_runs(tiny_run, [evals])
    assert read.left_out == [] and len(read.rows) == 2
    trained, evaluated = read.rows
    assert trained["robustness"] is None and evaluated["group_key"] == ("threshold=0.4",)
    assert evaluated["test_set"] == trained["test_set"] and evaluated["shift"] is None
    found = evaluated["robustness"]
    assert found.mean_corruption_dice == pytest.approx(metrics["mean_corruption_dice"])
    assert found.relative_robustness == pytest.approx(metrics["relative_robustness"])
    [row] = compare(group_runs(read.rows))
    assert row["images"] == metrics["images"] and row["pairing"] == "by image"
