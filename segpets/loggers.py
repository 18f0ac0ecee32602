"""Experiment trackers for `logger=`: Weights & Biases and MLflow, and what every logger gets.

`logger=wandb` and `logger=mlflow` are optional extras (`pip install -e ".[wandb]"`,
`".[mlflow]"`): their packages are imported when the logger is built, so segpets works
without them until one is chosen, and a missing one is a ConfigError naming the pip
command. Both stay on this machine by default:

- wandb runs offline into `<run dir>/wandb/offline-run-*` (`wandb sync` uploads one
  later); `logger.wandb.offline=false` logs live to wandb.ai.
- MLflow writes a local SQLite store, `<run dir>/mlflow/mlflow.db` (MLflow 3 refuses its
  plain-file store); `logger.mlflow.tracking_uri=http://HOST:5000` logs to a server.

Every logger gets the whole run config when training starts and, at the end, the run's
description and final metrics that TensorBoard shows in its HPARAMS tab (`log_results`).
"""

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from segpets.errors import ConfigError

HPARAMS_KEY = "hp"
"""Other loggers than TensorBoard get the HPARAMS under this key (`hp/model`, ...), beside
the full run config logged at the start; their metrics are named `hp/...` everywhere."""

MLFLOW_DB = "mlflow.db"


def require(module: str, option: str) -> None:
    """Import `module` (the extra behind `logger=<option>`) or raise a ConfigError naming pip."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(
            f"logger={option} needs the {module} package, an optional extra of segpets: "
            f'pip install -e ".[{option}]" (or pip install "segpets[{option}]"); {error}'
        ) from None


def wandb_logger(**options: Any) -> WandbLogger:
    """Lightning's WandbLogger; `offline=True` (the config's default) writes only to save_dir."""
    require("wandb", "wandb")
    return WandbLogger(**options)


def mlflow_logger(
    tracking_uri: str | None = None,
    save_dir: str | Path = "mlflow",
    artifact_location: str | None = None,
    **options: Any,
) -> MLFlowLogger:
    """Lightning's MLFlowLogger; without `tracking_uri`, a SQLite store in `save_dir`."""
    require("mlflow", "mlflow")
    if not tracking_uri:
        folder = Path(save_dir).absolute()
        folder.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{folder / MLFLOW_DB}"
        artifact_location = artifact_location or (folder / "artifacts").as_uri()
    return MLFlowLogger(
        tracking_uri=tracking_uri,
        save_dir=None,
        artifact_location=artifact_location,
        **options,
    )


def log_results(
    loggers: Iterable[Logger], hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int
) -> None:
    """Give every logger the run's HPARAMS (`runs.hparams_of`) and final metrics
    (`runs.hparam_metrics`), as TensorBoard's HPARAMS tab shows them."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):  # its HPARAMS tab: one row per run
            logger.log_hyperparams(dict(hparams), metrics=dict(metrics))
        else:
            logger.log_hyperparams({HPARAMS_KEY: dict(hparams)})
            if metrics:
                logger.log_metrics(dict(metrics), step=step)
        logger.save()


def close_loggers(loggers: Iterable[Logger], success: bool) -> None:
    """End the runs that Lightning leaves open: a wandb run stays the process's current run
    until finished, so a second `segpets.train` in one process would log into it."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish(exit_code=0 if success else 1)
