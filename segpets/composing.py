"""Running an app's task from Python as its command runs it, for `segpets.train(overrides)`.

`run_task(config_name, overrides, task)` composes the app's config from segpets' configs
(pkg://segpets.configs) with Hydra's compose API, makes the run dir that `hydra.run.dir`
names and writes `.hydra/` (config.yaml, hydra.yaml, overrides.yaml) into it, sets
HydraConfig so that `${hydra:runtime.output_dir}` and the run's recorded choices and
overrides resolve, and calls `task(cfg)`: the same function the app's `main` calls.
Hydra's global state is put back afterwards. Logging is left as the caller has it (the
command also writes `<task>.log`), and multirun (`-m`) sweeps remain the command's.
"""

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import env_override
from hydra.errors import HydraException
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from segpets.cli import CONFIG_PATH, composition_error_message
from segpets.errors import ConfigError

T = TypeVar("T")
CONFIG_MODULE = CONFIG_PATH.removeprefix("pkg://")


def check_overrides(overrides: Sequence[str]) -> list[str]:
    """`overrides` as a list of strings; a lone string is refused (it is not a list of them)."""
    if isinstance(overrides, str | bytes) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(
            f"overrides must be a list of strings such as ['model=unet', 'trainer.max_epochs=5'], "
            f"got {overrides!r}"
        )
    return list(overrides)


def compose_app_config(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """The app's config with Hydra's own node (`hydra:`), composed as the command composes it.

    A config that does not compose (an unknown key or option) is a ConfigError with the
    message the command prints.
    """
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3", job_name=config_name):
            return compose(config_name, overrides=list(overrides), return_hydra_config=True)
    except HydraException as error:
        message = composition_error_message(error).removeprefix("segpets: error: ")
        raise ConfigError(message) from None
    finally:
        restore_gh_from_backup(backup)


def run_task(config_name: str, overrides: Sequence[str], task: Callable[[DictConfig], T]) -> T:
    """`task(cfg)` on the app config `config_name` with `overrides`, in a new run dir."""
    config = compose_app_config(config_name, check_overrides(overrides))
    previous = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(config)  # `hydra.run.dir` may read hydra.* nodes
        output_dir = os.path.abspath(str(OmegaConf.select(config, "hydra.run.dir")))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = output_dir
        HydraConfig.instance().set_config(config)
        task_config = copy.deepcopy(config)
        with read_write(task_config), open_dict(task_config):
            del task_config["hydra"]
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        subdir = config.hydra.output_subdir
        if subdir is not None:
            saved = Path(output_dir) / str(subdir)
            saved.mkdir(parents=True, exist_ok=True)
            hydra_node = OmegaConf.create({"hydra": config.hydra})
            for name, node in (
                ("config.yaml", task_config),
                ("hydra.yaml", hydra_node),
                ("overrides.yaml", config.hydra.overrides.task),
            ):
                (saved / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
        with env_override(config.hydra.job.env_set):
            return task(task_config)
    finally:
        HydraConfig.instance().cfg = previous  # type: ignore[assignment]
