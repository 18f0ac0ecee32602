"""Losing nothing: atomic checkpoint writes, and finding the checkpoint to resume from."""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io import TorchCheckpointIO

from segpets.errors import SegpetsError

LAST = "last"
"""`ckpt_path=last`: the last.ckpt of the newest run of this task."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it, syncs it, then renames it in place.

    A kill during the write leaves the previous checkpoint intact: the rename is atomic
    on one filesystem, which a temporary file in the same folder guarantees (Lightning's
    own writer stages in the system temp dir, often another filesystem, where the final
    move is a plain copy).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise


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
