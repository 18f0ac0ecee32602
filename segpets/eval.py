"""`python -m segpets.eval ckpt_path=PATH`: score a checkpoint on a split of any dataset.

Writes into its run dir:

- `metrics.json`: per-image mean and dataset-level scores; `test_data` (what was scored:
  dataset, absolute root, split, boundary, images, as training records its test split) and
  `train_run` (the training run dir that holds the checkpoint; the report matches eval
  runs to training runs by it); `boundary_dice` and
  `interior_dice` (Dice in the band around the trimap's border and outside it, see
  segpets.analysis); `ece` (pixel calibration error); `best_threshold` and
  `best_threshold_dice` (the grid threshold with the highest mean per-image Dice on this
  split, `dice_by_threshold` the whole curve); `by_species` and `by_breed` where the
  official list files name them (Oxford's layout); `by_group` with a data=folder run's
  `data.groups_csv`.
- `per_image.csv`: one row per image, worst Dice first, with boundary_dice and
  interior_dice besides the scores training writes (and species, breed, group as above).
- `worst.png`: the `worst` lowest-Dice images with their errors coloured (none for 0).
- with `corruptions=standard`: robustness.csv, robustness_per_image.csv and
  robustness.png, the split scored again under corrupted photos, and the mean corruption
  Dice and relative robustness in metrics.json (segpets/corruptions.py).

The checkpoint's run decides the test-time augmentation (`tta`) and the post-processing
(`postprocess`) unless the command line names them (`tta=none postprocess=none` scores
the network alone). With a post-processing, calibration and the threshold sweep see its
probabilities (0 where it removed pet, 1 where it added pet). With `resolution=input` the
mean per-image Dice is exactly the `test/dice` that training reported for the same
checkpoint and data.
"""

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from segpets.analysis import (
    BAND_RADIUS,
    UNKNOWN,
    CalibrationHistogram,
    ThresholdSweep,
    border_bands,
    boundary_scores,
    breed_of,
    check_worst,
    read_species,
    scores_by_group,
    write_worst_sheet,
)
from segpets.cli import CONFIG_PATH, exit_on_user_error, run
from segpets.corruptions import build_corruptions, score_corruptions, write_robustness
from segpets.data.folder import read_groups
from segpets.data.loading import AUTO, loader_options
from segpets.errors import ConfigError
from segpets.inference import check_tta, postprocess_name
from segpets.metrics import BinarySegmentationMetrics, per_image_scores_from_probabilities
from segpets.runtime import configure_runtime
from segpets.scores import scored_data, write_scores
from segpets.trained import load_for_inference

RESOLUTIONS = ("input", "native")
WORST_SHEET = "worst.png"


def _check_options(cfg: DictConfig) -> None:
    check_tta(cfg.tta)
    if cfg.resolution not in RESOLUTIONS:
        raise ConfigError(f"resolution must be one of {list(RESOLUTIONS)}, got {cfg.resolution!r}")
    check_worst(cfg.worst)


def _native_views(
    probs: torch.Tensor, names: Sequence[str], dataset: Any
) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """Each image's probabilities resized back to its photo's size, with the original mask."""
    for prob, name in zip(probs, names, strict=True):
        truth = torch.from_numpy(dataset.native_mask(name)).to(probs.device)[None, None]
        resized = F.interpolate(
            prob[None], size=truth.shape[-2:], mode="bilinear", align_corners=False
        )
        yield resized, truth, [name]


