"""`python -m segpets.report DIR [baseline=NAME]`: compare the configurations under DIR.

DIR is a multirun dir or any folder of runs (a run is a folder with `.hydra/` or
`metrics.json`). Runs that differ only in their seed and/or fold (`data.fold`) form one
group, named by the overrides that set it apart from the other groups; a fold plays a
seed's part (each fold's model scores the same test images). Per group: mean ± std over seeds of
val and test Dice, a 95% interval of its mean test Dice that resamples its seeds and its
test images (segpets/stats.py), training time, parameters, GFLOPs and test throughput.
Each pair of groups (or each group against `baseline=NAME`, also `report.baseline=NAME`,
NAME a group's name or part of it) is compared on the test images both scored, paired by
image and, where both ran the same seeds, by seed: mean Dice difference with its two-level
interval, a seed-level and an image-level p, Holm-corrected over the comparisons, and a
verdict at alpha 0.05. Groups with at least 3 seeds get a verdict on the configuration
(seed and image level must agree; otherwise the report says which level lacks evidence
and about how many seeds would do); groups with fewer get one on those trained models
only, with the seeds to add. Groups tested on different test sets, or without per-image
scores, are listed but not paired, and the report says why.

Fold runs also score their val fold (val_per_image.csv): pooled per group into out-of-fold
Dice over all train+val images, with an interval over images, and compared image by image
between groups split into the same folds (segpets/studies.py). Groups that differ only in
`data.train_fraction` form a learning curve of test Dice against training images, with a
fitted power law and its estimate at twice the data.

Eval runs under DIR or under `evals=DIR2` (segpets.eval's run dirs) are matched to the
training runs whose checkpoints they scored (segpets/robustness_report.py): with
`corruptions=standard`, a group's mean corruption Dice and relative robustness, and
"Robustness comparisons" on the per-image mean corruption Dice, paired and judged as test
Dice is; an eval on another data.root is a shift, a group of its own labelled "shift:
trained on A, tested on B" and never paired with in-distribution results.

Writes into DIR: report.md, report.html (one self-contained page: tables, figures, each
group's worst test images), report.csv (one row per run), groups.csv, comparisons.csv,
curves.png (mean over seeds with a min-max band, per epoch and against training time)
and pareto.png (test Dice against training time and GFLOPs); with fold runs also
oof_comparisons.csv, with learning curves learning_curve.csv and learning_curve.png, with
robustness results robustness_comparisons.csv. A run without metrics.json is listed as
unfinished, never dropped.
"""

import base64
import csv
import html
import itertools
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from segpets import robustness_report, stats, studies
from segpets.cli import USER_ERROR, check_runs_folder, runs_folder_command
from segpets.errors import SegpetsError
from segpets.runs import describe, find_runs
from segpets.scores import TEST_SCORES, read_scores

CURVES = ("train/loss_epoch", "val/loss", "train/dice", "val/dice")
TIME = "time/train_seconds"
COLUMNS = (
    "run", "group", "seed", "fold", "status", "model", "loss", "upsample", "augment", "precision",
    "epochs", "parameters", "gflops_forward", "val_dice", "best_epoch", "test_dice",
    "test_dice_dataset", "test_iou", "lowest_val_loss_epoch", "train_seconds",
    "test_images_per_second", "train_images", "overrides",
)  # fmt: skip
GROUP_COLUMNS = (
    "group", "seeds", "folds", "runs", "val_dice", "val_dice_std", "test_dice", "test_dice_std",
    "test_dice_ci_low", "test_dice_ci_high", "test_dice_ci_method", "test_images", "test_dice_dataset",
    "test_dice_dataset_std", "train_seconds", "parameters", "gflops_forward",
    "test_images_per_second", "oof_dice", "oof_dice_ci_low", "oof_dice_ci_high", "oof_images",
    "test_root", "overrides",
)  # fmt: skip
COMPARISON_COLUMNS = (
    "a", "b", "level", "seeds_a", "seeds_b", "pairing", "images", "mean_difference", "ci_low",
    "ci_high", "seed_test", "p_seeds", "p_images", "p_value", "p_holm", "seeds_needed", "verdict",
)  # fmt: skip
NO_SCORES = (
    "no paired test: {} has no test_per_image.csv (trained before segpets wrote per-image scores)"
)
WORST_SHOWN = 5
UNKNOWN = "runs without saved overrides"


# --- Reading runs ------------------------------------------------------------------------


