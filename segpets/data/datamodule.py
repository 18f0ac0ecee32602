"""Oxford-IIIT Pet (or its synthetic stand-in) as a LightningDataModule.

`prepare_data` (one process per node) downloads or generates the files, and with
`cache` set builds the decoded-image cache (segpets/data/cache.py); `setup` (every
process) reads the lists, checks the files and reports the samples it leaves out in one
warning. Call `prepare_data()` before `setup()` when using it outside a Trainer.
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, get_worker_info

from segpets.constants import IMAGENET_MEAN, IMAGENET_STD
from segpets.data.cache import CachedOxfordPetDataset, DecodedImageCache, cache_size
from segpets.data.download import download_oxford_pet
from segpets.data.loading import AUTO, check_loader_options, loader_options
from segpets.data.oxford_pet import SPLITS, OxfordPetDataset, check_boundary, check_layout
from segpets.data.synthetic import SyntheticPets
from segpets.data.transforms import eval_transform, train_transform
from segpets.errors import ConfigError

STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}
SHOWN_SKIPPED = 5  # how many left-out samples the warning names
CACHED_SPLITS = {True: SPLITS, "train": ("train",)}  # data.cache -> the splits it serves


class OxfordPetDataModule(L.LightningDataModule):
    """Train / val / test loaders of dicts {"image", "mask", "name"} (see OxfordPetDataset).

    Train uses `augment` (default: resize only) and outputs train_size squares (default:
    image_size); eval splits resize to image_size x image_size, the size the model
    predicts at; both end with Normalize(mean, std) and ToTensorV2.
    With `synthetic`, `prepare_data` writes that generator's dataset to `root`.
    With `cache`, samples are read from squares of cache_size(image_size) pixels decoded
    once into `cache_dir`, and used only while they match the files (else decoded again):
    every split's with `cache=True`, the train split's alone with `cache="train"`, so that
    val and test are scored on the photos exactly as without a cache.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 256,
        batch_size: int = 16,
        num_workers: int | str = AUTO,
        boundary: str = "foreground",
        download: bool = False,
        augment: Sequence[A.BasicTransform] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        val_every: int = 10,
        pin_memory: bool | None = None,
        prefetch_factor: int | str = AUTO,
        synthetic: SyntheticPets | None = None,
        cache: bool | str = False,
        cache_dir: str | None = None,
        train_size: int | None = None,
    ) -> None:
        super().__init__()
        _check_int("data.image_size", image_size, 1)
        if train_size is None:
            train_size = image_size
        _check_int("data.train_size", train_size, 1, "(or null: data.image_size)")
        _check_int("data.batch_size", batch_size, 1)
        check_loader_options(num_workers, prefetch_factor)
        _check_int("data.val_every", val_every, 2, "(every val_every-th trainval line is val)")
        check_boundary(boundary)
        if not root:
            raise ConfigError(f"data.root must be a folder path, got {root!r}")
        if synthetic is not None and not isinstance(synthetic, SyntheticPets):
            raise ConfigError(
                "data.synthetic must be a SyntheticPets (give it "
                f"_target_: segpets.data.SyntheticPets) or null, got {synthetic!r}"
            )
        if synthetic is not None and download:
            raise ConfigError(
                "data.download=true and data.synthetic both set: synthetic data is generated, "
                "not downloaded; drop one of them"
            )
        if not (isinstance(cache, bool) or cache == "train"):
            raise ConfigError(
                "data.cache must be false, true (every split) or train (the train split "
                f"alone), got {cache!r}"
            )
        if cache and not cache_dir:
            raise ConfigError(
                f"data.cache={str(cache).lower()} needs data.cache_dir, the folder for the "
                "decoded images"
            )
        self.root = Path(root)
        self.image_size = image_size
        self.train_size = train_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.boundary = boundary
        self.download = download
        self.mean = _three_floats("data.mean", mean, positive=False)
        self.std = _three_floats("data.std", std, positive=True)
        self.val_every = val_every
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.synthetic = synthetic
        self.cache = DecodedImageCache(root, cache_dir, cache_size(image_size)) if cache else None
        self.cached_splits = CACHED_SPLITS[cache] if cache else ()
        # Built now so that a bad augment config fails before any data is read.
        self.train_transform = train_transform(augment, train_size, self.mean, self.std)
        self.eval_transform = eval_transform(image_size, self.mean, self.std)
        self._datasets: dict[str, OxfordPetDataset] = {}

    def prepare_data(self) -> None:
        if Path(self.root).is_file():  # before anything writes under it
            check_layout(self.root)
        if self.synthetic is not None:
            self.synthetic.write(self.root)
        elif self.download:
            download_oxford_pet(self.root)
        if self.cache is not None:
            self.cache.build()

    def setup(self, stage: str | None = None) -> None:
        """Build the splits `stage` needs ("fit": train and val; None: all three)."""
        self._build(STAGE_SPLITS.get(stage, SPLITS))

    def dataset(self, split: str) -> OxfordPetDataset:
        """The dataset of "train", "val" or "test" (built on first use)."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self._build((split,))
        return self._datasets[split]

    def set_train_transform(self, transform: A.Compose, size: int) -> None:
        """Train on `transform`, which outputs `size` squares, from the next train loader on.

        The train dataset, if built, takes it at once; loader workers hold copies of the
        old one, so a Trainer must build its train loader again (FinalPhase does).
        """
        self.train_transform = transform
        self.train_size = size
        if "train" in self._datasets:
            self._datasets["train"].transform = transform

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        options = self._loader_options()
        if options["num_workers"] == 0:  # workers are seeded by _seed_worker instead
            rank = self.trainer.global_rank if self.trainer is not None else 0
            dataset.seed_augmentations(int(torch.randint(2**62, ())) + rank)
        return self._loader(dataset, train=True, options=options)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), train=False)

    def _loader(
        self, dataset: OxfordPetDataset, train: bool, options: dict[str, Any] | None = None
    ) -> DataLoader:
        options = options or self._loader_options()
        sampler = None
        trainer = self.trainer
        if not train and trainer is not None and trainer.world_size > 1:
            # Each process scores a disjoint share and none is repeated (Lightning's own
            # sampler pads with repeats), so synced metrics equal one process's.
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            sampler=sampler,
            drop_last=train and len(dataset) > self.batch_size,
            worker_init_fn=_seed_worker if options["num_workers"] else None,
            **options,
        )

    def _loader_options(self) -> dict[str, Any]:
        """Loader settings for where the Trainer sends the batches (the CPU without one)."""
        trainer = self.trainer
        device_type = trainer.strategy.root_device.type if trainer is not None else "cpu"
        processes = trainer.num_devices if trainer is not None else 1
        return loader_options(
            self.num_workers, self.pin_memory, self.prefetch_factor, device_type, processes
        )

    def _build(self, splits: Sequence[str]) -> None:
        """Read and check the splits not built yet; one warning for all left-out samples."""
        new = [split for split in splits if split not in self._datasets]
        cached = set(new) & set(self.cached_splits)
        manifest = self._fresh_cache_manifest() if cached else None
        for split in new:
            transform = self.train_transform if split == "train" else self.eval_transform
            if manifest is None or split not in cached:
                dataset = OxfordPetDataset(
                    self.root, split, self.boundary, transform, self.val_every
                )
            else:
                dataset = CachedOxfordPetDataset(
                    self.cache, manifest, split, self.boundary, transform, self.val_every
                )
            self._datasets[split] = dataset
        skipped = [item for split in new for item in self._datasets[split].skipped]
        if skipped:
            listed = len(skipped) + sum(len(self._datasets[split]) for split in new)
            shown = "; ".join(f"{name}: {reason}" for name, reason in skipped[:SHOWN_SKIPPED])
            more = (
                f"; and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
            )
            rank_zero_warn(
                f"Left out {len(skipped)} of {listed} samples listed for {'/'.join(new)} in "
                f"{self.root} because their files are missing or unreadable: {shown}{more}"
            )

    def _fresh_cache_manifest(self) -> dict | None:
        """The cache's manifest if it matches the files; None (and a warning) if stale."""
        if self.cache is None:
            return None
        manifest = self.cache.fresh_manifest()
        if manifest is None:
            rank_zero_warn(
                f"data.cache is set, but the decoded-image cache {self.cache.path} is missing or "
                "stale (built from other files or sizes; prepare_data builds it): decoding "
                "the files instead"
            )
        return manifest


def _seed_worker(worker_id: int) -> None:
    """Seed the worker's Albumentations pipeline from torch's per-worker seed.

    torch derives that seed from the loader's base seed, and Lightning's worker init
    (applied here when `seed_everything(workers=True)` asked for it) mixes in the rank, so
    augmentation is reproducible and different in every worker and process.
    """
    if int(os.environ.get("PL_SEED_WORKERS", "0")):
        pl_worker_init_function(worker_id)
    get_worker_info().dataset.seed_augmentations(torch.initial_seed())


def _check_int(option: str, value: object, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{option} must be {kind}{' ' + why if why else ''}, got {value!r}")


def _three_floats(option: str, values: Sequence[float], positive: bool) -> tuple[float, ...]:
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        floats = ()
    if len(floats) != 3 or (positive and min(floats) <= 0):
        kind = "positive numbers" if positive else "numbers"
        raise ConfigError(f"{option} must be 3 {kind} (R, G, B), got {values!r}")
    return floats
