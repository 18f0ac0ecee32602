"""Everything a run is built from, made from its composed config with `_target_`.

The apps (train, bench, ...) call these; the option errors they raise name the option.
"""

import datetime
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from segpets.cli import to_container
from segpets.errors import ConfigError
from segpets.inference import check_tta
from segpets.precision import check_accelerator, resolve_precision


def resolve_trainer_config(cfg: DictConfig) -> None:
    """Settle `trainer.precision` (`auto` -> what this machine computes best) in `cfg`.

    Called before anything is built, so the run's stored config, its checkpoints and
    metrics.json name the precision it really trained in.
    """
    check_accelerator(cfg.trainer.get("accelerator"))
    cfg.trainer.max_time = normalize_max_time(cfg.trainer.get("max_time"))
    cfg.trainer.precision = resolve_precision(
        cfg.trainer.get("precision"), cfg.trainer.get("accelerator")
    )


MAX_TIME_UNITS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds")


def normalize_max_time(value: Any) -> str | None:
    """`trainer.max_time` as Lightning's "DD:HH:MM:SS" (None for no limit).

    Accepts that string or a dict of timedelta units ({minutes: 10}), which the command
    line gives as a config node that Lightning would not take; anything else is a
    ConfigError that shows both forms.
    """
    if value is None:
        return None
    if isinstance(value, DictConfig | dict):
        units = dict(value)
        if units and all(
            k in MAX_TIME_UNITS and isinstance(v, int | float) and v >= 0 for k, v in units.items()
        ):
            seconds = round(datetime.timedelta(**units).total_seconds())
            days, rest = divmod(seconds, 86400)
            return f"{days:02d}:{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    elif len(parts := str(value).split(":")) == 4 and all(p.strip().isdigit() for p in parts):
        return str(value)
    raise ConfigError(
        f"trainer.max_time={value!r} is not a duration: give DD:HH:MM:SS "
        "(trainer.max_time=00:00:10:00 is 10 minutes) or a dict of "
        f"{', '.join(MAX_TIME_UNITS)} (trainer.max_time={{minutes:10}})"
    )


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Callbacks and loggers are dicts of named configs; `name: null` switches one off."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None]


def optimizer_factory(cfg: DictConfig) -> Any:
    """The partial optimizer, tried on a dummy parameter so bad values fail now, not after setup."""
    factory = instantiate(cfg.optimizer)
    try:
        factory(params=[torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as error:
        raise ConfigError(f"optimizer ({cfg.optimizer._target_}): {error}") from None
    return factory


def build_module(cfg: DictConfig) -> L.LightningModule:
    """The LightningModule described by `cfg`, carrying `cfg` into its checkpoints."""
    check_tta(OmegaConf.select(cfg, "module.tta", default="none"))
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = instantiate(
        cfg.module,
        model=instantiate(cfg.model),
        loss=instantiate(cfg.loss),
        optimizer=optimizer_factory(cfg),
        scheduler=scheduler,
    )
    module.run_config = to_container(cfg)
    return module


def build_datamodule(cfg: DictConfig, **overrides: Any) -> L.LightningDataModule:
    """The data module of `cfg.data` with `cfg.augment`; `overrides` replace data options."""
    try:
        augment = instantiate(cfg.augment.train)
    except InstantiationException:
        # Augmentations interpolate data options (sizes): name a bad data option first.
        instantiate(cfg.data, augment=None)
        raise
    return instantiate(cfg.data, augment=augment, **overrides)


def build_trainer(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The Trainer, with Lightning's complaints about its options turned into ConfigErrors."""
    resolve_trainer_config(cfg)
    try:
        return instantiate(cfg.trainer, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ValueError | MisconfigurationException):
            raise ConfigError(f"trainer: {cause}") from None
        raise
