"""Robustness and shift in the report: eval runs matched to the training runs they scored.

`python -m segpets.eval ckpt_path=RUN/checkpoints/best.ckpt ...` writes a run dir of its
own (logs/eval/runs/...). The report reads eval runs found under its DIR (one placed
inside a training run with `hydra.run.dir=RUN/eval` belongs to that run) and under each
`evals=DIR` it is given, and matches each to the training run whose folder holds its
checkpoint (eval's metrics.json `train_run`, else its `checkpoint`). Then:

- an eval of the training run's own test set with the run's own options (only
  `corruptions`, `seed`, `device`, `worst` or loader settings named) gives that run its
  robustness: per image the mean Dice over its corrupted rows of
  robustness_per_image.csv (severity > 0), the run's mean corruption Dice (the mean of
  all those rows) and relative robustness (that over the mean of the clean rows);
- an eval on another data root (`data.root=OTHER`) scores a shift: a run of its own (the
  training run's seed and fold, scored on OTHER) in a group of the training run's
  overrides plus `shift=OTHER`, named "... (shift: trained on A, tested on B)"; its test
  set is not the training groups', so it is never paired with in-distribution results;
- an eval with options that change what is scored (tta, postprocess, split, resolution,
  threshold, other data.* options) is likewise a run of its own, grouped by them.

Groups are compared on the per-image mean corruption Dice (averaged over seeds) with the
machinery of test Dice (segpets.report.compare on these scores: seeds x images tables,
Holm over this family, the same verdicts). Eval runs that match no training run,
ensembles, unfinished evals and repeats are listed with the reason, never used silently.
"""

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from segpets import stats
from segpets.scores import read_scores

# segpets.corruptions' names, repeated so that the report needs no torch (a test checks).
CLEAN = "clean"
PER_IMAGE = "robustness_per_image.csv"
EVAL_SCORES = "per_image.csv"
SHIFT = "shift"  # the pseudo-override that sets a shifted eval's group apart: shift=ROOT
# Eval options that leave the scores of a run's test set as they are (seed: the
# corruptions' draws only); data.root decides in-distribution or shift.
NEUTRAL = ("ckpt_path", "corruptions", "corruptions.select", "seed", "device", "worst",
           "data.root", "data.num_workers", "data.batch_size", "data.pin_memory",
           "data.prefetch_factor", "task_name")  # fmt: skip
RUN_COLUMNS = ("mean_corruption_dice", "relative_robustness", "robustness_eval")
GROUP_COLUMNS = ("mean_corruption_dice", "mean_corruption_dice_std", "relative_robustness",
                 "relative_robustness_std", "robustness_runs")  # fmt: skip
NOTE = (
    "Robustness: each run's test split scored again under corrupted photos (python -m "
    "segpets.eval corruptions=standard, matched to the training run by its checkpoint). "
    "Mean corruption Dice: the mean Dice over every corruption, severity and image; relative "
    "robustness: that over the clean Dice; mean ± std over seeds. Comparisons use each "
    "image's mean Dice over its corrupted rows, averaged over seeds, as the test Dice "
    "comparisons use test Dice (the same intervals, tests, verdict rule and seed levels)."
)


# --- Reading eval runs -------------------------------------------------------------------


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def is_eval(run: Path) -> bool:
    """Whether a run folder is segpets.eval's (its metrics.json names a `checkpoint` and has
    no training's `test`; unfinished: its config's task_name is eval)."""
    metrics = _json(run / "metrics.json")
    if metrics:
        return "checkpoint" in metrics and "test" not in metrics
    config = run / ".hydra" / "config.yaml"
    return config.is_file() and OmegaConf.load(config).get("task_name") == "eval"


@dataclass(frozen=True)
class RunRobustness:
    """One run's corruption scores, from an eval's robustness_per_image.csv."""

    dice: dict[str, float]  # image: its mean Dice over the corrupted rows
    mean_corruption_dice: float
    relative_robustness: float | None  # None where the clean Dice is 0 or missing
    source: Path  # the eval run dir


def read_robustness(run: Path) -> RunRobustness | None:
    """The robustness of `run` (an eval dir), or None without robustness_per_image.csv."""
    path = run / PER_IMAGE
    if not path.is_file():
        return None
    clean: list[float] = []
    corrupted: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["corruption"] == CLEAN or int(row["severity"]) == 0:
                clean.append(float(row["dice"]))
            else:
                corrupted.setdefault(row["name"], []).append(float(row["dice"]))
    if not corrupted:
        return None
    every = [dice for values in corrupted.values() for dice in values]
    mean = sum(every) / len(every)
    clean_mean = sum(clean) / len(clean) if clean else 0.0
    return RunRobustness(
        {name: sum(v) / len(v) for name, v in sorted(corrupted.items())},
        mean,
        mean / clean_mean if clean_mean else None,
        run,
    )


def _root(value: Any) -> str:
    return os.path.normpath(os.path.abspath(str(value)))


