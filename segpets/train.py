"""`python -m segpets.train`: fit a model, then score its best checkpoint on the test split.

`train(cfg)` is a plain function (tests call it with a composed config); `main` is the
thin Hydra shell around it and returns `optimized_metric` for sweepers to optimize:
`val/dice`, or with `optimized_metric=oof/dice data.folds=K` the mean out-of-fold Dice of
all K folds trained in the one job (`train_folds`). From Python,
`segpets.train(overrides=[...])` composes the config and makes the run dir as the command
does, then calls the same `train`: this module is callable (`TrainModule`), so the name
works as the app and as the function, also after `import segpets.train`.
"""

import json
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from segpets.analysis import write_worst_sheet
from segpets.builders import (
    build_datamodule,
    build_module,
    build_trainer,
    instantiate_all,
    resolve_trainer_config,
)
from segpets.callbacks import encoder_callbacks
from segpets.checkpointing import resume_checkpoint, write_atomically
from segpets.cli import CONFIG_PATH, exit_on_user_error, run, to_container
from segpets.composing import run_task
from segpets.cost import forward_gflops
from segpets.errors import ConfigError
from segpets.inference import postprocess_name
from segpets.loggers import close_loggers, log_results
from segpets.module import MONITOR
from segpets.precision import machine
from segpets.runs import hparam_metrics, hparams_of, hydra_choices, hydra_overrides
from segpets.runtime import configure_runtime
from segpets.scores import TEST_SCORES, VAL_SCORES, read_scores, scored_data, write_scores

OOF = "oof/dice"
OPTIMIZED_METRICS = (MONITOR, OOF)
OOF_FILE = "oof.json"
INTERRUPTED = 130
"""Exit status of a run stopped by Ctrl-C or SIGTERM after saving last.ckpt."""


def _stage_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    return {name: float(value) for name, value in results[0].items()} if results else {}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, validate and test the best checkpoint; write `metrics.json` in the run dir."""
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_checkpoint(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True)
    configure_runtime(cfg)
    resolve_trainer_config(cfg)

    # Model, loss, optimizer and trainer first: their option errors surface before data is read.
    module = build_module(cfg)
    callbacks = [*instantiate_all(cfg.get("callbacks")), *encoder_callbacks(module.model)]
    loggers = instantiate_all(cfg.get("logger"))
    trainer = build_trainer(cfg, callbacks=callbacks, logger=loggers or False)
    datamodule = build_datamodule(cfg)
    store_data_options(cfg, module, datamodule, output_dir if trainer.is_global_zero else None)
    try:
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):  # TensorBoard: with the results
                logger.log_hyperparams(to_container(cfg))
        metrics = _fit_and_test(cfg, trainer, module, datamodule, ckpt_path, output_dir)
    except BaseException:
        close_loggers(trainer.loggers, success=False)
        raise
    close_loggers(trainer.loggers, success=True)
    return metrics


def _fit_and_test(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    ckpt_path: str | None,
    output_dir: Path,
) -> dict[str, Any]:
    tested_checkpoint = check_test_checkpoint(cfg.get("test_checkpoint", "best"), trainer.callbacks)
    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        print(
            f"Stopped at epoch {trainer.current_epoch}, step {trainer.global_step}; "
            f"resume with: python -m segpets.train ckpt_path={output_dir / 'checkpoints' / 'last.ckpt'}"
        )
        raise SystemExit(INTERRUPTED) from None

    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    # A fast_dev_run saves no checkpoint (None): val and test then score the weights in memory.
    best = next((c.best_model_path for c in checkpoints if c.monitor and c.best_model_path), None)
    last = next((c.best_model_path for c in _last_writers(checkpoints) if c.best_model_path), None)
    scored = last if tested_checkpoint == "last" else best
    metrics: dict[str, Any] = {
        "seed": cfg.seed,
        "precision": str(cfg.trainer.precision),
        "machine": machine(),
        "choices": hydra_choices(),
        "overrides": hydra_overrides(),
        "parameters": sum(p.numel() for p in module.model.parameters()),
        "gflops_forward": _gflops(module, cfg),
        "train_seconds": round(time.perf_counter() - started, 2),
        "output_dir": str(output_dir),
        "best_checkpoint": best,
        "last_checkpoint": last,
        "best_epoch": _epoch_of(best),
        "scored_checkpoint": scored,
        "epochs_trained": trainer.current_epoch,
        "global_step": trainer.global_step,
        "train_images": _train_images(datamodule),
    }
    excluded = getattr(datamodule, "excluded", lambda: None)()
    if excluded is not None:  # data.exclude: left out of train and val, kept in test
        metrics["excluded"] = excluded
    metrics["val"] = _stage_metrics(
        trainer.validate(module, datamodule=datamodule, ckpt_path=scored, verbose=False)
    )
    val_scores = _score_val_fold(cfg, trainer, module, datamodule, scored)
    if cfg.get("test"):
        tested = time.perf_counter()
        metrics["test"] = _stage_metrics(
            trainer.test(module, datamodule=datamodule, ckpt_path=scored, verbose=False)
        )
        seconds = time.perf_counter() - tested
        metrics["test_images_per_second"] = round(len(module.test_scores) / seconds, 2)
        metrics["test_data"] = _test_data(cfg, len(module.test_scores), datamodule)
        metrics["test_prediction"] = {
            "tta": getattr(module, "tta", "none"),
            "postprocess": postprocess_name(getattr(module, "postprocess", None)),
        }
    if hasattr(datamodule, "data_summary"):
        metrics["data_summary"] = datamodule.data_summary()
    log_results(
        trainer.loggers, hparams_of(metrics, cfg), hparam_metrics(metrics), trainer.global_step
    )
    if trainer.is_global_zero:
        store_resplit(datamodule, output_dir)
        if val_scores is not None:
            write_scores(output_dir / VAL_SCORES, val_scores)
        if cfg.get("test"):
            write_scores(output_dir / TEST_SCORES, module.test_scores)
            _write_worst(cfg, module, datamodule, output_dir)
        write_atomically(
            output_dir / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode()
        )
        _print_summary(metrics, output_dir)
    return metrics


def _train_images(datamodule: L.LightningDataModule) -> int | None:
    """How many images the run trained on: the x of the report's learning curves."""
    return len(datamodule.dataset("train")) if hasattr(datamodule, "dataset") else None


