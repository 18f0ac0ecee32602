"""`segpets.load(path)`: a trained network that predicts pet masks from Python.

    import segpets

    segmenter = segpets.load("logs/train/runs/<date>/<time>/checkpoints/best.ckpt")
    mask = segmenter.predict("photo.jpg")            # uint8 (H, W): 0 background, 255 pet
    masks = segmenter.predict([image, array, path])  # a list, each at its image's size
    segmenter.save("pets-unet")                      # a model folder; segpets.load reads it

Predictions are those of `python -m segpets.predict`, mask for mask: the same reading of
the photo (any mode PIL reads: grayscale, RGBA, palette, 16-bit), the same resize to the
training size and normalisation, the same batches, device, autocast, test-time
augmentation and post-processing, and the same resize of the probabilities back to each
photo's size before the threshold. The checkpoint's run config says the size,
normalisation, precision, threshold, test-time augmentation and post-processing; the
device is the GPU when there is one (`device="auto"`), as for the apps.
"""

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps
from torch import nn

from segpets.data.folder import load_photo
from segpets.data.oxford_pet import UNREADABLE, image_to_rgb
from segpets.data.transforms import eval_transform
from segpets.errors import SegpetsError
from segpets.inference import (
    check_threshold,
    check_tta,
    mask_at_size,
    probabilities_at_size,
)
from segpets.model_folder import EXPECTED, load_folder, provenance_of, save_folder
from segpets.trained import TrainedModel, load_for_inference

BATCH_SIZE = 8
"""Images per forward pass: `python -m segpets.predict`'s default batch_size."""

ImageInput = str | os.PathLike | Image.Image | np.ndarray
"""An image: a file path, a PIL image, or a numpy array (H, W, 3) uint8 RGB."""

ACCEPTED = (
    "a file path, a PIL image, or a numpy array of shape (H, W, 3) uint8 RGB (also (H, W) "
    "or (H, W, 1) grayscale and (H, W, 4) RGBA uint8, and (H, W) uint16), or a list of those"
)