def read_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values of CURVES and TIME, from csv/metrics.csv or the TensorBoard events."""
    names = (*CURVES, TIME)
    curves: dict[str, dict[int, float]] = {name: {} for name in names}
    csv_file = run / "csv" / "metrics.csv"
    if csv_file.is_file():
        with open(csv_file) as f:
            for row in csv.DictReader(f):
                for name in names:
                    if row.get(name) and row.get("epoch"):
                        curves[name][int(float(row["epoch"]))] = float(row[name])
    elif any(run.glob("tensorboard/events.out.tfevents.*")):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        tags = set(events.Tags()["scalars"])
        epoch_at = (
            {e.step: int(e.value) for e in events.Scalars("epoch")} if "epoch" in tags else {}
        )
        for name in names:
            for event in events.Scalars(name) if name in tags else []:
                if event.step in epoch_at:
                    curves[name][epoch_at[event.step]] = event.value
    # train.py validates the best checkpoint once more after fit, logged at epoch
    # max_epochs: that point is not part of the curve.
    trained = set(curves["train/loss_epoch"]) | set(curves["train/dice"])
    if trained:
        for name in ("val/loss", "val/dice", TIME):
            curves[name] = {e: v for e, v in curves[name].items() if e <= max(trained)}
    return {name: sorted(values.items()) for name, values in curves.items()}


def _load(path: Path) -> Any:
    return OmegaConf.load(path) if path.is_file() else None


def read_run(run: Path, root: Path) -> dict[str, Any]:
    """One report row, from metrics.json if the run finished, else from its saved config.

    Keys in COLUMNS are what report.csv shows; the others (curves, scores, test_set, ...)
    feed the groups, the comparisons and the figures.
    """
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    curves = read_curves(run)
    val_loss = curves["val/loss"]
    config = _load(run / ".hydra" / "config.yaml")
    hydra = _load(run / ".hydra" / "hydra.yaml")
    saved_overrides = _load(run / ".hydra" / "overrides.yaml")
    if metrics:
        choices = metrics.get("choices", {})
        overrides = list(metrics.get("overrides", []))
    else:
        choices = dict(hydra.hydra.runtime.choices) if hydra is not None else {}
        overrides = [str(o) for o in saved_overrides] if saved_overrides is not None else None
    scores_file = run / TEST_SCORES
    test = metrics.get("test", {})
    row: dict[str, Any] = {
        "run": str(run.relative_to(root)) if run != root else run.name,
        "status": "finished" if metrics else "unfinished or failed",
        "seed": metrics.get("seed", _seed_of(overrides or [], config)),
        "fold": _fold_of(overrides or [], config),
        **describe(config if config is not None else OmegaConf.create({}), choices),
        "parameters": metrics.get("parameters"),
        "gflops_forward": metrics.get("gflops_forward"),
        "val_dice": metrics.get("val", {}).get("val/dice"),
        "best_epoch": metrics.get("best_epoch"),
        "test_dice": test.get("test/dice"),
        "test_dice_dataset": test.get("test/dice_dataset"),
        "test_iou": test.get("test/iou"),
        "lowest_val_loss_epoch": min(val_loss, key=lambda p: p[1])[0] if val_loss else None,
        "train_seconds": metrics.get("train_seconds"),
        "test_images_per_second": metrics.get("test_images_per_second"),
        "train_images": studies.train_images(run, metrics),
        "overrides": " ".join(overrides or []),
        # Not columns:
        "path": run,
        "curves": curves,
        "config": config,
        "choices": choices,
        "group_key": None  # a run that saved no overrides joins no group of known runs
        if overrides is None
        else tuple(sorted(o for o in overrides if not _is_replicate(o))),
        "scores": _dice_per_image(scores_file) if metrics and scores_file.is_file() else None,
        "test_set": metrics.get("test_data"),
        "worst_png": run / "worst.png" if (run / "worst.png").is_file() else None,
        "val_scores": studies.read_val_scores(run) if metrics else None,
        "folds": studies.read_folds(run),
    }
    return row


def _option(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _is_seed(override: str) -> bool:
    return _option(override) == "seed"


def _is_replicate(override: str) -> bool:
    """A seed or a fold: what a group's runs may differ in (a group's replicates)."""
    return _option(override) in ("seed", "data.fold")


def _fold_of(overrides: Iterable[str], config: DictConfig | None) -> int | None:
    """The run's `data.fold` (None for a run of the layout's own split)."""
    for override in overrides:
        if _option(override) == "data.fold" and "=" in override:
            value = override.split("=", 1)[1]
            return int(value) if value.lstrip("-").isdigit() else None
    if config is None:
        return None
    fold = OmegaConf.select(config, "data.fold", default=None, throw_on_resolution_failure=False)
    return fold if isinstance(fold, int) else None


def _seed_of(overrides: Iterable[str], config: DictConfig | None) -> Any:
    for override in overrides:
        if _is_seed(override) and "=" in override:
            return override.split("=", 1)[1]
    return config.get("seed") if config is not None else None


def _seed_order(seed: Any) -> tuple[int, float, str]:
    """Numbers in numeric order, before any other seed value."""
    try:
        return (0, float(seed), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(seed))


def _dice_per_image(path: Path) -> dict[str, float]:
    return {name: values["dice"] for name, values in read_scores(path).items() if "dice" in values}


# --- Groups ------------------------------------------------------------------------------


@dataclass
class Group:
    """Runs whose command-line overrides are the same once `seed=...` and `data.fold=...`
    are left out (key None: the runs that saved no overrides, unfinished before Hydra wrote
    .hydra/overrides.yaml). A run's replicate is its (seed, fold)."""

    key: tuple[str, ...] | None
    runs: list[dict[str, Any]]
    name: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> list[dict[str, Any]]:
        return [run for run in self.runs if run["status"] == "finished"]

    @property
    def scored(self) -> list[dict[str, Any]]:
        """The finished runs with per-image test scores, in (seed, fold) order."""
        runs = [run for run in self.finished if run["scores"] is not None]
        return sorted(runs, key=lambda run: (_seed_order(run["seed"]), _fold_order(run)))

    def table(self, names: Sequence[str]) -> list[list[float]]:
        """Seeds x images: each scored run's test Dice of `names`, in seed order."""
        return [[run["scores"][n] for n in names] for run in self.scored]

    @property
    def image_dice(self) -> dict[str, float] | None:
        """Test Dice per image averaged over the seeds that scored it (images every one of
        them scored), or None where no finished run has per-image scores."""
        scored = [run["scores"] for run in self.finished if run["scores"] is not None]
        if not scored:
            return None
        names = set.intersection(*(set(scores) for scores in scored))
        return {n: sum(s[n] for s in scored) / len(scored) for n in sorted(names)}

    @property
    def test_set(self) -> dict[str, Any] | None:
        return next((r["test_set"] for r in self.finished if r["test_set"]), None)

    @property
    def shift(self) -> tuple[str, str] | None:
        """(trained on, tested on) for a group of evals on another data root."""
        return next((r["shift"] for r in self.finished if r.get("shift")), None)

    @property
    def has_folds(self) -> bool:
        return any(run["fold"] is not None for run in self.runs)

    @property
    def folds(self) -> dict[str, int] | None:
        """{stem: fold} of the group's splits/folds.csv, or None (no fold runs, or none
        recorded): groups pair fold by fold only where these are equal."""
        return next((run["folds"] for run in self.finished if run["folds"]), None)

    @property
    def out_of_fold(self) -> studies.OutOfFold | None:
        return studies.out_of_fold(self.finished)


def _fold_order(run: dict[str, Any]) -> int:
    return -1 if run["fold"] is None else run["fold"]