class SplitScores:
    """Everything eval measures, fed one view (probabilities and masks at the scored size)
    at a time: per-image rows, dataset metrics, calibration and the threshold sweep."""

    def __init__(
        self,
        threshold: float,
        root: Path,
        device: torch.device,
        groups: dict[str, str] | None = None,
    ) -> None:
        self.threshold = threshold
        self.root = root
        self.species = read_species(root)
        # Species and breed where the official list files name them (Oxford's layout).
        self.pets = bool(self.species)
        self.groups = groups  # data.groups_csv's {stem: group}; None: no scores by group
        self.metric = BinarySegmentationMetrics(threshold=threshold, from_logits=False).to(device)
        self.calibration = CalibrationHistogram()
        self.sweep = ThresholdSweep()
        self.rows: list[dict[str, Any]] = []

    def update(self, probs: torch.Tensor, masks: torch.Tensor, names: Sequence[str]) -> None:
        self.metric.update(probs, masks)
        self.calibration.update(probs, masks)
        self.sweep.update(probs, masks)
        band = border_bands(self.root, names, tuple(masks.shape[-2:]), masks=masks)
        scores = {
            **per_image_scores_from_probabilities(probs, masks, self.threshold),
            **boundary_scores(probs, masks, band, self.threshold),
        }
        for index, name in enumerate(names):
            row = {key: float(value[index]) for key, value in scores.items()}
            self.rows.append({"name": name, **row})
            if self.pets:
                self.rows[-1]["species"] = self.species.get(name, UNKNOWN)
                self.rows[-1]["breed"] = breed_of(name)
            if self.groups is not None:
                self.rows[-1]["group"] = self.groups.get(name, UNKNOWN)

    def report(self) -> dict[str, Any]:
        """metrics.json's scores: dataset metrics, means of the per-image extras, the rest."""
        results = {name: float(value) for name, value in self.metric.compute().items()}
        best, best_dice = self.sweep.best(prefer=self.threshold)
        return {
            **results,
            "boundary_dice": _mean(row["boundary_dice"] for row in self.rows),
            "interior_dice": _mean(row["interior_dice"] for row in self.rows),
            "ece": self.calibration.compute(),
            "best_threshold": best,
            "best_threshold_dice": best_dice,
            "dice_by_threshold": {f"{t:.2f}": dice for t, dice in self.sweep.dice().items()},
            **(
                {
                    "by_species": scores_by_group(self.rows, "species"),
                    "by_breed": scores_by_group(self.rows, "breed"),
                }
                if self.pets
                else {}
            ),
            **(
                {"by_group": scores_by_group(self.rows, "group")} if self.groups is not None else {}
            ),
        }


def _train_run(ckpt_path: str | None) -> str | None:
    """The training run dir that holds the checkpoint (RUN/checkpoints/x.ckpt), absolute:
    the report matches eval runs to training runs by it. None for an ensemble."""
    if ckpt_path is None:
        return None
    path = Path(ckpt_path).resolve()
    return str(path.parent.parent if path.parent.name == "checkpoints" else path.parent)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _groups_table(title: str, groups: dict[str, dict[str, Any]], limit: int) -> str:
    """A few lines: `title`, then the groups worst Dice first (at most `limit`)."""
    ranked = sorted(groups.items(), key=lambda item: item[1]["dice"])
    shown = f"{limit} of {len(ranked)}, " if len(ranked) > limit else ""
    lines = [f"{title} ({shown}worst first):"]
    lines += [
        f"  {name:<28} {group['images']:>5} images  Dice {group['dice']:.4f}"
        for name, group in ranked[:limit]
    ]
    return "\n".join(lines)