def _score_val_fold(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    scored: str | None,
) -> list[dict[str, Any]] | None:
    """With data.folds: the val fold's per-image scores (and its `fold`) by the tested
    checkpoint, predicted as the test is (tta, postprocess): the run's out-of-fold scores,
    which the folds' runs pool over every train+val image. None without data.folds.

    It runs as a test of the val loader with the loggers muted, so that the logs hold
    one test/* per run, the test split's."""
    fold = cfg.data.get("fold")
    if cfg.data.get("folds") is None or fold is None:
        return None
    loggers = trainer.loggers
    trainer.loggers = []
    try:
        trainer.test(
            module, dataloaders=datamodule.val_dataloader(), ckpt_path=scored, verbose=False
        )
    finally:
        trainer.loggers = loggers
    return [{**row, "fold": fold} for row in module.test_scores]


def store_resplit(datamodule: L.LightningDataModule, output_dir: Path) -> None:
    """With data.folds or data.train_fraction: the splits the run used in `output_dir`/splits/
    ({train,val,test}.txt, as a folder's split is written) and, with folds, folds.csv (stem,
    fold of every train+val image)."""
    record = getattr(datamodule, "resplit_record", dict)()
    if not record:
        return
    folder = output_dir / "splits"
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in record["splits"].items():
        write_atomically(folder / f"{split}.txt", "".join(f"{n}\n" for n in names).encode())
    if record["folds"]:
        rows = "".join(f"{stem},{fold}\n" for stem, fold in sorted(record["folds"].items()))
        write_atomically(folder / "folds.csv", f"stem,fold\n{rows}".encode())


def check_test_checkpoint(choice: str, callbacks: list) -> str:
    """`choice`, the test_checkpoint option, once it is best, or last with a callback that
    writes last.ckpt."""
    if choice not in ("best", "last"):
        raise ConfigError(
            f"test_checkpoint must be best (the best val Dice) or last (the weights training "
            f"ended with), got {choice!r}"
        )
    if choice == "last" and not _last_writers(callbacks):
        raise ConfigError(
            "test_checkpoint=last but no callback writes last.ckpt: keep "
            "callbacks.last_checkpoint (configs/callbacks/default.yaml) or set "
            "test_checkpoint=best"
        )
    return choice


def _last_writers(callbacks: list) -> list[ModelCheckpoint]:
    """The checkpoint callbacks that monitor nothing: those writing last.ckpt."""
    return [c for c in callbacks if isinstance(c, ModelCheckpoint) and not c.monitor]


def _write_worst(
    cfg: DictConfig, module: L.LightningModule, datamodule: L.LightningDataModule, output_dir: Path
) -> None:
    """worst.png: the `worst_images` test images that the tested weights scored lowest."""
    k = cfg.get("worst_images", 0)
    if not k or not hasattr(datamodule, "dataset"):
        return
    module.eval()
    write_worst_sheet(
        datamodule.dataset("test"),
        lambda images: module.probabilities(images.to(module.device)),
        {row["name"]: row["dice"] for row in module.test_scores},
        output_dir / "worst.png",
        k,
        module.threshold,
        datamodule.mean,
        datamodule.std,
    )


def _gflops(module: L.LightningModule, cfg: DictConfig) -> float | None:
    """Forward GFLOPs per image at the run's image size, or None where it cannot be counted."""
    size = cfg.data.get("image_size")
    if not isinstance(size, int):
        return None
    try:
        return round(forward_gflops(module.model, size), 3)
    except RuntimeError:
        return None