def group_runs(rows: Sequence[dict[str, Any]]) -> list[Group]:
    """Runs grouped by their overrides minus seed and fold, named, summarised and sorted by mean
    val Dice of the tested checkpoints (the best first; test scores never choose the order)."""
    by_key: dict[tuple[str, ...] | None, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(row["group_key"], []).append(row)
    groups = [Group(key, runs) for key, runs in by_key.items()]
    _name(groups)
    for group in groups:
        group.summary = summarize(group)
        for run in group.runs:
            run["group"] = group.name
        group.runs.sort(key=lambda run: _descending(run.get("val_dice")))
    groups.sort(key=lambda group: _descending(group.summary["val_dice"].mean))
    return groups


def _descending(value: float | None) -> float:
    return -value if value is not None else float("inf")


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+"), value


def _name(groups: list[Group]) -> None:
    """Name each group by the overrides in which the groups differ, e.g. `loss=dice
    model=unet`; where a group leaves such an option to the defaults, its value is looked
    up in its first run's choices or config, and left out where no run records it (runs
    made outside segpets' configs, such as scripts/plain_loop.py). One group is named after
    its model."""
    known = [group for group in groups if group.key is not None]
    settings = [dict(_split(o) for o in group.key or ()) for group in known]
    keys = sorted({key for s in settings for key in s if key != robustness_report.SHIFT})
    varying = [k for k in keys if len({s.get(k) for s in settings}) > 1] or ["model"]
    seen: dict[str, int] = {}
    for group in groups:
        if group.key is None:
            group.name = UNKNOWN
    for group, setting in zip(known, settings, strict=True):
        values = {k: setting[k] if k in setting else _default(group, k) for k in varying}
        name = " ".join(f"{k}={v}" for k, v in values.items() if v is not None) or "defaults"
        if group.shift:
            name += f" ({robustness_report.shift_label(group.shift)})"
        seen[name] = seen.get(name, 0) + 1
        group.name = name if seen[name] == 1 else f"{name} #{seen[name]}"


def _default(group: Group, key: str) -> str | None:
    """The value a run of `group` had for `key` without overriding it; None if unknown."""
    if key == "data.root" and group.shift:
        return group.shift[0]
    if key == "data.root" and group.test_set:
        return str(group.test_set.get("root"))
    for run in group.runs:
        if key in run["choices"]:
            return str(run["choices"][key])
        if run["config"] is not None:
            value = OmegaConf.select(
                run["config"], key, default=None, throw_on_resolution_failure=False
            )
            if value is not None and not isinstance(value, DictConfig):
                return str(value)
    return None


def summarize(group: Group) -> dict[str, Any]:
    """A group's figures over its finished seeds (stats.Summary for those with a spread)."""
    finished = group.finished
    dice = group.image_dice
    first = next(iter(finished), {})
    return {
        "val_dice": stats.mean_std([r["val_dice"] for r in finished]),
        "test_dice": stats.mean_std([r["test_dice"] for r in finished]),
        "test_dice_dataset": stats.mean_std([r["test_dice_dataset"] for r in finished]),
        "train_seconds": stats.mean_std([r["train_seconds"] for r in finished]),
        "test_images_per_second": stats.mean_std([r["test_images_per_second"] for r in finished]),
        "test_dice_ci": stats.two_level_ci(group.table(list(dice))) if dice else None,
        "test_images": len(dice) if dice else None,
        "out_of_fold": group.out_of_fold,
        "robustness": robustness_report.summarize(finished),
        "parameters": first.get("parameters"),
        "gflops_forward": first.get("gflops_forward"),
    }


def group_row(group: Group) -> dict[str, Any]:
    """A row of groups.csv."""
    s = group.summary
    ci = s["test_dice_ci"] or (None, None)
    oof = s["out_of_fold"]
    oof_ci = (oof.ci if oof else None) or (None, None)
    folds = {run["fold"] for run in group.finished if run["fold"] is not None}
    return {
        "group": group.name,
        "seeds": len(group.finished),
        "folds": len(folds) if folds else None,
        "runs": len(group.runs),
        "val_dice": s["val_dice"].mean,
        "val_dice_std": s["val_dice"].std,
        "test_dice": s["test_dice"].mean,
        "test_dice_std": s["test_dice"].std,
        "test_dice_ci_low": ci[0],
        "test_dice_ci_high": ci[1],
        "test_dice_ci_method": _ci_method(group) if s["test_dice_ci"] else None,
        "test_images": s["test_images"],
        "test_dice_dataset": s["test_dice_dataset"].mean,
        "test_dice_dataset_std": s["test_dice_dataset"].std,
        "train_seconds": s["train_seconds"].mean,
        "parameters": s["parameters"],
        "gflops_forward": s["gflops_forward"],
        "test_images_per_second": s["test_images_per_second"].mean,
        "oof_dice": oof.mean if oof else None,
        "oof_dice_ci_low": oof_ci[0],
        "oof_dice_ci_high": oof_ci[1],
        "oof_images": len(oof.dice) if oof else None,
        "test_root": (group.test_set or {}).get("root"),
        "overrides": " ".join(group.key or ()),
        "shift": robustness_report.shift_label(group.shift) if group.shift else None,
        **robustness_report.group_fields(
            s["robustness"], sum(bool(r.get("robustness")) for r in group.finished)
        ),
    }


def _ci_method(group: Group) -> str:
    if len(group.scored) == 1:
        return "images (one seed)"
    return "folds x images" if group.has_folds else "seeds x images"


# --- Comparisons -------------------------------------------------------------------------


def find_baseline(groups: Sequence[Group], name: str) -> Group:
    """The group called `name`, else the one group whose name contains it (any case)."""
    exact = [g for g in groups if g.name == name]
    matches = exact or [g for g in groups if name.lower() in g.name.lower()]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(repr(g.name) for g in (matches or groups))
    if matches:
        raise SegpetsError(f"baseline={name} matches several groups: {names}; give more of one")
    raise SegpetsError(f"baseline={name} matches no group; the groups are {names}")


def _pairs(groups: Sequence[Group], baseline: Group | None) -> list[tuple[Group, Group]]:
    """Baseline against each other group, or every pair; groups with no finished run sit out."""
    finished = [group for group in groups if group.finished]
    if baseline is not None:
        return [(g, baseline) for g in finished if g is not baseline]
    return list(itertools.combinations(finished, 2))


def _where(test_set: dict[str, Any]) -> str:
    """A test set in words: its root first, then split, dataset and boundary handling."""
    return (
        f"{test_set.get('root')} ({test_set.get('split')} split, {test_set.get('dataset')}, "
        f"boundary {test_set.get('boundary')})"
    )


def _not_pairable(a: Group, b: Group) -> str | None:
    """Why a and b cannot be compared image by image, or None."""
    for group in (a, b):
        if not group.finished:
            return f"no paired test: {group.name} has no finished run"
        if group.image_dice is None:
            return NO_SCORES.format(group.name)
    set_a, set_b = a.test_set, b.test_set
    fields = ("dataset", "root", "split", "boundary")
    if set_a and set_b and any(set_a.get(k) != set_b.get(k) for k in fields):
        trained = {robustness_report.trained_root(r) for g in (a, b) for r in g.finished}
        if (a.shift or b.shift) and len(trained) == 1:
            return (
                f"not paired: shift: both trained on {trained.pop()}, {a.name} tested on "
                f"{_where(set_a)}, {b.name} on {_where(set_b)}"
            )
        return (
            f"not paired: different test sets: {a.name} was tested on {_where(set_a)}, "
            f"{b.name} on {_where(set_b)}"
        )
    if not set(a.image_dice or {}) & set(b.image_dice or {}):
        return f"no paired test: {a.name} and {b.name} have no test image in common"
    return None


def _seeds(group: Group) -> list[str]:
    """The scored runs' replicate labels, in table order: the seed, or seed/fold for folds."""
    return [
        str(run["seed"]) if run["fold"] is None else f"{run['seed']}/{run['fold']}"
        for run in group.scored
    ]


def _shared_seeds(a: Group, b: Group) -> bool:
    """Whether a and b ran the same seeds (and folds, split alike), each once: then
    replicate s of a pairs with replicate s of b."""
    seeds_a, seeds_b = _seeds(a), _seeds(b)
    if (a.has_folds or b.has_folds) and a.folds != b.folds:
        return False
    return len(seeds_a) > 1 and len(set(seeds_a)) == len(seeds_a) and seeds_a == seeds_b


def _pairing(a: Group, b: Group, paired_seeds: bool) -> str:
    folds = a.has_folds or b.has_folds
    if paired_seeds:
        return "by fold and image" if folds else "by seed and image"
    seeds_a, seeds_b = _seeds(a), _seeds(b)
    if len(seeds_a) == len(seeds_b) == 1 and seeds_a == seeds_b and a.folds == b.folds:
        return "by image"
    if folds and seeds_a == seeds_b:
        return "by image only (the same fold numbers, but other folds: splits/folds.csv differ)"
    what = "seed/fold" if folds else "seeds"
    return f"by image only ({what} {','.join(seeds_a)} vs {','.join(seeds_b)})"


def _seeds_to_add(groups: Sequence[Group], wanted: int) -> str:
    """The `seed=...` runs that bring each group to `wanted` seeds: first the seeds the
    other group ran (so that the groups pair by seed), then numbers after the largest used.
    A count where the seeds are not numbers."""
    if any(group.has_folds for group in groups):
        return _seeds_per_fold(groups, wanted)
    ran = [set(_seeds(group)) for group in groups]
    try:
        used = sorted({int(seed) for seeds in ran for seed in seeds})
    except ValueError:
        missing = wanted - min(len(seeds) for seeds in ran)
        return f"{missing} more seed{'s' if missing != 1 else ''}"
    target = [*used, *range(used[-1] + 1, used[-1] + 1 + wanted)][: max(wanted, len(used))]
    adds = [[s for s in target if str(s) not in seeds][: wanted - len(seeds)] for seeds in ran]
    said = [_seed_override(add) for add in adds]
    if len(set(said)) == 1:
        return said[0]
    return ", ".join(
        f"{text} to {group.name}" for text, group in zip(said, groups, strict=True) if text
    )


def _seeds_per_fold(groups: Sequence[Group], wanted: int) -> str:
    """Fold groups: the seeds to run on every fold so that seeds x folds reach `wanted`
    (more folds would change the folds, and so the groups)."""
    folds = max(len({run["fold"] for run in group.scored}) for group in groups)
    per_fold = -(-wanted // max(folds, 1))
    seeds = {str(run["seed"]) for group in groups for run in group.scored}
    missing = per_fold - len(seeds)
    if missing <= 0:
        return "the same seeds on every fold"
    try:
        last = max(int(seed) for seed in seeds)
    except ValueError:
        return f"{per_fold} seeds on every fold"
    return f"{_seed_override(range(last + 1, last + 1 + missing))} on every fold"


def _seed_override(seeds: Sequence[int]) -> str:
    """seed=3,4,5, or Hydra's sweep range (end excluded) for a long consecutive run."""
    if not seeds:
        return ""
    if len(seeds) > 5 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"seed='range({seeds[0]},{seeds[-1] + 1})'"
    return "seed=" + ",".join(str(s) for s in seeds)


def _verdict(a: Group, b: Group, result: stats.GroupComparison, adjusted_p: float) -> str:
    """The verdict in words: who is better and at which level, or what lacks evidence."""
    direction, lacking = stats.decide(result, adjusted_p)
    needed = stats.seeds_needed(result.mean_difference, result.seed.spread) if result.seed else None
    said = {1: f"{a.name} better than {b.name}", -1: f"{b.name} better than {a.name}"}
    if result.level == stats.CONFIGURATION:
        if direction:
            return said[direction]
        more = (
            f"; about {needed} seeds a group would detect {result.mean_difference:+.4f} at the "
            f"observed seed spread ({_seeds_to_add([a, b], needed)})"
            if needed is not None and needed > min(result.seeds)
            else ""
        )
        return f"{stats.NO_DIFFERENCE} (no evidence at {' nor at '.join(lacking)}{more})"
    few = [group for group in (a, b) if len(_seeds(group)) < stats.MIN_SEEDS]
    counts = ", ".join(f"{g.name}: {len(_seeds(g))}" for g in few)
    wanted = max(stats.MIN_SEEDS, min(needed or stats.MIN_SEEDS, 10))
    scope = (
        f"for these trained models only (seeds {counts}; add {_seeds_to_add([a, b], wanted)} "
        "for a verdict on the configuration)"
    )
    if direction:
        return f"{said[direction]} {scope}"
    return f"{stats.NO_DIFFERENCE} {scope}"


def compare(groups: Sequence[Group], baseline: Group | None = None) -> list[dict[str, Any]]:
    """One row per pair (a, b): a - b in per-image test Dice over the images both scored,
    from each group's seeds x images table (stats.compare_tables); the p-values the
    verdicts rest on Holm-adjusted over the rows that have one."""
    rows, results = [], []
    for a, b in _pairs(groups, baseline):
        row: dict[str, Any] = {"a": a.name, "b": b.name}
        reason = _not_pairable(a, b)
        if reason is not None:
            rows.append({**row, "verdict": reason})
            continue
        names = sorted(set(a.image_dice or {}) & set(b.image_dice or {}))
        paired_seeds = _shared_seeds(a, b)
        result = stats.compare_tables(a.table(names), b.table(names), paired_seeds)
        ci = result.ci or (None, None)
        rows.append(
            {
                **row,
                "level": result.level,
                "seeds_a": result.seeds[0],
                "seeds_b": result.seeds[1],
                "pairing": _pairing(a, b, paired_seeds),
                "images": result.images,
                "mean_difference": result.mean_difference,
                "ci_low": ci[0],
                "ci_high": ci[1],
                "seed_test": result.seed.test if result.seed else None,
                "p_seeds": result.seed.p_value if result.seed else None,
                "p_images": result.image_p,
                "p_value": result.p_value,
            }
        )
        results.append((rows[-1], a, b, result))
    adjusted = stats.holm([result.p_value for *_, result in results])
    for (row, a, b, result), p_holm in zip(results, adjusted, strict=True):
        row["p_holm"] = p_holm
        row["seeds_needed"] = (
            stats.seeds_needed(result.mean_difference, result.seed.spread) if result.seed else None
        )
        row["verdict"] = _verdict(a, b, result, p_holm)
    return rows


def compare_robustness(groups: Sequence[Group], baseline: Group | None) -> list[dict[str, Any]]:
    """`compare` on each image's mean corruption Dice instead of its test Dice, between the
    groups with robustness results (the baseline's pairs only, where it has some)."""
    found = [g for g in groups if g.summary["robustness"]]
    views = {id(g): Group(g.key, [robustness_report.scores_view(r) for r in g.runs], g.name,
                          g.summary) for g in found}  # fmt: skip
    if baseline is not None and id(baseline) not in views:
        return []
    return compare(list(views.values()), views[id(baseline)] if baseline else None)


def _left_out(groups: Sequence[Group]) -> list[str]:
    """The runs of compared groups that no comparison uses, and why."""
    out = []
    for group in groups:
        for run in group.runs:
            if run["status"] != "finished":
                out.append(f"{run['run']} ({group.name}, {_replicate(run)}: {run['status']})")
            elif run["scores"] is None and group.scored:
                out.append(f"{run['run']} ({group.name}, {_replicate(run)}: no per-image scores)")
    return out


def _replicate(run: dict[str, Any]) -> str:
    fold = "" if run["fold"] is None else f" fold {run['fold']}"
    return f"seed {run['seed']}{fold}"


def method_note(comparisons: Sequence[dict[str, Any]], groups: Sequence[Group]) -> str:
    """What the comparisons did, in one paragraph (the report's "Holm note")."""
    if sum(bool(group.finished) for group in groups) < 2:
        return f"one group{'' if len(groups) == 1 else ' with finished runs'}: nothing to compare."
    tested = [row for row in comparisons if "p_value" in row]
    if not tested:
        return "No pair of groups could be tested image by image (reasons in the table)."
    note = (
        "Each group's test scores are a table of seeds x test images; every interval is a "
        f"{stats.TWO_LEVEL_METHOD} of the mean (a group) or of a - b (a comparison), paired "
        "by image always and by seed where both groups ran the same seeds; with one seed a "
        f"group, a {stats.CI_METHOD} over its images. Groups with at least {stats.MIN_SEEDS} "
        f"seeds get a verdict on the configuration: the seed-level test ({stats.SEED_TEST_PAIRED}"
        f", or {stats.SEED_TEST_UNPAIRED} where the seeds differ) must give a Holm-adjusted "
        f"p < {stats.ALPHA} and the interval must exclude 0; groups with fewer seeds are "
        f"compared as trained models ({stats.TEST_NAME} on the per-image Dice averaged over "
        "seeds), and their verdicts say so. "
        f"Holm correction applied over {len(tested)} comparison{'s' if len(tested) != 1 else ''} "
        f"(family-wise alpha {stats.ALPHA}); "
        f'"{stats.NO_DIFFERENCE}" says which level lacks evidence.'
    )
    if any(group.has_folds for group in groups):
        note += (
            " Folds count as seeds: each fold's model scores the same test images, a group's "
            "rows are its (seed, fold) runs, and groups split into the same folds pair fold by "
            "fold."
        )
    unpaired = sum(row.get("pairing", "").startswith("by image only") for row in tested)
    if unpaired:
        note += (
            f" {unpaired} comparison{'s' if unpaired != 1 else ''} paired by image only: "
            "the groups ran different seeds (or folds), drawn independently."
        )
    left_out = _left_out(groups)
    if left_out:
        note += f" Left out: {'; '.join(left_out)}."
    return note


# --- Figures -----------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(runs: Sequence[dict[str, Any]], name: str) -> tuple[list[int], list[list[float]]]:
    """Epochs logged by any run and, per epoch, the values the runs logged."""
    per_epoch: dict[int, list[float]] = {}
    for run in runs:
        for epoch, value in run["curves"][name]:
            per_epoch.setdefault(epoch, []).append(value)
    epochs = sorted(per_epoch)
    return epochs, [per_epoch[e] for e in epochs]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _draw_curves(group: Group, color: str, panels: dict[str, Any], timed: Any) -> None:
    """One group's mean curves and min-max bands on the epoch panels and the time panel."""
    runs = [run for run in group.runs if any(run["curves"][name] for name in CURVES)]
    for name, ax in panels.items():
        epochs, values = _band(runs, name)
        if not epochs:
            continue
        ax.plot(epochs, [_mean(v) for v in values], marker=".", color=color, label=group.name)
        ax.fill_between(
            epochs, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.2
        )
        if name == "val/loss":
            lowest = epochs[min(range(len(values)), key=lambda i: _mean(values[i]))]
            ax.axvline(lowest, ls=":", lw=0.8, color=color)
    times = {e: _mean(v) for e, v in zip(*_band(runs, TIME), strict=True)}
    epochs, dice = _band(runs, "val/dice")
    points = [(times[e], d) for e, d in zip(epochs, dice, strict=True) if e in times]
    if points:
        x = [t for t, _ in points]
        timed.plot(x, [_mean(d) for _, d in points], marker=".", color=color)
        timed.fill_between(
            x, [min(d) for _, d in points], [max(d) for _, d in points], color=color, alpha=0.2
        )


def plot_curves(groups: Sequence[Group], path: Path) -> None:
    """Per group the mean over seeds per epoch with a min-max band, for CURVES, plus val
    Dice against training time (x: the seeds' mean time at each epoch)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(2, 3, figsize=(16, 8))
    panels = dict(zip(CURVES, (axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]), strict=True))
    timed, legend = axes[0, 2], axes[1, 2]
    for index, group in enumerate(groups):
        _draw_curves(group, f"C{index % 10}", panels, timed)
    for name, ax in panels.items():
        ax.set_title(name.replace("_epoch", "") + " (mean over seeds, band: min-max)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    timed.set_title("val/dice against training time")
    timed.set_xlabel("training seconds (mean over seeds)")
    timed.grid(alpha=0.3)
    legend.axis("off")
    labelled = {}
    for ax in panels.values():
        labelled.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    if labelled:
        legend.legend(
            list(labelled.values()), list(labelled), loc="center", fontsize=8, title="group"
        )
    figure.suptitle("dotted: epoch of the lowest mean val loss (where overfitting starts)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, score) points no other point beats: none costs at most as
    much and scores at least as high, one of them strictly. Ordered by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(groups: Sequence[Group], path: Path) -> None:
    """Test Dice (mean, error bar: std over seeds) against training time and against
    forward GFLOPs, a point per group, the Pareto front drawn as a line."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, cost, label in (
        (axes[0], "train_seconds", "training seconds (mean over seeds)"),
        (axes[1], "gflops_forward", "forward GFLOPs per image"),
    ):
        shown = []
        for index, group in enumerate(groups):
            dice, spent = group.summary["test_dice"], group.summary[cost]
            x = spent.mean if isinstance(spent, stats.Summary) else spent
            if dice.mean is None or x is None:
                continue
            xerr = spent.std if isinstance(spent, stats.Summary) else None
            ax.errorbar(
                x, dice.mean, yerr=dice.std, xerr=xerr, fmt="o", color=f"C{index % 10}", capsize=3
            )
            ax.annotate(
                group.name, (x, dice.mean), fontsize=7, xytext=(4, 4), textcoords="offset points"
            )
            shown.append((x, dice.mean))
        front = [shown[i] for i in pareto_front(shown)]
        if front:
            ax.step(*zip(*front, strict=True), where="post", color="black", lw=1, ls="--",
                    label="Pareto front")  # fmt: skip
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no run recorded this", ha="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("test Dice (mean per image)")
        ax.grid(alpha=0.3)
    figure.suptitle("test Dice against cost, a point per group (error bars: std over seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


# --- Writing -----------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, stats.Summary):
        return str(value)
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value / 1e6:.2f}M"
    return str(value)


def _formatted(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _ci(interval: tuple[float, float] | None) -> str:
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""


def group_table(groups: Sequence[Group]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the groups table in report.md and report.html."""
    header = [
        "group", "seeds", "val Dice", "test Dice (per image)", "test Dice 95% CI",
        "test Dice (dataset)", "train s", "parameters", "GFLOPs", "test img/s",
    ]  # fmt: skip
    oof = any(group.summary["out_of_fold"] for group in groups)
    if oof:
        header.insert(5, "out-of-fold Dice 95% CI")
    robust = any(group.summary["robustness"] for group in groups)
    if robust:
        header[-4:-4] = robustness_report.GROUP_HEADER
    cells = []
    for group in groups:
        s = group.summary
        seeds = _replicates(group)
        cells.append(
            [
                group.name, seeds, _cell(s["val_dice"]), _cell(s["test_dice"]),
                _ci(s["test_dice_ci"]) + (" (images, one seed)" if len(group.scored) == 1 else ""),
                _cell(s["test_dice_dataset"]),
                _formatted(s["train_seconds"].mean, ".1f"), _cell(s["parameters"]),
                _formatted(s["gflops_forward"], ".3g"),
                _formatted(s["test_images_per_second"].mean, ".1f"),
            ]
        )  # fmt: skip
        if oof:
            cells[-1].insert(5, _oof_cell(s["out_of_fold"]))
        if robust:
            cells[-1][-4:-4] = robustness_report.group_cells(s["robustness"])
    return header, cells


def _replicates(group: Group) -> str:
    """The group's finished runs in words: "3", "5 folds", "10 (2 seeds x 5 folds)", with
    " of N" where some did not finish."""
    finished = group.finished
    total = f" of {len(group.runs)}" if len(group.runs) != len(finished) else ""
    if not group.has_folds:
        return f"{len(finished)}{total}"
    seeds = len({str(run["seed"]) for run in finished})
    folds = len({run["fold"] for run in finished})
    if seeds <= 1:
        return f"{len(finished)}{total} folds"
    return f"{len(finished)}{total} ({seeds} seeds x {folds} folds)"


def _oof_cell(oof: studies.OutOfFold | None) -> str:
    if oof is None:
        return ""
    return f"{oof.mean:.4f} {_ci(oof.ci)} (out-of-fold, over {len(oof.dice)} images)"


def comparison_table(comparisons: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["a", "b", "seeds", "images", "mean Dice a - b", "95% CI (two-level)", "seed p",
              "image p", "Holm p", "verdict"]  # fmt: skip
    cells = [
        [
            row["a"], row["b"],
            f"{row['seeds_a']} / {row['seeds_b']}" if "seeds_a" in row else "",
            _cell(row.get("images")), _cell(row.get("mean_difference")),
            _ci((row["ci_low"], row["ci_high"]) if row.get("ci_low") is not None else None),
            _cell(row.get("p_seeds")), _cell(row.get("p_images")), _cell(row.get("p_holm")),
            row["verdict"],
        ]
        for row in comparisons
    ]  # fmt: skip
    return header, cells


RUN_TABLE = ("run", "group", "seed", "fold", "status", "val_dice", "test_dice", "best_epoch",
             "lowest_val_loss_epoch", "train_seconds")  # fmt: skip


def run_table(groups: Sequence[Group]) -> tuple[list[str], list[list[str]]]:
    return list(RUN_TABLE), [
        [_cell(run.get(c)) for c in RUN_TABLE] for g in groups for run in g.runs
    ]


def _markdown(
    header: Sequence[str], cells: Sequence[Sequence[str]], best: int | None = None
) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in enumerate(cells):
        row = list(row)
        if index == best:
            row[0] = f"**{row[0]}**"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return lines


def _best(groups: Sequence[Group]) -> int | None:
    return 0 if groups and groups[0].summary["val_dice"].mean is not None else None


def find_studies(groups: Sequence[Group], baseline: Group | None) -> studies.Studies:
    """The out-of-fold comparisons over the report's pairs, and the learning curves."""
    pairs = [
        (a.name, a.out_of_fold, b.name, b.out_of_fold)
        for a, b in _pairs(groups, baseline)
        if not (a.shift or b.shift)  # a shift's runs are its training runs' models
    ]
    known = [group for group in groups if group.key is not None]
    curves = studies.learning_curves([(g.name, g.key or (), g.finished) for g in known])
    return studies.Studies(studies.compare_out_of_fold(pairs), curves)


def _markdown_sections(
    found: studies.Studies, robust: robustness_report.Found | None = None
) -> list[str]:
    table = lambda header, cells: [*_markdown(header, cells), ""]  # noqa: E731
    paragraph = lambda text: f"{text}\n"  # noqa: E731
    heading = lambda text: f"## {text}\n"  # noqa: E731
    return [
        *robustness_report.sections(robust, table, paragraph, heading, comparison_table),
        *studies.sections(found, table, paragraph, heading),
    ]


def write_markdown(
    root: Path,
    groups: Sequence[Group],
    comparisons: Sequence[dict[str, Any]],
    path: Path,
    found: studies.Studies | None = None,
    robust: robustness_report.Found | None = None,
) -> None:
    runs = sum(len(g.runs) for g in groups)
    lines = [
        f"# segpets report: {root}",
        "",
        f"{runs} runs in {len(groups)} groups (runs that differ only in their seed or fold), "
        "sorted by mean val Dice; ** marks the best. Mean ± std over the finished seeds (or folds).",
        "",
        *_markdown(*group_table(groups), best=_best(groups)),
        "",
        "## Comparisons",
        "",
        method_note(comparisons, groups),
        "",
    ]
    if comparisons:
        lines += [*_markdown(*comparison_table(comparisons)), ""]
    lines += _markdown_sections(found or studies.Studies([], []), robust)
    lines += ["## Runs", "", *_markdown(*run_table(groups)), ""]
    path.write_text("\n".join(lines))


def _html_table(
    header: Sequence[str], cells: Sequence[Sequence[str]], best: int | None = None
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td><b>{html.escape(c)}</b></td>"
            if i == best and j == 0
            else f"<td>{html.escape(c)}</td>"
            for j, c in enumerate(row)
        )
        + "</tr>"
        for i, row in enumerate(cells)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _worst(group: Group) -> str:
    """The group's worst test images: its first run's worst.png, else a table of the
    WORST_SHOWN lowest seed-averaged per-image Dice."""
    picture = next((run["worst_png"] for run in group.runs if run["worst_png"]), None)
    if picture is not None:
        return _image(picture, f"worst test images of {group.name}")
    dice = group.image_dice
    if not dice:
        return "<p>no per-image test scores</p>"
    worst = sorted(dice.items(), key=lambda item: item[1])[:WORST_SHOWN]
    return _html_table(
        ["image", "test Dice (mean over seeds)"], [[n, f"{d:.4f}"] for n, d in worst]
    )


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:90%}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}
img{max-width:100%}"""


def write_html(root: Path, groups: Sequence[Group], comparisons: Sequence[dict[str, Any]],
               figures: dict[str, Path], path: Path, found: studies.Studies | None = None,
               robust: robustness_report.Found | None = None) -> None:  # fmt: skip
    """One self-contained page: tables, verdicts, figures and worst images inline."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>segpets report: {html.escape(str(root))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>segpets report: {html.escape(str(root))}</h1>",
        "<h2>Groups</h2>",
        "<p>Runs that differ only in their seed or fold form a group; mean ± std over its "
        "finished seeds (or folds), sorted by mean val Dice (the best in bold).</p>",
        _html_table(*group_table(groups), best=_best(groups)),
        "<h2>Comparisons</h2>",
        f"<p>{html.escape(method_note(comparisons, groups))}</p>",
    ]
    if comparisons:
        parts.append(_html_table(*comparison_table(comparisons)))
    found = found or studies.Studies([], [])
    table = lambda header, cells: [_html_table(header, cells)]  # noqa: E731
    paragraph = lambda text: f"<p>{html.escape(text)}</p>"  # noqa: E731
    heading = lambda text: f"<h2>{html.escape(text)}</h2>"  # noqa: E731
    parts += robustness_report.sections(robust, table, paragraph, heading, comparison_table)
    parts += studies.sections(found, table, paragraph, heading)
    if found.curves:
        parts.append(_image(figures["learning_curve"], "learning curves"))
    parts += [
        "<h2>Curves</h2>",
        _image(figures["curves"], "curves"),
        "<h2>Test Dice against cost</h2>",
        _image(figures["pareto"], "pareto"),
        "<h2>Worst test images</h2>",
    ]
    for group in groups:
        parts += [f"<h3>{html.escape(group.name)}</h3>", _worst(group)]
    parts += ["<h2>Runs</h2>", _html_table(*run_table(groups)), "</body></html>"]
    path.write_text("\n".join(parts) + "\n")


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_runs(root: Path, evals: Sequence[Path] = ()) -> robustness_report.Evals:
    """The report's rows: the training runs under root, with the eval runs under root and
    under `evals` folded in (robustness, shifts: segpets/robustness_report.py)."""
    runs = [run for run in find_runs(root) if run != root or (root / "metrics.json").exists()]
    others = [run for folder in evals for run in find_runs(folder) if run not in runs]
    return robustness_report.with_evals([read_run(run, root) for run in runs], others, root)


