"""`python -m segpets.eval ckpt_path=PATH`: score a checkpoint on a split of any dataset.

Writes `metrics.json` (per-image and dataset-level scores) and `per_image.csv` (worst
images first) into its run dir. With `tta=none resolution=input` the mean per-image
Dice is exactly the `test/dice` that training reported for the same checkpoint and data.
"""

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.progress import track
from torch.utils.data import DataLoader

from segpets.cli import CONFIG_PATH, exit_on_user_error, run
from segpets.data.loading import AUTO, loader_options
from segpets.errors import ConfigError
from segpets.inference import check_tta, predict_probabilities
from segpets.metrics import BinarySegmentationMetrics, per_image_scores_from_probabilities
from segpets.runtime import configure_runtime
from segpets.trained import load_for_inference

RESOLUTIONS = ("input", "native")
PER_IMAGE_FIELDS = ("name", "dice", "iou", "true_fraction", "pred_fraction")


def _check_options(cfg: DictConfig) -> None:
    check_tta(cfg.tta)
    if cfg.resolution not in RESOLUTIONS:
        raise ConfigError(f"resolution must be one of {list(RESOLUTIONS)}, got {cfg.resolution!r}")


def _native_views(
    probs: torch.Tensor, names: Sequence[str], dataset: Any
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Each image's probabilities resized back to its photo's size, with the original mask."""
    for prob, name in zip(probs, names, strict=True):
        truth = torch.from_numpy(dataset.native_mask(name)).to(probs.device)[None, None]
        resized = F.interpolate(
            prob[None], size=truth.shape[-2:], mode="bilinear", align_corners=False
        )
        yield resized, truth


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Score `cfg.ckpt_path` on `cfg.split`; write metrics.json and per_image.csv."""
    _check_options(cfg)
    configure_runtime(cfg)
    trained = load_for_inference(cfg, overrides)
    model, run, device = trained.model, trained.run_config, trained.device
    threshold = trained.threshold

    datamodule = instantiate(run.data, augment=None)
    datamodule.prepare_data()
    dataset = datamodule.dataset(cfg.split)
    loader = DataLoader(
        dataset,
        batch_size=run.data.batch_size,
        **loader_options(
            run.data.num_workers,
            run.data.get("pin_memory"),
            run.data.get("prefetch_factor", AUTO),
            device.type,
        ),
    )
    metric = BinarySegmentationMetrics(threshold=threshold, from_logits=False).to(device)

    rows: list[dict[str, Any]] = []
    with trained.autocast():
        for batch in track(loader, description=f"eval {cfg.split}", transient=True):
            probs = predict_probabilities(model, batch["image"].to(device), cfg.tta).float()
            masks = batch["mask"].to(device)
            if cfg.resolution == "input":
                views = [(probs, masks)]
            else:
                views = list(_native_views(probs, batch["name"], dataset))
            scores: dict[str, list[float]] = {}
            for view_probs, view_masks in views:
                metric.update(view_probs, view_masks)
                for key, value in per_image_scores_from_probabilities(
                    view_probs, view_masks, threshold
                ).items():
                    scores.setdefault(key, []).extend(value.tolist())
            for index, name in enumerate(batch["name"]):
                rows.append({"name": name, **{key: scores[key][index] for key in scores}})

    results = {name: float(value) for name, value in metric.compute().items()}
    report = {
        **results,
        "images": len(rows),
        "split": cfg.split,
        "tta": cfg.tta,
        "threshold": threshold,
        "resolution": cfg.resolution,
        "checkpoint": trained.ckpt_path or trained.checkpoints,
        "data_root": str(run.data.root),
    }
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(output_dir / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PER_IMAGE_FIELDS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda row: row["dice"]))
    print(
        f"{cfg.split}: {len(rows)} images, Dice {results['dice']:.4f} (mean per image), "
        f"{results['dice_dataset']:.4f} (dataset), IoU {results['iou']:.4f}, "
        f"precision {results['precision']:.4f}, recall {results['recall']:.4f}\n"
        f"written: {output_dir / 'metrics.json'}, {output_dir / 'per_image.csv'}"
    )
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    return evaluate(cfg, HydraConfig.get().overrides.task)["dice"]


if __name__ == "__main__":
    run(main)