def trained_root(row: dict[str, Any]) -> str | None:
    """The data root a run trained on: a shift's training root, else its test set's (train
    scores its own root's test split), else its config's data.root."""
    if row.get("shift"):
        return row["shift"][0]
    if row.get("test_set") and row["test_set"].get("root"):
        return _root(row["test_set"]["root"])
    config = row.get("config")
    root = None if config is None else OmegaConf.select(config, "data.root", default=None)
    return None if root is None else _root(root)


def _test_set(metrics: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """What an eval scored: its metrics.json test_data, else (evals before it recorded
    one) its data_root and split with the training run's dataset."""
    if metrics.get("test_data"):
        return metrics["test_data"]
    return {
        "dataset": (trained.get("test_set") or {}).get("dataset"),
        "root": _root(metrics["data_root"]) if metrics.get("data_root") else None,
        "split": metrics.get("split"),
        "boundary": metrics.get("boundary"),
        "images": metrics.get("images"),
    }


def _overrides(run: Path) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def _scoring_options(overrides: Sequence[str]) -> list[str]:
    """The eval overrides that change what is scored (not NEUTRAL, hydra.*, paths.*)."""
    kept = []
    for override in overrides:
        option = override.split("=", 1)[0].lstrip("+~")
        if option in NEUTRAL or option.split(".")[0] in ("hydra", "paths"):
            continue
        kept.append(override)
    return kept


def _checkpoint_dirs(metrics: dict[str, Any]) -> list[Path] | str:
    """The training run folder the eval's checkpoint lies in (as candidates to match), or
    why there is none."""
    if metrics.get("train_run"):
        return [Path(metrics["train_run"]).resolve()]
    checkpoint = metrics.get("checkpoint")
    if isinstance(checkpoint, list):
        if len(checkpoint) != 1:
            return f"an ensemble of {len(checkpoint)} checkpoints, not one training run"
        checkpoint = checkpoint[0]
    if not checkpoint:
        return "no checkpoint recorded"
    return [Path(checkpoint).resolve()]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _match(
    run: Path, metrics: dict[str, Any], trained: Sequence[dict[str, Any]]
) -> dict[str, Any] | str:
    """The training row whose folder holds the eval's checkpoint (or the eval itself)."""
    found = _checkpoint_dirs(metrics)
    if isinstance(found, str):
        return found
    for row in trained:
        folders = {row["path"].resolve()}
        output_dir = _json(row["path"] / "metrics.json").get("output_dir")
        if output_dir:
            folders.add(Path(output_dir).resolve())
        if any(_inside(path, folder) for path in found for folder in folders):
            return row
    for row in trained:
        if _inside(run.resolve(), row["path"].resolve()):
            return row
    return f"its checkpoint {metrics.get('checkpoint')} is in none of the report's training runs"


@dataclass
class Evals:
    """The training rows (with `robustness` set where an eval gave one, and a row per shift
    or other-option eval) and what was left out, in words."""

    rows: list[dict[str, Any]]
    left_out: list[str]

    @property
    def any_robustness(self) -> bool:
        return any(row.get("robustness") for row in self.rows)


def with_evals(rows: Sequence[dict[str, Any]], evals: Sequence[Path], root: Path) -> Evals:
    """Split the report's rows into training runs and eval runs, and fold the evals (those
    among `rows` and the folders `evals`) into the training rows: see the module docstring."""
    eval_runs = [row["path"] for row in rows if is_eval(row["path"])]
    eval_runs += [path for path in evals if path not in eval_runs]
    training = [
        dict(row, robustness=None, shift=None) for row in rows if row["path"] not in eval_runs
    ]
    finished = [row for row in training if row["status"] == "finished"]
    added, left_out = [], []
    for run in sorted(eval_runs):
        name = _name(run, root)
        metrics = _json(run / "metrics.json")
        if not metrics:
            left_out.append(f"{name} (unfinished or failed)")
            continue
        match = _match(run, metrics, finished)
        if isinstance(match, str):
            left_out.append(f"{name} ({match})")
            continue
        test_set = _test_set(metrics, match)
        trained_on, tested_on = trained_root(match), test_set.get("root")
        tested_on = tested_on and _root(tested_on)
        shift = (
            (trained_on, tested_on) if trained_on and tested_on not in (None, trained_on) else None
        )
        options = _scoring_options(_overrides(run))
        robustness = read_robustness(run)
        if shift is None and not options:
            if robustness is None:
                left_out.append(
                    f"{name} (scores {match['run']}'s own test set again, no corruptions)"
                )
            elif match["robustness"] is not None:
                left_out.append(f"{name} ({match['run']} has robustness from "
                                f"{_name(match['robustness'].source, root)} already)")  # fmt: skip
            else:
                match["robustness"] = robustness
            continue
        added.append(_eval_row(match, run, name, metrics, test_set, options, shift, robustness))
    return Evals([*training, *added], left_out)


def _name(run: Path, root: Path) -> str:
    return str(run.relative_to(root)) if root in run.parents else str(run)


def _eval_row(
    trained: dict[str, Any],
    run: Path,
    name: str,
    metrics: dict[str, Any],
    test_set: dict[str, Any],
    options: Sequence[str],
    shift: tuple[str, str] | None,
    robustness: RunRobustness | None,
) -> dict[str, Any]:
    """A report row for an eval that is not its training run's own test: the training
    run's seed, fold and settings, the eval's scores, a group of its own."""
    scores_file = run / EVAL_SCORES
    scores = read_scores(scores_file) if scores_file.is_file() else {}
    extra = [*options, *([f"{SHIFT}={shift[1]}"] if shift else [])]
    key = trained["group_key"]
    return {
        **trained,
        "run": name,
        "path": run,
        "curves": {curve: [] for curve in trained["curves"]},  # the training run's, drawn once
        "test_dice": metrics.get("dice"),
        "test_dice_dataset": metrics.get("dice_dataset"),
        "test_iou": metrics.get("iou"),
        "test_images_per_second": None,
        "overrides": " ".join([trained["overrides"], *extra]).strip(),
        "group_key": None if key is None else tuple(sorted((*key, *extra))),
        "scores": {n: v["dice"] for n, v in scores.items() if "dice" in v} or None,
        "test_set": test_set,
        "worst_png": run / "worst.png" if (run / "worst.png").is_file() else None,
        "val_scores": None,
        "robustness": robustness,
        "shift": shift,
    }


def shift_label(shift: tuple[str, str]) -> str:
    return f"shift: trained on {shift[0]}, tested on {shift[1]}"


# --- Groups ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRobustness:
    """A group's robustness over its runs that have some: mean ± std over seeds."""

    mean_corruption_dice: stats.Summary
    relative_robustness: stats.Summary


def summarize(runs: Sequence[dict[str, Any]]) -> GroupRobustness | None:
    found = [run["robustness"] for run in runs if run.get("robustness")]
    if not found:
        return None
    return GroupRobustness(
        stats.mean_std([r.mean_corruption_dice for r in found]),
        stats.mean_std([r.relative_robustness for r in found]),
    )


def run_fields(run: dict[str, Any]) -> dict[str, Any]:
    """RUN_COLUMNS of report.csv for a run (empty without robustness)."""
    found = run.get("robustness")
    if found is None:
        return {}
    return {"mean_corruption_dice": found.mean_corruption_dice,
            "relative_robustness": found.relative_robustness,
            "robustness_eval": str(found.source)}  # fmt: skip


def group_fields(found: GroupRobustness | None, runs: int) -> dict[str, Any]:
    """GROUP_COLUMNS of groups.csv (empty without robustness)."""
    if found is None:
        return {}
    return {"mean_corruption_dice": found.mean_corruption_dice.mean,
            "mean_corruption_dice_std": found.mean_corruption_dice.std,
            "relative_robustness": found.relative_robustness.mean,
            "relative_robustness_std": found.relative_robustness.std,
            "robustness_runs": runs}  # fmt: skip


def group_cells(found: GroupRobustness | None) -> list[str]:
    """The group table's two robustness cells."""
    if found is None:
        return ["", ""]
    return [str(found.mean_corruption_dice), str(found.relative_robustness)]


GROUP_HEADER = ["corruption Dice", "relative robustness"]


def scores_view(run: dict[str, Any]) -> dict[str, Any]:
    """The run with its per-image mean corruption Dice as its scores (None without), so
    that the report's comparison machinery compares groups on them."""
    found = run.get("robustness")
    return {**run, "scores": None if found is None else found.dice}


# --- Report section ----------------------------------------------------------------------


@dataclass
class Found:
    """What evals add to a report: the robustness comparisons (COMPARISON rows of
    segpets.report), the evals read, and the groups without robustness results."""

    comparisons: list[dict[str, Any]]
    evals: Evals
    without: list[str]


def sections(
    found: Found | None,
    table: Callable[..., list[str]],
    paragraph: Callable[[str], str],
    heading: Callable[[str], str],
    comparison_table: Callable[..., tuple[list[str], list[list[str]]]],
) -> list[str]:
    """The "Robustness comparisons" section (none without robustness results) and a line
    on the eval runs left out (none without such)."""
    if found is None:
        return []
    parts: list[str] = []
    if found.evals.any_robustness:
        note = NOTE
        if found.without:
            note += f" No robustness results: {', '.join(found.without)}."
        tested = [row for row in found.comparisons if "p_value" in row]
        if not found.comparisons:
            note += " Fewer than two groups have robustness results: nothing to compare."
        elif tested:
            note += f" Holm correction applied over {len(tested)} comparison" + (
                "s." if len(tested) != 1 else "."
            )
        parts += [heading("Robustness comparisons"), paragraph(note)]
        if found.comparisons:
            header, cells = comparison_table(found.comparisons)
            header = [h.replace("mean Dice", "mean corruption Dice") for h in header]
            parts += table(header, cells)
    if found.evals.left_out:
        parts.append(paragraph("Eval runs not used: " + "; ".join(found.evals.left_out) + "."))
    return parts
