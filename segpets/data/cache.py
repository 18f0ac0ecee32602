"""Decoded-image cache (`data.cache=true`): images and masks decoded and resized once.

Without heavy augmentation, decoding the JPEG and the trimap PNG is most of what a loader
worker does per sample. The cache stores every listed sample of a root as squares of
`cache_size(image_size)` pixels, a little larger than the training size so that random
crops keep their detail, in two memory-mapped uint8 arrays that all workers share through
the page cache:

    <cache_dir>/<root name>-<hash of the root's path>-<size>px/
        manifest.json           what it was built from (see `DecodedImageCache.key`)
        images-<build id>.npy   (N, size, size, 3) RGB
        trimaps-<build id>.npy  (N, size, size) raw masks (`Source.raw_mask`): Oxford's
                                trimaps (1 pet, 2 background, 3 border); a folder's
                                decoded 0 / 1 / 255 masks

The trimaps stay raw and `data.boundary` is applied when a sample is read, so changing the
boundary policy needs no rebuild: nearest-neighbour resizing only picks pixels, so it
commutes with the trimap -> mask lookup table.

The manifest records the format version, the root, the size and the size and mtime of every
source file (list files, photos, trimaps; a folder source adds its decoding options). `prepare_data` rebuilds the cache whenever any of
them differs; `setup` uses it only when it still matches, and reads the files otherwise. A
build writes a hidden sibling folder and renames it into place, so a reader sees either the
old complete cache or the new one; the build id in the array names makes a reader that
opened an older manifest fail loudly instead of reading the wrong rows.

The samples differ from the uncached path in one way: a photo is first resized to the
cache square (area averaging), then transformed. With `augment=none`, eval resizes
cache square -> image_size instead of photo -> image_size: about 1.5 grey levels apart on
average on the real photos at 256 px, and masks go through two nearest-neighbour steps
instead of one. Train and evaluate with the same `data.cache` setting.
"""

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.progress import track

from segpets.data.dataset import SegmentationDataset, Source, scan_names
from segpets.data.oxford_pet import OxfordPetDataset, OxfordPetSource
from segpets.errors import DataError

FORMAT_VERSION = 1  # bump when the layout or the resizing changes
CACHE_SCALE = 1.125
MANIFEST = "manifest.json"


def cache_size(image_size: int) -> int:
    """The side of the cached squares for a training size: 12.5 % larger (256 -> 288)."""
    return round(image_size * CACHE_SCALE)


def resize_for_cache(
    image: np.ndarray, trimap: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """A photo and its trimap as the cache stores them: size x size, area / nearest."""
    return (
        cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA),
        cv2.resize(trimap, (size, size), interpolation=cv2.INTER_NEAREST),
    )