def write_report(
    root: str | Path, baseline: str | None = None, evals: Sequence[str | Path] = ()
) -> dict[str, Path]:
    """Write the report's files into root (see the module's docstring); return their paths
    by kind: md, html, csv, groups, comparisons, curves, pareto, and where there are fold
    runs oof_comparisons, where there are learning curves learning_curve(_csv), where there
    are robustness results robustness_comparisons.

    Raises SegpetsError for a folder without runs or a baseline that names no group.
    """
    root = Path(root)
    read = read_runs(root, [Path(folder) for folder in evals])
    if not read.rows:
        raise SegpetsError(f"no runs under {root} (a run is a folder with .hydra/ or metrics.json)")
    groups = group_runs(read.rows)
    chosen = find_baseline(groups, baseline) if baseline is not None else None
    comparisons = compare(groups, chosen)
    found = find_studies(groups, chosen)
    without = [g.name for g in groups if g.finished and not g.summary["robustness"]]
    robust = robustness_report.Found(compare_robustness(groups, chosen), read, without)

    names = ("md", "html", "csv", "groups", "comparisons", "curves", "pareto")
    files = ("report.md", "report.html", "report.csv", "groups.csv", "comparisons.csv",
             "curves.png", "pareto.png")  # fmt: skip
    paths = {name: root / file for name, file in zip(names, files, strict=True)}
    shifted = any(group.shift for group in groups)
    run_columns = (*COLUMNS, *(robustness_report.RUN_COLUMNS if read.any_robustness else ()))
    run_rows = (run | robustness_report.run_fields(run) for group in groups for run in group.runs)
    _write_csv(paths["csv"], run_columns, run_rows)
    group_columns = (*GROUP_COLUMNS, *(("shift",) if shifted else ()),
                     *(robustness_report.GROUP_COLUMNS if read.any_robustness else ()))  # fmt: skip
    _write_csv(paths["groups"], group_columns, (group_row(group) for group in groups))
    _write_csv(paths["comparisons"], COMPARISON_COLUMNS, comparisons)
    if read.any_robustness:
        paths["robustness_comparisons"] = root / "robustness_comparisons.csv"
        _write_csv(paths["robustness_comparisons"], COMPARISON_COLUMNS, robust.comparisons)
    if found.out_of_fold:
        paths["oof_comparisons"] = root / "oof_comparisons.csv"
        _write_csv(paths["oof_comparisons"], studies.OOF_COLUMNS, found.out_of_fold)
    if found.curves:
        paths["learning_curve"] = root / "learning_curve.png"
        paths["learning_curve_csv"] = root / "learning_curve.csv"
        _write_csv(paths["learning_curve_csv"], studies.CURVE_COLUMNS,
                   studies.curve_rows(found.curves))  # fmt: skip
        studies.plot_learning_curves(found.curves, paths["learning_curve"], _pyplot())
    plot_curves(groups, paths["curves"])
    plot_pareto(groups, paths["pareto"])
    write_markdown(root, groups, comparisons, paths["md"], found, robust)
    write_html(root, groups, comparisons, paths, paths["html"], found, robust)
    return paths


