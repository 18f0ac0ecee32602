"""What the command-line entry points share: error reporting and config helpers.

Exit status 2 means "your input is wrong": a config Hydra cannot compose (an unknown
group option lists the valid ones) or a `SegpetsError` (one message naming the file or
option, what is wrong and how to fix it). Anything else is a bug and keeps its traceback.
"""

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from segpets.errors import ConfigError, SegpetsError

T = TypeVar("T")
USER_ERROR = 2
CONFIG_PATH = "pkg://segpets.configs"
"""Where the apps' configs are: the package `segpets.configs`, the repo's configs/ folder,
installed with segpets (pyproject.toml), so every install finds them."""

_task_started = False


def _user_error(error: BaseException) -> SegpetsError | None:
    """The SegpetsError behind `error`, also when Hydra's instantiate wrapped it."""
    while error is not None:
        if isinstance(error, SegpetsError):
            return error
        error = error.__cause__ or error.__context__
    return None


def exit_on_user_error(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """Decorates a Hydra task: a `SegpetsError` becomes one line on stderr and exit status 2."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> T:
        global _task_started
        _task_started = True
        try:
            return task(cfg)
        except Exception as error:
            user_error = _user_error(error)
            if user_error is None:
                raise
            print(f"segpets: error: {user_error}", file=sys.stderr)
            raise SystemExit(USER_ERROR) from None

    return wrapper


def run(main: Callable[[], Any]) -> None:
    """Run a `@hydra.main` function; Hydra's own config errors exit with status 2, not 1."""
    config_dir = _config_dir_argument(sys.argv[1:])
    if config_dir is not None and not Path(config_dir).is_dir():
        print(
            f"segpets: error: --config-dir {config_dir}: no such folder. Give a folder of your "
            "own YAML files laid out like segpets' config groups (e.g. DIR/experiment/mine.yaml "
            "for experiment=mine); they add to segpets' configs and replace those of the same name",
            file=sys.stderr,
        )
        raise SystemExit(USER_ERROR)
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _task_started:
            raise SystemExit(USER_ERROR) from None
        raise


def _config_dir_argument(args: Sequence[str]) -> str | None:
    """The value of Hydra's `--config-dir DIR` / `-cd DIR` / `--config-dir=DIR`, if given."""
    for index, arg in enumerate(args):
        for flag in ("--config-dir", "-cd"):
            if arg == flag and index + 1 < len(args):
                return args[index + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def require_options(cfg: DictConfig, keys: Sequence[str], usage: str) -> None:
    """A ConfigError with the command's usage for mandatory options left out."""
    missing = [key for key in keys if OmegaConf.is_missing(cfg, key) or cfg[key] is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be given: {usage}")


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python values, for checkpoints and loggers."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
