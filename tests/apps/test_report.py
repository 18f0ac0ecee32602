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
    find_baseline,
    find_runs,
    group_runs,
    main,
    read_run,
    write_report,
)
from segpets.scores import TEST_SCORES, write_scores

IMAGES = [f"image_{i:03d}" for i in range(60)]
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
) -> Path:
    """A finished run as train.py leaves it: overrides, metrics.json, per-image test
    scores drawn around `dice` (rng seeded by `seed`) and a CSV log of `epochs` epochs."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    rng = np.random.default_rng(seed)
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


def groups_of(folder: Path):
    return group_runs([read_run(run, folder) for run in find_runs(folder)])


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


def test_verdict_needs_the_adjusted_p_and_takes_the_sign():
    assert stats.verdict("A", "B", 0.1, 0.01) == "A better than B"
    assert stats.verdict("A", "B", -0.1, 0.01) == "B better than A"
    assert stats.verdict("A", "B", 0.1, 0.06) == stats.NO_DIFFERENCE


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
    assert twins["verdict"] == "no difference detectable at this n"
    assert twins["p_holm"] >= twins["p_value"]
    # The group's interval over images brackets its mean test Dice.
    low, high = groups[0].summary["test_dice_ci"]
    assert low < groups[0].summary["test_dice"].mean < high


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