def store_data_options(
    cfg: DictConfig,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    output_dir: Path | None,
) -> None:
    """Keep what the data module settled (a folder's split, computed statistics) with the run.

    The options go into the config that checkpoints carry (`module.run_config`), so eval,
    predict, export and model folders use the same split and normalisation anywhere; the
    statistics also into `cfg`. A folder's split is written to `output_dir`/splits/*.txt
    (None: not written, as on ranks other than 0), the layout data=folder reads from a
    root's splits/, to reuse it on other runs.
    """
    stored = getattr(datamodule, "stored_options", dict)()
    if not stored:
        return
    run_data = module.run_config["data"]
    for key, value in stored.items():
        run_data[key] = value
        if key != "splits":  # every stem: kept out of the logged hyperparameters
            with open_dict(cfg):
                cfg.data[key] = value
    splits = stored.get("splits")
    if splits and output_dir is not None:
        folder = output_dir / "splits"
        folder.mkdir(parents=True, exist_ok=True)
        for split, names in splits.items():
            write_atomically(folder / f"{split}.txt", "".join(f"{n}\n" for n in names).encode())


def _test_data(
    cfg: DictConfig, images: int, datamodule: L.LightningDataModule | None = None
) -> dict[str, Any]:
    """What the test scores were measured on: runs pair by image only on the same test set."""
    return scored_data(cfg.data, "test", images, datamodule)


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


def train_folds(cfg: DictConfig) -> dict[str, Any]:
    """Train every fold of `data.folds` in this one job, each in RUN/fold_k as a fold run of
    experiment=cv (with .hydra/ saying its fold, so that the report reads it as one), and
    return the mean out-of-fold Dice (OOF): each train+val image's Dice by the fold model
    that held it out, averaged over all of them; written to RUN/oof.json.

    What a sweeper can optimise on a small dataset in place of one small val split: Hydra
    sweeps job by job, so the folds must train within the job. Each fold's checkpoint is
    chosen on its own val fold (`test_checkpoint=last` avoids that optimism)."""
    folds = cfg.data.get("folds")
    if not folds or int(folds) < 2:
        raise ConfigError(
            f"optimized_metric={OOF} trains every fold in this job and needs data.folds=K, "
            f"K >= 2 (got {folds}); e.g. data.folds=5 (without experiment=cv: no data.fold sweep)"
        )
    if cfg.get("ckpt_path"):
        raise ConfigError(
            f"optimized_metric={OOF} trains K new fold runs and resumes none: leave out ckpt_path"
        )
    output_dir = Path(cfg.paths.output_dir)
    dice: dict[str, float] = {}
    for fold in range(int(folds)):
        fold_cfg = cfg.copy()
        fold_dir = output_dir / f"fold_{fold}"
        with open_dict(fold_cfg):
            fold_cfg.data.fold = fold
            fold_cfg.paths.output_dir = str(fold_dir)
            fold_cfg.optimized_metric = MONITOR
        (fold_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        (fold_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(fold_cfg))
        overrides = [o for o in hydra_overrides() if not o.startswith("data.fold=")]
        (fold_dir / ".hydra" / "overrides.yaml").write_text(
            OmegaConf.to_yaml(OmegaConf.create([*overrides, f"data.fold={fold}"]))
        )
        train(fold_cfg)
        dice.update({n: v["dice"] for n, v in read_scores(fold_dir / VAL_SCORES).items()})
    result = {OOF: sum(dice.values()) / len(dice), "folds": int(folds), "images": len(dice)}
    write_atomically(output_dir / OOF_FILE, (json.dumps(result, indent=2) + "\n").encode())
    print(f"out-of-fold Dice over {len(dice)} train+val images, {folds} folds: {result[OOF]:.4f}")
    return result


def optimized(cfg: DictConfig) -> float | None:
    """Train as `cfg` says and return its `optimized_metric` (val/dice unless set)."""
    metric = cfg.get("optimized_metric") or MONITOR
    if metric not in OPTIMIZED_METRICS:
        raise ConfigError(
            f"optimized_metric must be one of {list(OPTIMIZED_METRICS)}, got {metric!r}"
        )
    if metric == OOF:
        return train_folds(cfg)[OOF]
    return train(cfg)["val"].get(MONITOR)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return optimized(cfg)


class TrainModule(types.ModuleType):
    """This module, callable: `segpets.train(overrides=[...])` trains from Python."""

    def __call__(self, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """Run what `python -m segpets.train OVERRIDES...` runs; return its metrics.

        The config is composed from segpets' configs with `overrides` (Hydra's syntax:
        `model=unet`, `trainer.max_epochs=5`, `+key=value`), the run dir is made as the
        command makes it (`.hydra/` holds the config and overrides), and `train` runs in
        this process. The metrics are those written to the run dir's metrics.json. Bad
        options raise a SegpetsError (the command's exit status 2).
        """
        return run_task("train", overrides, train)


sys.modules[__name__].__class__ = TrainModule

if __name__ == "__main__":
    run(main)