class DecodedImageCache:
    """One source's samples at `size` x `size` under `cache_dir`; see the module docstring.

    `source` is a `Source`, or a root folder in the official Oxford-IIIT Pet layout.
    """

    def __init__(self, source: Source | str | Path, cache_dir: str | Path, size: int) -> None:
        self.source = source if isinstance(source, Source) else OxfordPetSource(source)
        self.root = Path(self.source.root)
        self.size = size
        digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:8]
        self.path = Path(cache_dir) / f"{self.root.name}-{digest}-{size}px"

    def key(self) -> dict[str, Any]:
        """What the cache must have been built from to be used: stats every source file."""
        return {
            "format": FORMAT_VERSION,
            "root": str(self.root.resolve()),
            "size": self.size,
            **self.source.cache_key(),
        }

    def manifest(self) -> dict[str, Any] | None:
        """The cache's manifest as it is on disk, fresh or not; None if there is none."""
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def fresh_manifest(self) -> dict[str, Any] | None:
        """The manifest if the cache matches the source files now, else None (stale or absent)."""
        manifest = self.manifest()
        if manifest is None or not _matches(manifest, self.key()):
            return None
        return manifest

    def build(self, progress: bool = True) -> dict[str, Any]:
        """Decode and store every usable sample unless a fresh cache exists; its manifest."""
        key = self.key()
        manifest = self.manifest()
        if manifest is not None and _matches(manifest, key):
            return manifest
        kept, skipped = scan_names(self.source, self.source.cached_names())
        build_id = uuid.uuid4().hex[:12]
        manifest = {
            **key,
            "build_id": build_id,
            "names": kept,
            "skipped": dict(skipped),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.parent / f".{self.path.name}.{os.getpid()}-{build_id}"
        staging.mkdir()
        try:
            self._write_arrays(staging, build_id, kept, progress)
            (staging / MANIFEST).write_text(json.dumps(manifest) + "\n")
            self._swap_in(staging, key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.manifest() or manifest

    def _write_arrays(self, folder: Path, build_id: str, names: list[str], progress: bool) -> None:
        count, size = len(names), self.size
        images = np.lib.format.open_memmap(
            folder / f"images-{build_id}.npy", "w+", np.uint8, (count, size, size, 3)
        )
        trimaps = np.lib.format.open_memmap(
            folder / f"trimaps-{build_id}.npy", "w+", np.uint8, (count, size, size)
        )
        rows = track(
            enumerate(names),
            total=count,
            description=f"Caching {count} images at {size} px",
            disable=not progress,
        )
        for row, name in rows:
            image, raw = self.source.load_sample(name)
            images[row], trimaps[row] = resize_for_cache(image, raw, size)
        images.flush()
        trimaps.flush()
        del images, trimaps

    def _swap_in(self, staging: Path, key: dict[str, Any]) -> None:
        """Rename `staging` to the cache folder; a matching cache of another process wins."""
        old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
        if self.path.exists():
            manifest = self.manifest()
            if manifest is not None and _matches(manifest, key):
                return
            with contextlib.suppress(FileNotFoundError):  # another process moved it first
                self.path.rename(old)
        try:
            staging.rename(self.path)
        except OSError:
            manifest = self.manifest()
            if manifest is None or not _matches(manifest, key):
                raise
        shutil.rmtree(old, ignore_errors=True)


def _matches(manifest: dict[str, Any], key: dict[str, Any]) -> bool:
    return all(manifest.get(field) == value for field, value in key.items())


class CachedSamples(SegmentationDataset):
    """A dataset whose samples come from a fresh `DecodedImageCache`, mixed into a
    source's dataset class (`CachedOxfordPetDataset`, `CachedFolderDataset`).

    Same names, skipped samples, splits and `native_mask` (read from the mask file, at the
    image's size) as the uncached dataset; the manifest's scan results stand in for the
    file checks, which cost as much as decoding. `_use_cache` must run before the
    dataset's own __init__, with the manifest that `DecodedImageCache.fresh_manifest()` or
    `.build()` returned.
    """

    def _use_cache(self, cache: DecodedImageCache, manifest: dict[str, Any]) -> None:
        self._manifest = manifest
        self._files = [
            cache.path / f"{kind}-{manifest['build_id']}.npy" for kind in ("images", "trimaps")
        ]
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def _usable(self, listed: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
        cached = set(self._manifest["names"])
        names = [name for name in listed if name in cached]
        skipped = [(name, self._manifest["skipped"][name]) for name in listed if name not in cached]
        rows = {name: row for row, name in enumerate(self._manifest["names"])}
        self._rows = [rows[name] for name in names]
        return names, skipped

    def _decoded(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        images, trimaps = self._open()
        row = self._rows[index]
        return np.array(images[row]), self.source.to_mask(trimaps[row])

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        """Map the arrays on first use, in each worker (a pickled memmap would be a copy)."""
        if self._arrays is None:
            try:
                images, trimaps = (np.load(path, mmap_mode="r") for path in self._files)
            except FileNotFoundError:
                raise DataError(
                    f"the decoded-image cache {self._files[0].parent} was rebuilt or deleted "
                    "while in use; restart the run"
                ) from None
            self._arrays = (images, trimaps)
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}


class CachedOxfordPetDataset(CachedSamples, OxfordPetDataset):
    """`OxfordPetDataset` whose samples come from a fresh `DecodedImageCache`."""

    def __init__(
        self,
        cache: DecodedImageCache,
        manifest: dict[str, Any],
        split: str,
        boundary: str = "foreground",
        transform: Callable[..., dict[str, Any]] | None = None,
        val_every: int = 10,
        source: Source | None = None,
    ) -> None:
        self._use_cache(cache, manifest)
        OxfordPetDataset.__init__(self, cache.root, split, boundary, transform, val_every, source)
