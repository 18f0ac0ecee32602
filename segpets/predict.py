"""`python -m segpets.predict`: pet masks for new photos, from a checkpoint alone.

    python -m segpets.predict ckpt_path=RUN/checkpoints/best.ckpt input=photos/ output_dir=out

For every readable image it writes, under `output_dir`:

    masks/<stem>.png       uint8 0 (background) / 255 (pet), single channel, original size
    overlays/<stem>.jpg    the photo with the predicted pet tinted
    triptychs/<stem>.png   image | prediction | truth with the Dice in a caption, when a
                           trimap for the image is found (`trimaps=DIR` or the dataset layout)
    predictions.csv        name, path, width, height, foreground_fraction, dice

Images are resized to the training size (`data.image_size`) and batched; the pet
probabilities are resized back bilinearly to each image's own size and thresholded there.
The run's test-time augmentation (`tta`) and post-processing (`postprocess`) apply unless
the command line names others.
Files that are not readable images are reported and skipped: the run goes on and exits
with status 1 at the end. `predict(cfg, overrides)` is the plain function tests call;
`main` is the Hydra shell around it.
"""

import csv
import glob
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from segpets.cli import CONFIG_PATH, exit_on_user_error, require_options, run
from segpets.data.folder import load_photo
from segpets.data.loading import AUTO, check_loader_options, loader_options
from segpets.data.oxford_pet import (
    UNREADABLE,
    check_boundary,
    load_trimap,
    trimap_to_mask,
)
from segpets.data.transforms import eval_transform
from segpets.errors import ConfigError, DataError, SegpetsError
from segpets.inference import check_tta, mask_at_size, postprocess_name
from segpets.metrics import per_image_scores_from_probabilities
from segpets.runtime import configure_runtime
from segpets.trained import load_for_inference
from segpets.visual import overlay, triptych

USAGE = "python -m segpets.predict ckpt_path=RUN/checkpoints/best.ckpt input=PHOTOS output_dir=DIR"
CSV_NAME = "predictions.csv"
CSV_FIELDS = ("name", "path", "width", "height", "foreground_fraction", "dice")


# ---------------------------------------------------------------------------- inputs


def resolve_inputs(spec: str | Sequence[str]) -> list[Path]:
    """The files `input` names, in order: a file; a folder's files (sorted, not hidden, not
    recursive, like `DIR/*` in a shell); or a glob (`**` recurses). A list mixes them.

    Broken symlinks are kept, so that they are reported rather than silently missed.
    """
    specs = [spec] if isinstance(spec, str) else [str(s) for s in spec]
    found: dict[Path, None] = {}  # ordered set: one input named twice is predicted once
    for item in specs:
        path = Path(item).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if not p.name.startswith("."))
            what = f"the folder {path} holds no file"
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            is_pattern = any(char in item for char in "*?[")
            what = f"no file matches {item!r}" + ("" if is_pattern else " (no such file)")
        matches = [p for p in matches if not p.is_dir()]
        if not matches:
            raise SegpetsError(
                f"input={item}: {what}. Give an image, a folder of images or a quoted glob, "
                "e.g. input='photos/*.jpg'"
            )
        found.update(dict.fromkeys(p.absolute() for p in matches))
    return list(found)


def output_names(paths: Sequence[Path]) -> list[str]:
    """One output stem per input: its own, or `<stem>_2`, `_3`... for later inputs with the
    same stem (`a.jpg`, `a.png`), never one that another input has as its own stem."""
    own = {path.stem for path in paths}
    taken: set[str] = set()
    names = []
    for path in paths:
        name, k = path.stem, 1
        while name in taken or (name != path.stem and name in own):
            k += 1
            name = f"{path.stem}_{k}"
        taken.add(name)
        names.append(name)
    return names


def output_paths(output_dir: Path, name: str) -> dict[str, Path]:
    return {
        "mask": output_dir / "masks" / f"{name}.png",
        "overlay": output_dir / "overlays" / f"{name}.jpg",
        "triptych": output_dir / "triptychs" / f"{name}.png",
    }


def check_outputs_apart(inputs: Sequence[Path], names: Sequence[str], output_dir: Path) -> None:
    """Refuse an `output_dir` that holds inputs, or any output that is an input (a symlink).

    Outputs are only ever written under `output_dir`, so this is what keeps inputs intact.
    """
    out_abs, out_real = output_dir.absolute(), output_dir.resolve()
    inputs_real = {path.resolve() for path in inputs}
    for path in inputs:
        if path.is_relative_to(out_abs) or path.resolve().is_relative_to(out_real):
            raise SegpetsError(
                f"output_dir={output_dir} holds the input {path}: predictions would mix with "
                "(or overwrite) the photos. Choose an output_dir apart from the inputs."
            )
    planned = [output_dir / CSV_NAME]
    for name in names:
        planned.extend(output_paths(output_dir, name).values())
    for path in planned:
        if path.resolve() in inputs_real:
            raise SegpetsError(
                f"{path} leads to the input {path.resolve()} (a symlink in output_dir): "
                "writing it would overwrite that input. Remove it or choose another output_dir."
            )


