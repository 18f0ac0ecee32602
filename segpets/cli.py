"""What the command-line entry points share: error reporting and config helpers.

Exit status 2 means "your input is wrong": a config Hydra cannot compose (an unknown
group option lists the valid ones; an unknown key gets "did you mean ...?") or a
`SegpetsError` (one message naming the file or option, what is wrong and how to fix it).
Anything else is a bug and keeps its traceback.
"""

import argparse
import difflib
import functools
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import (
    CompactHydraException,
    ConfigCompositionException,
    OverrideParseException,
    SearchPathException,
)
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

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
    """Run a `@hydra.main` function; Hydra's own config errors exit with status 2, not 1.

    Hydra is told to raise its errors (HYDRA_FULL_ERROR=1) rather than print them and exit 1,
    so that they are told apart here: a config that does not compose is one message (an
    unknown key with the nearest known one) and status 2; an exception from the task
    itself, a bug, goes on with its full traceback.
    """
    config_dir = _config_dir_argument(sys.argv[1:])
    if config_dir is not None and not Path(config_dir).is_dir():
        print(
            f"segpets: error: --config-dir {config_dir}: no such folder. Give a folder of your "
            "own YAML files laid out like segpets' config groups (e.g. DIR/experiment/mine.yaml "
            "for experiment=mine); they add to segpets' configs and replace those of the same name",
            file=sys.stderr,
        )
        raise SystemExit(USER_ERROR)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # also for the processes a launcher or DDP starts
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _task_started:
            raise SystemExit(USER_ERROR) from None
        raise
    except (ConfigCompositionException, OverrideParseException, SearchPathException) as error:
        # Only composing raises these, also for the later jobs of a multirun.
        print(composition_error_message(error), file=sys.stderr)
        raise SystemExit(USER_ERROR) from None
    except Exception as error:
        if _task_started:
            raise
        user_error = _user_error(error)
        if user_error is not None:
            print(f"segpets: error: {user_error}", file=sys.stderr)
        elif isinstance(error, CompactHydraException):
            print(composition_error_message(error), file=sys.stderr)
        elif isinstance(error, OSError) and error.filename:  # making the run dir
            print(f"segpets: error: {_folder_error(error)}", file=sys.stderr)
        else:  # as Hydra reported it before: the traceback, as the input's fault
            traceback.print_exc()
        raise SystemExit(USER_ERROR) from None


RUN_FOLDER_OPTIONS = ("output_dir", "hydra.run.dir", "hydra.sweep.dir")
"""The options that give the run's folder: one of them is named first when Hydra cannot make
it, also when another option (`ckpt_path=X output_dir=X`) has the same value."""


def _folder_error(error: OSError) -> str:
    """Why Hydra could not make the run's folder, named by the option that gave its path
    (`output_dir=...` for predict, `hydra.run.dir=...`)."""
    path = str(error.filename)
    options = [arg.split("=", 1) for arg in sys.argv[1:] if "=" in arg]
    options = [(key.lstrip("+~"), value) for key, value in options if value == path]
    options.sort(key=lambda option: option[0] not in RUN_FOLDER_OPTIONS)  # stable
    named = f"{options[0][0]}={path}" if options else f"the run folder {path}"
    if isinstance(error, FileExistsError):
        return f"{named} is a file, not a folder: the run writes its files into it. Choose another"
    if isinstance(error, NotADirectoryError):
        return f"{named} is not a folder: a file stands in its path. Choose another"
    return f"{named}: {error.strerror or error}"


def composition_error_message(error: BaseException) -> str:
    """What to print for a config that Hydra could not compose.

    An override of a key the config lacks (`trainer.max_epoch=5`) is one line naming the
    nearest key at that level (`trainer.max_epochs`), or listing that level's keys when none
    is near; any other error is Hydra's own message (an unknown group option lists the valid
    ones).
    """
    cause = error.__cause__
    if (
        isinstance(error, ConfigCompositionException)
        and isinstance(cause, ConfigAttributeError | ConfigKeyError)
        and isinstance(cause.parent_node, DictConfig)
        and cause.key is not None
        and cause.full_key
    ):
        key, full_key = str(cause.key), str(cause.full_key)
        prefix = full_key[: -len(key)] if full_key.endswith(key) else ""
        known = [str(k) for k in cause.parent_node]
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            return f"segpets: error: {full_key}: no such option; did you mean {prefix}{close[0]}?"
        add = re.search(r"use (\+\S+)", str(error))
        hint = f"to add it anyway, write {add.group(1) if add else f'+{full_key}=VALUE'}"
        shown = [k for k in known if not k.startswith("_")]
        if shown:
            where = prefix.rstrip(".") or "the config"
            hint = f"{where} has {', '.join(shown)}; {hint}"
        return f"segpets: error: {full_key}: no such option; {hint}"
    message = str(error)
    if isinstance(cause, OmegaConfBaseException):
        message += os.linesep + str(cause)
    return message


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


def runs_folder_command(
    doc: str, prog: str, metavar: str, options_help: str, argv: list[str] | None
) -> tuple[Path, list[str]]:
    """The folder and the KEY=VALUE options of an app that reads a folder of runs (report,
    audit); its module docstring is the help. A SegpetsError where the folder is none."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n")[0],
        epilog="\n".join(doc.split("\n")[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", help="a multirun dir or any folder of runs")
    parser.add_argument("options", nargs="*", metavar=metavar, help=options_help)
    args = parser.parse_args(argv)
    return Path(args.dir), list(args.options)


def check_runs_folder(folder: Path) -> None:
    """A SegpetsError that says what to give where `folder` is a file or missing."""
    if not folder.is_dir():
        what = " is a file, not a folder" if folder.exists() else ": no such folder"
        raise SegpetsError(
            f"{folder}{what}. Give the folder of a multirun "
            "(logs/train/multiruns/<date>/<time>) or any folder that holds runs"
        )
