"""`python -m segpets.train`: fit a model, then score its best checkpoint on the test split.

`train(cfg)` is a plain function (tests call it with a composed config); `main` is the
thin Hydra shell around it and returns `val/dice` for sweepers to optimize.
"""

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from segpets.cli import exit_on_user_error, to_container
from segpets.module import MONITOR

log = logging.getLogger("segpets")


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Callbacks and loggers are dicts of named configs; `name: null` switches one off."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None]


def build_module(cfg: DictConfig) -> L.LightningModule:
    """The LightningModule described by `cfg`, carrying `cfg` into its checkpoints."""
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = instantiate(
        cfg.module,
        model=instantiate(cfg.model),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
    )
    module.run_config = to_container(cfg)
    return module


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return instantiate(cfg.data, augment=cfg.augment.train)


def _stage_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    return {name: float(value) for name, value in results[0].items()} if results else {}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, validate and test the best checkpoint; write `metrics.json` in the run dir."""
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.matmul_precision)

    # Model, loss and optimizer first: their option errors surface before data is read.
    module = build_module(cfg)
    datamodule = build_datamodule(cfg)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams(to_container(cfg))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    # A fast_dev_run saves no checkpoint: score the weights in memory instead.
    score_ckpt = best or None
    metrics: dict[str, Any] = {
        "seed": cfg.seed,
        "output_dir": str(output_dir),
        "best_checkpoint": best,
        "last_checkpoint": checkpoint.last_model_path if checkpoint else None,
        "best_epoch": _epoch_of(best),
        "epochs_trained": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    metrics["val"] = _stage_metrics(
        trainer.validate(module, datamodule=datamodule, ckpt_path=score_ckpt, verbose=False)
    )
    if cfg.get("test"):
        metrics["test"] = _stage_metrics(
            trainer.test(module, datamodule=datamodule, ckpt_path=score_ckpt, verbose=False)
        )
    if trainer.is_global_zero:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _print_summary(metrics, output_dir)
    return metrics


def _epoch_of(checkpoint_path: str | None) -> int | None:
    if not checkpoint_path:
        return None
    return int(torch.load(checkpoint_path, map_location="cpu", weights_only=True)["epoch"])


def _print_summary(metrics: dict[str, Any], output_dir: Path) -> None:
    test = metrics.get("test", {})
    lines = [
        f"val  Dice (mean per image): {metrics['val'].get('val/dice', float('nan')):.4f}",
        f"test Dice (mean per image): {test.get('test/dice', float('nan')):.4f}"
        if test
        else "test: skipped (test=false)",
        f"best checkpoint:  {metrics['best_checkpoint']} (epoch {metrics['best_epoch']})",
        f"metrics:          {output_dir / 'metrics.json'}",
        f"TensorBoard:      tensorboard --logdir {output_dir}",
    ]
    print("\n".join(lines))


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics["val"].get(MONITOR)


if __name__ == "__main__":
    main()