def find_trimap(image: Path, trimaps: Path | None) -> Path | None:
    """`trimaps/<stem>.png`, or for `ROOT/images/<stem>.jpg` the dataset's own trimap."""
    if trimaps is not None:
        candidate = trimaps / f"{image.stem}.png"
    elif image.parent.name == "images":
        candidate = image.parent.parent / "annotations" / "trimaps" / f"{image.stem}.png"
    else:
        return None
    return candidate if candidate.is_file() else None


def _unreadable_reason(error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):
        return "not an image (no format PIL can read)"
    if isinstance(error, FileNotFoundError):
        return "no such file (a broken symlink?)"
    return f"unreadable image: {str(error).splitlines()[0] if str(error) else type(error).__name__}"


@dataclass
class Photo:
    """One input as the loader yields it; `error` set means it could not be read."""

    path: Path
    name: str
    error: str | None = None
    image: np.ndarray | None = None  # RGB uint8 (H, W, 3), original size
    tensor: torch.Tensor | None = None  # normalised (3, S, S), the model's input size
    truth: np.ndarray | None = None  # mask (H, W): 0, 1, 255 = ignore
    truth_note: str | None = None  # why a trimap that was found is not used


class PhotoDataset(Dataset):
    """Reads photos in the loader's workers; a bad file becomes a `Photo` with an error."""

    def __init__(
        self,
        paths: Sequence[Path],
        names: Sequence[str],
        transform: Any,
        trimaps: Path | None,
        boundary: str,
    ) -> None:
        self.paths, self.names = list(paths), list(names)
        self.transform, self.trimaps, self.boundary = transform, trimaps, boundary

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Photo:
        photo = Photo(self.paths[index], self.names[index])
        try:
            photo.image = load_photo(photo.path)
        except UNREADABLE as error:
            photo.error = _unreadable_reason(error)
            return photo
        photo.tensor = self.transform(image=photo.image)["image"]
        trimap_path = find_trimap(photo.path, self.trimaps)
        if trimap_path is not None:
            photo.truth, photo.truth_note = self._truth(trimap_path, photo.image.shape[:2])
        return photo

    def _truth(
        self, trimap_path: Path, size: tuple[int, int]
    ) -> tuple[np.ndarray | None, str | None]:
        try:
            trimap = load_trimap(trimap_path)
            if trimap.shape != size:
                return None, f"{trimap_path} has shape {trimap.shape}, the image {size}"
            return trimap_to_mask(trimap, self.boundary), None
        except UNREADABLE as error:
            return None, f"{trimap_path} is unreadable: {error}"
        except DataError as error:
            return None, f"{trimap_path}: {error}"


# ---------------------------------------------------------------------------- outputs


def dice_score(mask: np.ndarray, truth: np.ndarray) -> float:
    """Dice of a written mask against a truth mask (255 = ignored), as the lab computes it."""
    pet = torch.from_numpy(mask > 0).float()[None, None]
    scores = per_image_scores_from_probabilities(pet, torch.from_numpy(truth)[None, None])
    return float(scores["dice"][0])