def _options(options: Sequence[str]) -> tuple[str | None, list[str]]:
    """NAME from `baseline=NAME` or `report.baseline=NAME`, and the folders of `evals=DIR`
    (any number); SegpetsError for anything else."""
    baseline, evals = None, []
    for option in options:
        key, equals, value = option.partition("=")
        if key in ("evals", "report.evals") and value:
            if not Path(value).is_dir():
                raise SegpetsError(f"{option}: no such folder")
            evals.append(value)
            continue
        if key not in ("baseline", "report.baseline") or not equals or not value:
            raise SegpetsError(
                f"{option}: unknown option; the report takes DIR and optionally baseline=NAME "
                "(NAME: a group's name or part of it) and evals=DIR (segpets.eval runs)"
            )
        baseline = value
    return baseline, evals


def main(argv: list[str] | None = None) -> None:
    folder, options = runs_folder_command(
        __doc__,
        "python -m segpets.report",
        "baseline=NAME | evals=DIR",
        "compare each group with this group only (also report.baseline=NAME); "
        "read segpets.eval runs under DIR too (robustness, shift)",
        argv,
    )
    try:
        check_runs_folder(folder)
        paths = write_report(folder, *_options(options))
    except SegpetsError as error:
        print(f"segpets: error: {error}", file=sys.stderr)
        raise SystemExit(USER_ERROR) from None
    print(paths["md"].read_text())
    print("written: " + ", ".join(str(path) for path in paths.values()))


if __name__ == "__main__":
    sys.exit(main())
