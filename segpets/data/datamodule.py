"""The LightningDataModule every source shares: Oxford-IIIT Pet (or its synthetic
stand-in) and a folder of images and masks (`FolderDataModule`, data=folder).

`SegmentationDataModule` holds what does not depend on the layout: option checks, the
transforms, the decoded-image cache, the loaders and the warning for left-out samples; a
subclass gives it a `Source` (segpets/data/dataset.py) and says how a split's dataset is
made. `prepare_data` (one process per node) downloads or generates the files, and with
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
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, get_worker_info

from segpets.constants import IMAGENET_MEAN, IMAGENET_STD
from segpets.data.cache import (
    CachedOxfordPetDataset,
    CachedSamples,
    DecodedImageCache,
    cache_size,
)
from segpets.data.dataset import SegmentationDataset, Source
from segpets.data.download import download_oxford_pet
from segpets.data.folder import FolderDataset, FolderSource, read_groups
from segpets.data.folds import Resplit, ResplitSource
from segpets.data.loading import AUTO, check_loader_options, loader_options
from segpets.data.oxford_pet import (
    SPLITS,
    OxfordPetDataset,
    OxfordPetSource,
    check_boundary,
    check_layout,
)
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
NORMALIZE = ("imagenet", "dataset", "stored")


class SegmentationDataModule(L.LightningDataModule):
    """Train / val / test loaders of dicts {"image", "mask", "name"} from any `Source`.

    Train uses `augment` (default: resize only) and outputs train_size squares (default:
    image_size); eval splits resize to image_size x image_size, the size the model
    predicts at; both end with Normalize(mean, std) and ToTensorV2.
    With `cache`, samples are read from squares of cache_size(image_size) pixels decoded
    once into `cache_dir`, and used only while they match the files (else decoded again):
    every split's with `cache=True`, the train split's alone with `cache="train"`, so that
    val and test are scored on the photos exactly as without a cache.
    `folds` / `fold` / `fold_seed` re-draw train and val as k-fold cross-validation, and
    `train_fraction` / `train_fraction_seed` train on a nested subset, and `exclude` (a file
    of stems) leaves stems out of train and val (segpets/data/folds.py); the test split is
    always the layout's.
    """

    def __init__(
        self,
        source: Source,
        image_size: int = 256,
        batch_size: int = 16,
        num_workers: int | str = AUTO,
        augment: Sequence[A.BasicTransform] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        pin_memory: bool | None = None,
        prefetch_factor: int | str = AUTO,
        cache: bool | str = False,
        cache_dir: str | None = None,
        train_size: int | None = None,
        folds: int | None = None,
        fold: int | None = None,
        fold_seed: int = 0,
        train_fraction: float = 1.0,
        train_fraction_seed: int = 0,
        exclude: str | None = None,
    ) -> None:
        super().__init__()
        _check_int("data.image_size", image_size, 1)
        self.resplit = Resplit(folds, fold, fold_seed, train_fraction, train_fraction_seed, exclude)
        if self.resplit.active and self._resplits(source):
            source = ResplitSource(source, self.resplit)
        elif exclude is not None:  # a stored split holds folds and fraction, not the exclusion
            source = ResplitSource(source, Resplit(exclude=exclude))
        if train_size is None:
            train_size = image_size
        _check_int("data.train_size", train_size, 1, "(or null: data.image_size)")
        _check_int("data.batch_size", batch_size, 1)
        check_loader_options(num_workers, prefetch_factor)
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
        self.source = source
        self.root = Path(source.root)
        self.image_size = image_size
        self.train_size = train_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.mean = _three_floats("data.mean", mean, positive=False)
        self.std = _three_floats("data.std", std, positive=True)
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.cache = DecodedImageCache(source, cache_dir, cache_size(image_size)) if cache else None
        self.cached_splits = CACHED_SPLITS[cache] if cache else ()
        self._augment = augment
        self._build_transforms()
        self._datasets: dict[str, SegmentationDataset] = {}

    def _build_transforms(self) -> None:
        # Built at once so that a bad augment config fails before any data is read.
        self.train_transform = train_transform(self._augment, self.train_size, self.mean, self.std)
        self.eval_transform = eval_transform(self.image_size, self.mean, self.std)

    def _prepare_source(self) -> None:
        """Get the source's files in place (download, generate); nothing by default."""

    def _resplits(self, source: Source) -> bool:
        """Whether data.folds / data.train_fraction re-draw `source`'s splits (a folder's
        stored split already holds them)."""
        return True

    def resplit_record(self) -> dict[str, Any]:
        """With data.folds or data.train_fraction: {"splits": {split: stems}, "folds": {stem:
        fold} (empty without data.folds)}, what train writes to the run's splits/; else {}."""
        if not isinstance(self.source, ResplitSource):
            return {}
        return {
            "splits": {split: self.source.split_names(split) for split in SPLITS},
            "folds": self.source.fold_of(),
        }

    def excluded(self) -> dict[str, Any] | None:
        """With data.exclude: how many listed stems left train and val and stayed in test
        (`ResplitSource.excluded`), what train records in metrics.json; else None."""
        if not isinstance(self.source, ResplitSource):
            return None
        return self.source.excluded()

    def _new_dataset(
        self, split: str, transform: A.Compose, manifest: dict | None
    ) -> SegmentationDataset:
        """The dataset of `split`: read from the cache with a fresh `manifest`, else the files."""
        raise NotImplementedError

    def _announce(self) -> None:
        """Say, once, what the source found (a folder's layout line and warnings)."""

    def stored_options(self) -> dict[str, Any]:
        """Data options a run stores with its config so that eval, predict and model folders
        use what training used (a folder's split, computed statistics); none by default."""
        return {}

    def prepare_data(self) -> None:
        self._prepare_source()
        if self.cache is not None:
            self.cache.build()

    def setup(self, stage: str | None = None) -> None:
        """Build the splits `stage` needs ("fit": train and val; None: all three)."""
        self._build(STAGE_SPLITS.get(stage, SPLITS))

    def dataset(self, split: str) -> SegmentationDataset:
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
        self, dataset: SegmentationDataset, train: bool, options: dict[str, Any] | None = None
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
        if new and not self._datasets:
            self._announce()
        cached = set(new) & set(self.cached_splits)
        manifest = self._fresh_cache_manifest() if cached else None
        for split in new:
            transform = self.train_transform if split == "train" else self.eval_transform
            in_cache = manifest if split in cached else None
            self._datasets[split] = self._new_dataset(split, transform, in_cache)
        excluded = self.excluded() if {"train", "val"} & set(new) else None
        if excluded is not None:
            rank_zero_info(
                f"data.exclude={excluded['file']}: {excluded['listed']} stems listed, "
                f"{excluded['train']} left out of train and {excluded['val']} of val; "
                f"{excluded['test_kept']} stay in test"
            )
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