class PredictionWriter(AbstractContextManager):
    """Writes each photo's files and its row of predictions.csv as the batches come."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        for folder in ("masks", "overlays"):
            (output_dir / folder).mkdir(parents=True, exist_ok=True)
        self._file = (output_dir / CSV_NAME).open("w", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=CSV_FIELDS)
        self._csv.writeheader()
        self.dice: list[float] = []

    def write(self, photo: Photo, mask: np.ndarray) -> None:
        assert photo.image is not None
        paths = output_paths(self.output_dir, photo.name)
        Image.fromarray(mask).save(paths["mask"])
        Image.fromarray(overlay(photo.image, mask)).save(paths["overlay"], quality=90)
        dice = None
        if photo.truth is not None:
            dice = dice_score(mask, photo.truth)
            self.dice.append(dice)
            paths["triptych"].parent.mkdir(exist_ok=True)
            caption = f"{photo.name}   Dice {dice:.4f}   (image | prediction | truth)"
            triptych(photo.image, mask, photo.truth, caption).save(paths["triptych"])
        height, width = mask.shape
        self._csv.writerow(
            {
                "name": photo.name,
                "path": str(photo.path),
                "width": width,
                "height": height,
                "foreground_fraction": f"{(mask > 0).mean():.6f}",
                "dice": "" if dice is None else f"{dice:.6f}",
            }
        )

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()


# ---------------------------------------------------------------------------- running


def _check_options(cfg: DictConfig) -> None:
    check_tta(cfg.tta)
    batch_size = cfg.batch_size
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_loader_options(cfg.num_workers, AUTO, prefix="")
    if cfg.trimaps is not None and not Path(cfg.trimaps).is_dir():
        raise ConfigError(f"trimaps={cfg.trimaps}: no such folder")
    check_output_dir(Path(cfg.output_dir))


def check_output_dir(output_dir: Path) -> None:
    """A ConfigError if a file stands where `output_dir` or a folder in it has to be."""
    for path in (output_dir / "masks", output_dir / "overlays", output_dir / "triptychs"):
        if path.exists() and not path.is_dir():
            raise ConfigError(
                f"output_dir={output_dir}: {path} is a file, where predict writes a folder. "
                "Move it away or choose another output_dir"
            )
    for path in (output_dir, *output_dir.parents):
        if path.is_dir():
            return
        if path.exists():
            what = (
                "a file, not a folder" if path == output_dir else f"not a folder ({path} is a file)"
            )
            raise ConfigError(
                f"output_dir={output_dir} is {what}: predict writes masks/, overlays/ and "
                "predictions.csv into a folder. Choose a folder, new or existing"
            )


def predict(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Predict every image `cfg.input` names into `cfg.output_dir`; return a summary.

    `overrides` are the command line's (`data.image_size=...`, `model.*`): they replace
    the checkpoint's values, which are used for every option not given. The summary
    holds the counts, the skipped files with their reasons, and the mean Dice where
    trimaps were found.
    """
    require_options(cfg, ("input", "output_dir"), USAGE)
    _check_options(cfg)
    configure_runtime(cfg)
    trained = load_for_inference(cfg, overrides)
    device, threshold = trained.device, trained.threshold
    data = trained.run_config.data
    boundary = data.get("boundary", "foreground")  # data=folder has no trimap border
    check_boundary(boundary)

    spec = cfg.input
    inputs = resolve_inputs(list(spec) if isinstance(spec, ListConfig) else str(spec))
    names = output_names(inputs)
    output_dir = Path(cfg.output_dir)
    check_outputs_apart(inputs, names, output_dir)
    for path, name in zip(inputs, names, strict=True):
        if name != path.stem:
            print(f"note: {path} is written as {name} (another input has its stem)")

    dataset = PhotoDataset(
        inputs,
        names,
        eval_transform(data.image_size, data.mean, data.std),
        Path(cfg.trimaps) if cfg.trimaps is not None else None,
        boundary,
    )
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        collate_fn=list,  # photos differ in size; only their model inputs are stacked
        **loader_options(cfg.num_workers, None, AUTO, device.type),
    )

    skipped: list[tuple[str, str]] = []
    predicted = 0
    with PredictionWriter(output_dir) as writer, torch.no_grad():
        bar = Console(stderr=True)  # stdout keeps the results: notes and the summary
        for batch in track(loader, description="predicting", transient=True, console=bar):
            good = []
            for photo in batch:
                if photo.error is None:
                    good.append(photo)
                else:
                    skipped.append((str(photo.path), photo.error))
                    print(f"skipped {photo.path}: {photo.error}", file=sys.stderr)
            if not good:
                continue
            images = torch.stack([photo.tensor for photo in good]).to(device)
            with trained.autocast():
                probs = trained.probabilities(images)
            for photo, prob in zip(good, probs, strict=True):
                assert photo.image is not None
                height, width = photo.image.shape[:2]
                writer.write(photo, mask_at_size(prob, height, width, threshold))
                if photo.truth_note:
                    print(f"note: no Dice for {photo.path}: {photo.truth_note}", file=sys.stderr)
                predicted += 1
        dice = writer.dice

    summary = {
        "output_dir": str(output_dir),
        "predicted": predicted,
        "skipped": skipped,
        "with_truth": len(dice),
        "mean_dice": float(np.mean(dice)) if dice else None,
        "threshold": threshold,
        "tta": trained.tta,
        "postprocess": postprocess_name(trained.postprocess),
        "image_size": int(data.image_size),
    }
    print(f"predicted {predicted} images into {output_dir}; skipped {len(skipped)} files")
    if dice:
        print(f"mean Dice over the {len(dice)} images with a trimap: {summary['mean_dice']:.4f}")
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    summary = predict(cfg, HydraConfig.get().overrides.task)
    if summary["skipped"]:
        raise SystemExit(1)


if __name__ == "__main__":
    run(main)
