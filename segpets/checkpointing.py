"""Checkpoints: writing them atomically, finding and reading them, and what they hold.

A segpets checkpoint carries the resolved config of the run that wrote it
(`segpets_config`), so eval, predict and export need nothing but its path; options
given on their command line replace the checkpoint's own. Resuming training checks
the checkpoint the same way before Lightning reads it.
"""

import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from torch import nn

from segpets.errors import SegpetsError

LAST = "last"
"""`ckpt_path=last`: the last.ckpt of the newest run of this task."""

CONFIG_KEY = "segpets_config"
"""The checkpoint key holding the resolved config of the run that wrote it."""

# Top-level keys of the train config that a checkpoint's user may replace when reusing it.
REPLACEABLE = ("data", "augment", "model", "module", "trainer", "tta", "postprocess")


# ---------------------------------------------------------------------------- writing


def _create_staging_file(path: Path) -> tuple[int, Path]:
    """A new, empty, hidden file beside `path`, opened for writing.

    Created with mode 0666 so that the process umask applies, as for any file the user
    writes (mkstemp's fixed 0600 would keep others from reading a checkpoint or export).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(staging, flags, 0o666), staging
        except FileExistsError:
            continue


def write_atomically(path: str | Path, data: bytes | Callable[[IO[bytes]], None]) -> None:
    """Write `data` (bytes, or a function writing to a binary file) to `path`, all or nothing.

    It goes to a temporary file in the same folder, is synced, then renamed over `path`:
    the rename is atomic on one filesystem, so a kill during the write leaves the previous
    file intact and never a half-written one. The file's mode follows the umask (0644
    under umask 022). The folder is created if need be.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staging = _create_staging_file(path)
    try:
        with os.fdopen(descriptor, "wb") as file:
            if isinstance(data, bytes | bytearray | memoryview):
                file.write(data)
            else:
                data(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint with `write_atomically`: a kill mid-write loses nothing.

    Lightning's own writer stages in the system temp dir, often another filesystem,
    where the final move is a plain copy; this one stages beside the checkpoint.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        write_atomically(path, lambda file: torch.save(checkpoint, file))


# ---------------------------------------------------------------------------- finding


def newest_last_checkpoint(runs_dir: str | Path) -> Path | None:
    """The most recently written `<run>/checkpoints/last.ckpt` under `runs_dir`, if any."""
    candidates = list(Path(runs_dir).glob("**/checkpoints/last.ckpt"))
    return max(candidates, key=lambda path: path.stat().st_mtime) if candidates else None


def find_checkpoint(ckpt_path: str, runs_dir: str | Path) -> Path:
    """The checkpoint `ckpt_path` names (a path, or `last`), or a SegpetsError saying why not."""
    if ckpt_path == LAST:
        newest = newest_last_checkpoint(runs_dir)
        if newest is None:
            raise SegpetsError(
                f"ckpt_path=last: no run under {runs_dir} has a checkpoints/last.ckpt to resume "
                "from; pass a checkpoint's path instead, e.g. ckpt_path=<run>/checkpoints/last.ckpt"
            )
        return newest
    return Path(ckpt_path)


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run dir a checkpoint belongs to: `<run>/checkpoints/x.ckpt` -> `<run>`."""
    checkpoint = Path(checkpoint)
    return (
        checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    )


def resume_dir(ckpt_path: str | None, runs_dir: str, new_dir: str) -> str:
    """Hydra's run dir: the resumed run's own dir, or `new_dir` for a new run.

    Registered as the `segpets.run_dir` resolver, so that resuming keeps writing into
    the same folder, TensorBoard run and checkpoints. It never raises: a checkpoint that
    cannot be found gets a new dir here and a clear error from `train`.
    """
    if not ckpt_path:
        return new_dir
    checkpoint = newest_last_checkpoint(runs_dir) if ckpt_path == LAST else Path(ckpt_path)
    return str(run_dir_of(checkpoint)) if checkpoint and checkpoint.is_file() else new_dir


# ---------------------------------------------------------------------------- reading


def read_checkpoint(path: str | Path, option: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents, or a SegpetsError saying what is wrong with the file.

    `option` is the command-line option that named the file, for the messages.
    """
    path = Path(path)
    if not path.is_file():
        raise SegpetsError(
            f"{option}={path}: no such file. Pass the best.ckpt or last.ckpt of a run, "
            f"e.g. {option}=logs/train/runs/<date>/<time>/checkpoints/best.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails in many ways on a file that is not its own
        raise SegpetsError(
            f"{option}={path}: not a readable PyTorch checkpoint (truncated or another kind "
            f"of file): {str(error).splitlines()[0]}"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise SegpetsError(f"{option}={path}: a PyTorch file, but not a Lightning checkpoint")
    if CONFIG_KEY not in checkpoint:
        raise SegpetsError(
            f"{option}={path}: a Lightning checkpoint without a segpets config; only "
            "checkpoints written by `python -m segpets.train` can be used here"
        )
    return checkpoint


def replace_options(
    config: DictConfig, composed: DictConfig, overrides: Sequence[str]
) -> DictConfig:
    """`config` with the options named in `overrides` taken from `composed`.

    `composed` is the command's own Hydra config, where Hydra has already parsed and
    checked the overrides; only their keys are read here, e.g. `data.root=DIR` or
    `data=synthetic`, which replaces the whole `data` node.
    """
    config = config.copy()
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0] in REPLACEABLE:
            OmegaConf.update(
                config, key, OmegaConf.select(composed, key), merge=False, force_add=True
            )
    return config


def load_model(
    checkpoint: dict[str, Any], config: DictConfig, path: str | Path, option: str = "ckpt_path"
) -> nn.Module:
    """The network described by `config.model`, with the checkpoint's weights, in eval mode.

    `model.pretrained` is not applied: the checkpoint's weights replace it, and the
    ImageNet file or state dict it named need not exist where the checkpoint is used.
    A model that brings its own weights (`model=ensemble` over a member's checkpoint)
    is used as built.
    """
    no_pretrained = {"pretrained": "none"} if "pretrained" in config.model else {}
    model = instantiate(config.model, **no_pretrained)
    stored = OmegaConf.select(OmegaConf.create(checkpoint[CONFIG_KEY]), "model._target_")
    if getattr(model, "weights_from_checkpoints", False) and stored != config.model._target_:
        return model.eval()
    state = {
        key.removeprefix("model."): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("model.")
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise SegpetsError(
            f"{option}={path}: its weights do not fit {config.model._target_} as configured "
            f"(a checkpoint of another model, or model.* overrides that change its shape): "
            f"{str(error).splitlines()[0]}"
        ) from None
    return model.eval()


def model_from_checkpoint(
    path: str | Path, option: str = "ckpt_path"
) -> tuple[nn.Module, DictConfig]:
    """Model (in eval mode) and run config from a checkpoint alone, without a composed config."""
    checkpoint = read_checkpoint(path, option)
    config = OmegaConf.create(checkpoint[CONFIG_KEY])
    return load_model(checkpoint, config, path, option), config


def ensemble_checkpoints(composed: DictConfig | None) -> list[str]:
    """The `model.checkpoints` of a composed `model=ensemble` config, else []."""
    if composed is None:
        return []
    return [str(path) for path in OmegaConf.select(composed, "model.checkpoints") or ()]


def load_trained(
    path: str | Path | None,
    composed: DictConfig | None = None,
    overrides: Sequence[str] = (),
    option: str = "ckpt_path",
) -> tuple[nn.Module, DictConfig]:
    """Model and run config from a checkpoint, with command-line `overrides` applied.

    `path=None` with `model=ensemble model.checkpoints=[a.ckpt,...]` among the overrides
    takes the run config (data, module, trainer) from the first member. `option` names
    the path in messages.
    """
    if path is None:
        members = ensemble_checkpoints(composed)
        if not members:
            raise SegpetsError(
                "ckpt_path is missing: pass the checkpoint to use, e.g. ckpt_path=logs/train/"
                "runs/<date>/<time>/checkpoints/best.ckpt, or several to average with "
                "model=ensemble model.checkpoints=[a.ckpt,b.ckpt]"
            )
        path, option = members[0], "model.checkpoints"
    checkpoint = read_checkpoint(path, option)
    config = OmegaConf.create(checkpoint[CONFIG_KEY])
    if composed is not None:
        config = replace_options(config, composed, overrides)
    return load_model(checkpoint, config, path, option), config


# ---------------------------------------------------------------------------- resuming


def resume_checkpoint(cfg: DictConfig, output_dir: str | Path) -> str | None:
    """The checkpoint a training run resumes from, checked, or None for a new run.

    `ckpt_path` is a path or `last` (the newest run of `cfg.task_name`); it must be a
    segpets checkpoint of the model `cfg` describes, as for eval. Without one, a run dir
    that already holds a run is refused: segpets never overwrites a run.
    """
    output_dir = Path(output_dir)
    if not cfg.get("ckpt_path"):
        if list(output_dir.glob("hpc_ckpt_*.ckpt")):
            return None  # a requeued SLURM job: Lightning resumes from its own checkpoint
        used = [
            p.name for p in (output_dir / "checkpoints", output_dir / "metrics.json") if p.exists()
        ]
        if used:
            raise SegpetsError(
                f"the run dir {output_dir} already holds a run ({', '.join(used)}); segpets never "
                "overwrites one. Resume it with ckpt_path=last (or the path of its last.ckpt), "
                "or start a new run without hydra.run.dir"
            )
        return None
    path = find_checkpoint(cfg.ckpt_path, Path(cfg.paths.log_dir) / cfg.task_name / "runs")
    load_model(read_checkpoint(path), cfg, path)
    return str(path)