class OxfordPetDataModule(SegmentationDataModule):
    """Oxford-IIIT Pet in its official layout (or its synthetic stand-in), see
    `SegmentationDataModule` for the loaders, transforms and cache.

    With `synthetic`, `prepare_data` writes that generator's dataset to `root`; with
    `download`, it fetches the official archives into it.
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
        folds: int | None = None,
        fold: int | None = None,
        fold_seed: int = 0,
        train_fraction: float = 1.0,
        train_fraction_seed: int = 0,
        exclude: str | None = None,
    ) -> None:
        _check_int("data.image_size", image_size, 1)
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
        self.boundary = boundary
        self.download = download
        self.val_every = val_every
        self.synthetic = synthetic
        super().__init__(
            OxfordPetSource(root, boundary, val_every),
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            augment=augment,
            mean=mean,
            std=std,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor,
            cache=cache,
            cache_dir=cache_dir,
            train_size=train_size,
            folds=folds,
            fold=fold,
            fold_seed=fold_seed,
            train_fraction=train_fraction,
            train_fraction_seed=train_fraction_seed,
            exclude=exclude,
        )

    def _prepare_source(self) -> None:
        if Path(self.root).is_file():  # before anything writes under it
            check_layout(self.root)
        if self.synthetic is not None:
            self.synthetic.write(self.root)
        elif self.download:
            download_oxford_pet(self.root)

    def _new_dataset(
        self, split: str, transform: A.Compose, manifest: dict | None
    ) -> SegmentationDataset:
        if manifest is None:
            return OxfordPetDataset(
                self.root, split, self.boundary, transform, self.val_every, self.source
            )
        return CachedOxfordPetDataset(
            self.cache, manifest, split, self.boundary, transform, self.val_every, self.source
        )


class CachedFolderDataset(CachedSamples, FolderDataset):
    """`FolderDataset` whose samples come from a fresh `DecodedImageCache`."""

    def __init__(
        self,
        cache: DecodedImageCache,
        manifest: dict[str, Any],
        split: str,
        transform: A.Compose | None = None,
    ) -> None:
        self._use_cache(cache, manifest)
        FolderDataset.__init__(self, cache.source, split, transform)


class FolderDataModule(SegmentationDataModule):
    """A folder of images and binary masks (data=folder; segpets/data/folder.py), with the
    loaders, transforms and cache every source shares (`SegmentationDataModule`).

    `normalize`: imagenet (data.mean / data.std as given, ImageNet's by default), dataset
    (the train split's own per-channel mean and std, computed here once) or stored (the
    data.mean / data.std that a normalize=dataset run computed and stored in its config).
    `splits` ({split: [stems]}, which train stores) replaces split detection; it holds the
    folds and train fraction already, so those options are not applied to it again.
    `groups_csv` (stem,group columns) gives eval's scores by group.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 256,
        batch_size: int = 16,
        num_workers: int | str = AUTO,
        augment: Sequence[A.BasicTransform] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        pin_memory: bool | None = None,
        prefetch_factor: int | str = AUTO,
        cache: bool | str = False,
        cache_dir: str | None = None,
        train_size: int | None = None,
        images_dir: str = "images",
        masks_dir: str = "masks",
        mask_suffix: str = "",
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        split_seed: int = 0,
        splits: dict[str, Sequence[str]] | None = None,
        foreground_values: Sequence[int] | str | None = None,
        ignore_value: int | None = None,
        strict: bool = False,
        normalize: str = "imagenet",
        groups_csv: str | None = None,
        folds: int | None = None,
        fold: int | None = None,
        fold_seed: int = 0,
        train_fraction: float = 1.0,
        train_fraction_seed: int = 0,
        exclude: str | None = None,
    ) -> None:
        if normalize not in NORMALIZE:
            raise ConfigError(
                f"data.normalize must be one of {', '.join(NORMALIZE)} (imagenet: data.mean / "
                "data.std as given; dataset: the train split's own, computed once), "
                f"got {normalize!r}"
            )
        source = FolderSource(
            root,
            images_dir=images_dir,
            masks_dir=masks_dir,
            mask_suffix=mask_suffix,
            splits=_plain(splits),
            split_fractions=_plain(split_fractions),
            split_seed=split_seed,
            foreground_values=_plain(foreground_values),
            ignore_value=ignore_value,
            strict=strict,
        )
        self.folder = source
        self.normalize = normalize
        self.groups_csv = groups_csv
        self._announced = False
        super().__init__(
            source,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            augment=augment,
            mean=mean,
            std=std,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor,
            cache=cache,
            cache_dir=cache_dir,
            train_size=train_size,
            folds=folds,
            fold=fold,
            fold_seed=fold_seed,
            train_fraction=train_fraction,
            train_fraction_seed=train_fraction_seed,
            exclude=exclude,
        )
        if normalize == "dataset":
            self.mean, self.std = self.train_statistics()
            self._build_transforms()

    def _resplits(self, source: Source) -> bool:
        return source.given_splits is None

    def _prepare_source(self) -> None:
        self.folder.scan()  # every check before anything (the cache) is written
        if self.groups_csv:
            read_groups(self.groups_csv)

    def _announce(self) -> None:
        if self._announced:
            return
        self._announced = True
        scan = self.folder.scan()
        rank_zero_info(scan.summary(self.root))
        for warning in scan.warnings:
            rank_zero_warn(warning)

    def _new_dataset(
        self, split: str, transform: A.Compose, manifest: dict | None
    ) -> SegmentationDataset:
        if manifest is None:
            return FolderDataset(self.source, split, transform)
        return CachedFolderDataset(self.cache, manifest, split, transform)

    def train_statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std (0..1 scale) over every pixel of the train split."""
        total = np.zeros(3)
        squares = np.zeros(3)
        pixels = 0
        for name in self.source.split_names("train"):
            if self.source.check(name) is not None:
                continue
            image = self.source.load_image(name).reshape(-1, 3).astype(np.float64) / 255
            total += image.sum(0)
            squares += (image**2).sum(0)
            pixels += len(image)
        mean = total / max(pixels, 1)
        std = np.sqrt(np.maximum(squares / max(pixels, 1) - mean**2, 1e-12))
        return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)

    def stored_options(self) -> dict[str, Any]:
        """The split (every stem of each) and, with normalize=dataset, the statistics, so
        that a checkpoint scores the same test set with the same normalisation anywhere."""
        record = self.split_record()
        options: dict[str, Any] = {"splits": {split: record[split] for split in SPLITS}}
        if self.normalize == "dataset":
            options.update(normalize="stored", mean=list(self.mean), std=list(self.std))
        return options

    def test_data(self) -> dict[str, Any]:
        """What metrics.json's `test_data` says: dataset, root, split and the test split's hash."""
        return self.folder.test_data()

    def data_summary(self) -> dict[str, Any]:
        """metrics.json's `data_summary`, which the model card states (FolderScan.fingerprint)."""
        return self.folder.scan().fingerprint()

    def state_dict(self) -> dict[str, Any]:
        """Stored in every checkpoint (under this class's name): the split and the statistics."""
        return {"split": self.split_record(), "mean": list(self.mean), "std": list(self.std)}

    def split_record(self) -> dict[str, Any]:
        """The folder's split record (`FolderSource.split_record`) with the train and val
        that data.folds / data.train_fraction drew."""
        record = self.folder.split_record()
        if self.source is not self.folder:
            for split in ("train", "val"):
                record[split] = self.source.split_names(split)
            record["origin"] += f", {self.source.resplit.describe()}"
        return record


def _plain(value: Any) -> Any:
    """Hydra's ListConfig / DictConfig as plain lists and dicts (None and scalars kept)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value)
    return value


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
