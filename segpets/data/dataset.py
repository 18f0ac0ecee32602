"""One dataset class for every source: a split of (image, mask) pairs read through a `Source`.

A source knows its layout: which names each split lists, where a name's image and mask
are, whether a sample is usable, and how its mask file decodes. Everything after that
(transforms, the decoded-image cache, loaders, the DataModule) is shared, so Oxford-IIIT
Pet, its synthetic stand-in and a folder of images and masks behave alike.

Every dataset keeps the contract its users rely on: `.names` (the usable names),
`.skipped` ((name, reason) of the listed ones left out), `._decoded(index)` (RGB uint8
H x W x 3 and mask uint8 H x W of 0 / 1 / 255 before any transform), `.native_mask(name)`,
`.image_path(name)` and `.mask_path(name)`.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
from torch.utils.data import Dataset

from segpets.data.transforms import build_transform
from segpets.errors import DataError


def file_stat(path: Path) -> list[int] | None:
    """[size, mtime in ns] of a file, as manifests record it; None where it is missing."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


class Source:
    """Where a dataset's files are and how they read; subclasses fill in each method.

    `raw_mask` is what the decoded-image cache stores (resized nearest-neighbour) and
    `to_mask` turns it into 0 / 1 / 255; they split so that an option applied in
    `to_mask` (Oxford's `boundary`) needs no cache rebuild.
    """

    root: Path
    kind: str = "source"

    def split_names(self, split: str) -> list[str]:
        """The names `split` lists, usable or not."""
        raise NotImplementedError

    def split_origin(self, split: str) -> str:
        """Where `split`'s names come from, for messages (a list file, a folder...)."""
        raise NotImplementedError

    def check(self, name: str) -> str | None:
        """Why sample `name` cannot be used, or None if it can."""
        raise NotImplementedError

    def image_path(self, name: str) -> Path:
        raise NotImplementedError

    def mask_path(self, name: str) -> Path:
        raise NotImplementedError

    def load_image(self, name: str) -> np.ndarray:
        """RGB uint8 (H, W, 3) of `name`."""
        raise NotImplementedError

    def raw_mask(self, name: str) -> np.ndarray:
        """(H, W) uint8 at the image's size, before `to_mask`; what the cache stores."""
        raise NotImplementedError

    def load_sample(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """`load_image` and `raw_mask` of `name` together, for sources that share work
        between the two (a folder's mask is sized by its decoded image)."""
        return self.load_image(name), self.raw_mask(name)

    def to_mask(self, raw: np.ndarray) -> np.ndarray:
        """0 / 1 / 255 mask of a `raw_mask` (or of its cached, resized copy)."""
        return raw

    def native_mask(self, name: str) -> np.ndarray:
        """The 0 / 1 / 255 mask of `name` at its image's size."""
        return self.to_mask(self.raw_mask(name))

    def foreground_shares(self, names: list[str]) -> dict[str, float]:
        """{name: share of foreground among the valid mask pixels} of the usable `names`:
        what k-fold stratifies by (segpets/data/folds.py)."""
        shares = {}
        for name in names:
            if self.check(name) is None:
                mask = self.native_mask(name)
                valid = np.count_nonzero(mask != 255)
                shares[name] = float(np.count_nonzero(mask == 1)) / max(valid, 1)
        return shares

    def cached_names(self) -> list[str]:
        """Every name of every split, once, in a fixed order: what the cache holds."""
        raise NotImplementedError

    def cache_key(self) -> dict[str, Any]:
        """What the cache must have been built from: stats of every source file, and the
        options that change `raw_mask`."""
        raise NotImplementedError


def scan_names(source: Source, names: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split `names` into usable ones and (name, reason) pairs for the rest."""
    kept, skipped = [], []
    for name in names:
        reason = source.check(name)
        if reason is None:
            kept.append(name)
        else:
            skipped.append((name, reason))
    return kept, skipped


class SegmentationDataset(Dataset):
    """One split of a source as dicts {"image", "mask" (1, H, W) uint8, "name"}.

    Without a transform, images keep their size and are only normalised with ImageNet
    statistics; the DataModule passes the resize / augmentation pipeline. Samples whose
    files are missing or unreadable are left out here and listed in `skipped`, so that a
    bad file never stops training mid-epoch.
    """

    def __init__(
        self,
        source: Source,
        split: str,
        transform: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        self.source = source
        self.root = Path(source.root)
        self.split = split
        self.transform = transform if transform is not None else build_transform([])
        listed = source.split_names(split)
        self.names, self.skipped = self._usable(listed)
        if not self.names:
            reasons = "; ".join(f"{n}: {r}" for n, r in self.skipped[:3])
            why = (
                f"all {len(listed)} listed samples are missing or unreadable ({reasons})"
                if listed
                else "it lists no sample for this split"
            )
            raise DataError(f"{source.split_origin(split)} gives no usable {split} samples: {why}")

    def __len__(self) -> int:
        return len(self.names)

    def _usable(self, listed: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
        """The listed names whose files are usable, and (name, reason) for the others."""
        return scan_names(self.source, listed)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self._decoded(index)
        out = self.transform(image=image, mask=mask)
        return {"image": out["image"], "mask": out["mask"].unsqueeze(0), "name": self.names[index]}

    def _decoded(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `index` as an RGB image and its mask, before any transform."""
        image, raw = self.source.load_sample(self.names[index])
        return image, self.source.to_mask(raw)

    def native_mask(self, name: str) -> np.ndarray:
        """The mask of `name` at its image's original size, before any transform."""
        return self.source.native_mask(name)

    def image_path(self, name: str) -> Path:
        """The image file of sample `name`."""
        return self.source.image_path(name)

    def mask_path(self, name: str) -> Path:
        """The mask file of sample `name` (Oxford-IIIT Pet: its trimap)."""
        return self.source.mask_path(name)

    def seed_augmentations(self, seed: int) -> None:
        """Albumentations keeps its own RNG, deaf to global seeds: seed it explicitly."""
        if isinstance(self.transform, A.BaseCompose):
            self.transform.set_random_seed(seed)