def _summary(cfg: DictConfig, report: dict[str, Any], threshold: float) -> str:
    """What eval prints: the scores, the groups, calibration and the threshold advice."""
    best, best_dice = report["best_threshold"], report["best_threshold_dice"]
    if abs(best - threshold) < 1e-9:
        advice = f"threshold maximising {cfg.split} Dice: {best:.2f}, the one used"
    else:
        advice = (
            f"threshold maximising {cfg.split} Dice: {best:.2f} (Dice {best_dice:.4f} vs "
            f"{report['dice']:.4f} at {threshold:.2f}); use it with threshold={best:.2f}"
        )
    return "\n".join(
        [
            f"{cfg.split}: {report['images']} images, Dice {report['dice']:.4f} (mean per "
            f"image), {report['dice_dataset']:.4f} (dataset), IoU {report['iou']:.4f}, "
            f"precision {report['precision']:.4f}, recall {report['recall']:.4f}",
            f"outline band Dice {report['boundary_dice']:.4f}, interior Dice "
            f"{report['interior_dice']:.4f}; calibration error (ECE) {report['ece']:.4f}",
            advice,
            f"prediction: tta={report['tta']}, postprocess={report['postprocess'] or 'none'} "
            "(the run's unless named on the command line)",
            *(
                [
                    _groups_table("by species", report["by_species"], limit=5),
                    _groups_table("by breed", report["by_breed"], limit=10),
                ]
                if "by_species" in report
                else []
            ),
            *(
                [_groups_table("by group", report["by_group"], limit=10)]
                if "by_group" in report
                else []
            ),
        ]
    )


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Score `cfg.ckpt_path` on `cfg.split`; write metrics.json, per_image.csv, worst.png."""
    _check_options(cfg)
    corruptions = build_corruptions(cfg.get("corruptions"))
    configure_runtime(cfg)
    trained = load_for_inference(cfg, overrides)
    run, device = trained.run_config, trained.device
    threshold = trained.threshold

    datamodule = instantiate(run.data, augment=None)
    datamodule.prepare_data()
    dataset = datamodule.dataset(cfg.split)
    options = loader_options(
        run.data.num_workers,
        run.data.get("pin_memory"),
        run.data.get("prefetch_factor", AUTO),
        device.type,
    )

    def loader_of(data: Dataset) -> DataLoader:
        return DataLoader(data, batch_size=run.data.batch_size, **options)

    def predict(images: torch.Tensor) -> torch.Tensor:
        return trained.probabilities(images.to(device)).float()

    def views_of(batch: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        """A batch's probabilities and masks at the size `resolution` scores them."""
        probs = predict(batch["image"])
        if cfg.resolution == "input":
            return [(probs, batch["mask"].to(device), list(batch["name"]))]
        return list(_native_views(probs, batch["name"], dataset))

    groups_csv = run.data.get("groups_csv")  # data=folder: stem,group columns
    groups = read_groups(groups_csv) if groups_csv else None
    scores = SplitScores(threshold, Path(dataset.root), device, groups)
    output_dir = Path(cfg.paths.output_dir)
    with trained.autocast():
        for batch in track(loader_of(dataset), description=f"eval {cfg.split}", transient=True):
            for view in views_of(batch):
                scores.update(*view)
        sheet = write_worst_sheet(
            dataset,
            predict,
            {row["name"]: row["dice"] for row in scores.rows},
            output_dir / WORST_SHEET,
            cfg.worst,
            threshold,
            datamodule.mean,
            datamodule.std,
        )

    report = {
        **scores.report(),
        "images": len(scores.rows),
        "split": cfg.split,
        "tta": trained.tta,
        "postprocess": postprocess_name(trained.postprocess),
        "threshold": threshold,
        "resolution": cfg.resolution,
        "boundary": run.data.get("boundary"),  # data=folder: none
        "boundary_band_radius": BAND_RADIUS,
        "worst_sheet": None if sheet is None else str(output_dir / WORST_SHEET),
        "checkpoint": trained.ckpt_path or trained.checkpoints,
        "train_run": _train_run(trained.ckpt_path),
        "data_root": str(run.data.root),
        "test_data": scored_data(run.data, cfg.split, len(scores.rows), datamodule),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    robustness, robustness_files = None, []
    if corruptions is not None:
        with trained.autocast():
            robustness = score_corruptions(
                corruptions,
                dataset,
                run.data.batch_size,
                options,
                views_of,
                threshold,
                report,
                scores.rows,
            )
        report.update(robustness.metrics)
        robustness_files = write_robustness(robustness, output_dir)
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    write_scores(output_dir / "per_image.csv", sorted(scores.rows, key=lambda row: row["dice"]))
    written = ["metrics.json", "per_image.csv", *([WORST_SHEET] if sheet else [])]
    written += robustness_files
    print(
        _summary(cfg, report, threshold)
        + ("" if robustness is None else "\n" + robustness.summary())
        + "\nwritten: "
        + ", ".join(str(output_dir / name) for name in written)
    )
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    return evaluate(cfg, HydraConfig.get().overrides.task)["dice"]


if __name__ == "__main__":
    run(main)