def load(path: str | os.PathLike, device: str = "auto") -> "Segmenter":
    """The trained network in `path`: a checkpoint (.ckpt) or a model folder.

    `device`: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps.
    Nothing is downloaded: a pretrained encoder named in the config is not fetched, the
    trained weights replace it. A path that is neither raises a SegpetsError naming it.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        trained, provenance = load_folder(path, device)
        return Segmenter(trained, provenance)
    if not path.is_file():
        raise SegpetsError(
            f"{path}: no such file or folder; segpets.load expects a checkpoint (.ckpt) written "
            f"by python -m segpets.train, or a model folder: {EXPECTED}"
        )
    config = OmegaConf.create({"ckpt_path": str(path), "device": device, "threshold": None})
    trained = load_for_inference(config, option="path")
    return Segmenter(trained, provenance_of(path))


class Segmenter:
    """A trained segpets network, in eval mode on its device, ready to predict."""

    def __init__(self, trained: TrainedModel, provenance: dict[str, Any] | None = None) -> None:
        self._trained = trained
        self._provenance = dict(provenance or {})
        data = trained.run_config.data
        self._transform = eval_transform(int(data.image_size), data.mean, data.std)

    @property
    def model(self) -> nn.Module:
        """The plain network: normalised images (B, 3, H, W) in, logits (B, 1, H, W) out."""
        return self._trained.model

    @property
    def config(self) -> DictConfig:
        """The run config it was trained with (model, data, module, trainer...)."""
        return self._trained.run_config

    @property
    def device(self) -> torch.device:
        return self._trained.device

    @property
    def precision(self) -> Any:
        """The run's `trainer.precision`: predictions autocast as it trained."""
        return self._trained.precision

    @property
    def threshold(self) -> float:
        """Probability from which a pixel is pet, unless `predict(threshold=...)` says otherwise."""
        return self._trained.threshold

    @property
    def tta(self) -> str:
        """The run's test-time augmentation, unless `predict(tta=...)` says otherwise."""
        return self._trained.tta

    @property
    def postprocess(self) -> Any:
        """The run's post-processing of each mask (segpets.postprocess), or None."""
        return self._trained.postprocess

    @property
    def image_size(self) -> int:
        """The side of the squares it was trained on; every image is resized to it."""
        return int(self.config.data.image_size)

    def __repr__(self) -> str:
        return (
            f"Segmenter({self.config.model._target_}, image_size={self.image_size}, "
            f"device={self.device}, precision={self.precision}, threshold={self.threshold:g}, "
            f"tta={self.tta}, postprocess={self.postprocess})"
        )

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        tta: str | None = None,
        threshold: float | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> np.ndarray | list[np.ndarray]:
        """Pet masks: uint8 (H, W) at each image's own size, 0 background and 255 pet.

        The masks `python -m segpets.predict` writes (`mask > 0` is the boolean mask).
        `images`: one image or a list of them (see ACCEPTED); one image gives one mask,
        a list a list. `tta`: none | hflip | d4 | hflip_scales, None for the run's. `threshold`: None for
        the checkpoint's. The run's post-processing, if any, shapes the mask at that threshold.
        """
        check_threshold(threshold)
        cut = self.threshold if threshold is None else float(threshold)
        masks = [
            mask_at_size(probs, height, width, cut)
            for probs, (height, width) in self._probabilities(images, tta, batch_size, cut)
        ]
        return masks if _is_batch(images) else masks[0]

    def probabilities(
        self,
        images: ImageInput | Sequence[ImageInput],
        tta: str | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> np.ndarray | list[np.ndarray]:
        """Pet probabilities: float32 (H, W) in [0, 1] at each image's own size, the values
        `predict` thresholds (`predict(x) == 255 * (probabilities(x) >= threshold)`). With
        a post-processing in the run, pixels it removes read 0 and pixels it adds 1."""
        result = [
            probabilities_at_size(probs, height, width).cpu().numpy()
            for probs, (height, width) in self._probabilities(
                images, tta, batch_size, self.threshold
            )
        ]
        return result if _is_batch(images) else result[0]

    def save(self, directory: str | os.PathLike) -> Path:
        """Write a model folder (segpets.model_folder) that `segpets.load` reads back."""
        return save_folder(self._trained, Path(directory).expanduser(), self._provenance)

    def _probabilities(
        self, images: Any, tta: str | None, batch_size: int, threshold: float
    ) -> Iterator[tuple[torch.Tensor, tuple[int, int]]]:
        """Probabilities at the model's size, post-processed at `threshold`, with each
        image's (height, width), in order."""
        if tta is not None:
            check_tta(tta)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SegpetsError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        items = list(images) if _is_batch(images) else [images]
        for start in range(0, len(items), batch_size):
            rgbs = [to_rgb(item) for item in items[start : start + batch_size]]
            tensors = [self._transform(image=rgb)["image"] for rgb in rgbs]
            batch = torch.stack(tensors).to(self.device)
            with self._trained.autocast():
                probs = self._trained.probabilities(batch, tta, threshold)
            for prob, rgb in zip(probs, rgbs, strict=True):
                yield prob, rgb.shape[:2]


def _is_batch(images: Any) -> bool:
    """A list or tuple of images, or a stack of them (N, H, W, C) in one array."""
    return isinstance(images, list | tuple) or (isinstance(images, np.ndarray) and images.ndim == 4)


def to_rgb(image: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3) of one image as `python -m segpets.predict` reads a photo."""
    if isinstance(image, str | os.PathLike):
        try:
            return load_photo(image)
        except FileNotFoundError:
            raise SegpetsError(f"{image}: no such image file") from None
        except UNREADABLE as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise SegpetsError(f"{image}: not an image PIL can read ({reason})") from None
    if isinstance(image, Image.Image):
        return image_to_rgb(ImageOps.exif_transpose(image))
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    raise SegpetsError(f"cannot predict on a {type(image).__name__}; give {ACCEPTED}")


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    shape, dtype = array.shape, array.dtype
    if array.ndim == 3 and shape[2] == 1:
        array = array[:, :, 0]
    fits = (
        dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and shape[2] in (3, 4)))
    ) or (dtype == np.uint16 and array.ndim == 2)
    if not fits or 0 in shape:
        raise SegpetsError(
            f"cannot predict on an array of shape {shape} and dtype {dtype}; give {ACCEPTED}"
        )
    if array.ndim == 3 and shape[2] == 3:
        return np.ascontiguousarray(array)
    return image_to_rgb(Image.fromarray(np.ascontiguousarray(array)))
