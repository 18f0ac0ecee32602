"""What the command-line entry points share: error reporting and config helpers."""

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from segpets.errors import SegpetsError

log = logging.getLogger("segpets")

T = TypeVar("T")


def exit_on_user_error(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """Turn a `SegpetsError` into one message on stderr and exit status 2.

    Bad input is the user's to fix; a traceback would only hide the message.
    Any other exception is a bug and keeps its traceback.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> T:
        try:
            return task(cfg)
        except SegpetsError as error:
            print(f"segpets: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python values, for checkpoints and loggers."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
