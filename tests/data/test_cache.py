"""The decoded-image cache (`data.cache=true`): same samples, rebuilt when stale, never read stale."""

import os
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segpets.data import CachedOxfordPetDataset, DecodedImageCache, OxfordPetDataModule
from segpets.data.augment import augment_preset
from segpets.data.cache import cache_size, resize_for_cache
from segpets.data.oxford_pet import OxfordPetDataset, load_image, load_trimap, trimap_to_mask
from segpets.data.transforms import eval_transform, train_transform
from segpets.errors import ConfigError, DataError

SIZE = 64


@pytest.fixture
def pets(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset, free to modify."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "pets"))


def datamodule(root: Path, cache_dir: Path, **options) -> OxfordPetDataModule:
    options = {"image_size": SIZE, "num_workers": 0, "cache": True, **options}
    return OxfordPetDataModule(str(root), cache_dir=str(cache_dir), **options)


def reference_sample(root: Path, name: str, boundary: str = "foreground") -> dict:
    """The uncached reader's decode, resized to the cache's square as the cache does."""
    image = load_image(root / "images" / f"{name}.jpg")
    trimap = load_trimap(root / "annotations" / "trimaps" / f"{name}.png")
    image, trimap = resize_for_cache(image, trimap, cache_size(SIZE))
    return {"image": image, "mask": trimap_to_mask(trimap, boundary)}


def test_cache_size_is_a_little_larger():
    assert cache_size(256) == 288
    assert cache_size(64) == 72


def test_cache_needs_a_folder(synthetic_root: Path):
    for cache in (True, "train"):
        with pytest.raises(ConfigError, match=r"data\.cache_dir"):
            OxfordPetDataModule(str(synthetic_root), cache=cache)


def test_cached_samples_equal_the_decoded_pipeline(synthetic_root: Path, tmp_path: Path):
    """augment=none: the cached dataset gives exactly the eval pipeline applied to the
    decoded photo resized to the cache's square, for every split, with the same names,
    left-out samples and native masks as the uncached dataset."""
    cached_dm = datamodule(synthetic_root, tmp_path / "cache")
    cached_dm.prepare_data()
    uncached_dm = datamodule(synthetic_root, tmp_path / "cache", cache=False)
    transform = eval_transform(SIZE)
    for split in ("train", "val", "test"):
        cached, uncached = cached_dm.dataset(split), uncached_dm.dataset(split)
        assert isinstance(cached, CachedOxfordPetDataset)
        assert type(uncached) is OxfordPetDataset
        assert cached.names == uncached.names and cached.skipped == uncached.skipped
        assert len(cached) == len(uncached)
        for index in range(len(cached)):
            sample = cached[index]
            name = sample["name"]
            expected = transform(**reference_sample(synthetic_root, name))
            assert torch.equal(sample["image"], expected["image"]), name
            assert torch.equal(sample["mask"], expected["mask"].unsqueeze(0)), name
            assert sample["mask"].dtype == uncached[index]["mask"].dtype
        assert np.array_equal(cached.native_mask(name), uncached.native_mask(name))


def test_cached_samples_stay_close_to_the_uncached_ones(synthetic_root: Path, tmp_path: Path):
    """The one geometric difference (photo -> cache square -> image_size) is small."""
    cached_dm = datamodule(synthetic_root, tmp_path / "cache")
    cached_dm.prepare_data()
    cached = cached_dm.dataset("val")
    uncached = datamodule(synthetic_root, tmp_path / "cache", cache=False).dataset("val")
    for index in range(len(cached)):
        a, b = cached[index], uncached[index]
        # Normalised units: 0.1 is about 6 grey levels on average.
        assert (a["image"] - b["image"]).abs().mean() < 0.1
        assert (a["mask"] == b["mask"]).float().mean() > 0.95


def test_train_cache_leaves_val_and_test_on_the_files(synthetic_root: Path, tmp_path: Path):
    """data.cache=train: training reads the cache; val and test decode the photos, so they
    are scored on exactly the samples of an uncached run."""
    cached_dm = datamodule(synthetic_root, tmp_path / "cache", cache="train")
    cached_dm.prepare_data()
    uncached_dm = datamodule(synthetic_root, tmp_path / "cache", cache=False)
    assert isinstance(cached_dm.dataset("train"), CachedOxfordPetDataset)
    for split in ("val", "test"):
        dataset, reference = cached_dm.dataset(split), uncached_dm.dataset(split)
        assert type(dataset) is OxfordPetDataset
        for index in range(len(dataset)):
            assert torch.equal(dataset[index]["image"], reference[index]["image"])
            assert torch.equal(dataset[index]["mask"], reference[index]["mask"])


@pytest.mark.parametrize("cache", ["val", "yes", 1])
def test_cache_option_must_be_a_known_value(synthetic_root: Path, tmp_path: Path, cache):
    with pytest.raises(ConfigError, match=r"data\.cache must be false, true .* or train"):
        datamodule(synthetic_root, tmp_path / "cache", cache=cache)


def test_same_seed_gives_the_same_augmented_samples(synthetic_root: Path, tmp_path: Path):
    """augment=basic: random crops and colour draw the same numbers from the same seed."""
    dm = datamodule(synthetic_root, tmp_path / "cache", augment=augment_preset("basic", SIZE))
    dm.prepare_data()
    cached = dm.dataset("train")
    reference = train_transform(augment_preset("basic", SIZE), SIZE)
    cached.seed_augmentations(7)
    reference.set_random_seed(7)
    for index in range(6):
        sample = cached[index]
        expected = reference(**reference_sample(synthetic_root, sample["name"]))
        assert torch.equal(sample["image"], expected["image"])
        assert torch.equal(sample["mask"], expected["mask"].unsqueeze(0))


def test_boundary_policy_is_applied_at_load_without_a_rebuild(synthetic_root: Path, tmp_path: Path):
    first = datamodule(synthetic_root, tmp_path / "cache")
    built = first.cache.build(progress=False)
    ignore = datamodule(synthetic_root, tmp_path / "cache", boundary="ignore")
    assert ignore.cache.path == first.cache.path
    assert ignore.cache.fresh_manifest()["build_id"] == built["build_id"]
    dataset = ignore.dataset("val")
    assert isinstance(dataset, CachedOxfordPetDataset)
    sample = dataset[0]
    expected = eval_transform(SIZE)(**reference_sample(synthetic_root, sample["name"], "ignore"))
    assert torch.equal(sample["mask"], expected["mask"].unsqueeze(0))
    assert 255 in sample["mask"]


def test_each_size_has_its_own_cache(synthetic_root: Path, tmp_path: Path):
    small = datamodule(synthetic_root, tmp_path / "cache")
    large = datamodule(synthetic_root, tmp_path / "cache", image_size=96)
    assert small.cache.path != large.cache.path
    small.prepare_data()
    assert large.cache.fresh_manifest() is None
    large.prepare_data()
    assert small.cache.fresh_manifest() is not None
    assert large.dataset("val")[0]["image"].shape[-1] == 96


def _edit_image(root: Path, name: str) -> None:
    """Replace a photo by its negative: new content, new size and mtime on disk."""
    path = root / "images" / f"{name}.jpg"
    image = 255 - load_image(path)
    Image.fromarray(image).save(path, quality=75)


def test_stale_cache_is_not_used_and_is_rebuilt(pets: Path, tmp_path: Path):
    dm = datamodule(pets, tmp_path / "cache")
    dm.prepare_data()
    old_build = dm.cache.fresh_manifest()["build_id"]
    name = dm.dataset("val").names[0]
    _edit_image(pets, name)
    assert dm.cache.fresh_manifest() is None

    # setup without prepare_data: the stale cache is never read, the files are.
    stale = datamodule(pets, tmp_path / "cache")
    with pytest.warns(UserWarning, match="missing or stale"):
        val = stale.dataset("val")
    assert type(val) is OxfordPetDataset

    rebuilt = datamodule(pets, tmp_path / "cache")
    rebuilt.prepare_data()
    manifest = rebuilt.cache.fresh_manifest()
    assert manifest is not None and manifest["build_id"] != old_build
    dataset = rebuilt.dataset("val")
    assert isinstance(dataset, CachedOxfordPetDataset)
    expected = eval_transform(SIZE)(**reference_sample(pets, name))
    assert torch.equal(dataset[0]["image"], expected["image"])
    # The old build's arrays are gone, and so is every staging folder.
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [rebuilt.cache.path.name]
    assert not list(rebuilt.cache.path.glob(f"*{old_build}*"))


@pytest.mark.parametrize(
    "change",
    ["touch image", "touch trimap", "delete trimap", "edit list"],
)
def test_any_source_change_makes_the_cache_stale(pets: Path, tmp_path: Path, change: str):
    cache = DecodedImageCache(pets, tmp_path / "cache", 72)
    cache.build(progress=False)
    assert cache.fresh_manifest() is not None
    name = "Stripy_1"
    image = pets / "images" / f"{name}.jpg"
    trimap = pets / "annotations" / "trimaps" / f"{name}.png"
    if change == "touch image":
        stat = image.stat()
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    elif change == "touch trimap":
        stat = trimap.stat()
        os.utime(trimap, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    elif change == "delete trimap":
        trimap.unlink()
    else:
        with (pets / "annotations" / "test.txt").open("a") as listing:
            listing.write("# a comment changes the file, so the cache is checked again\n")
    assert cache.fresh_manifest() is None
    manifest = cache.build(progress=False)
    assert cache.fresh_manifest() == manifest
    if change == "delete trimap":
        assert name not in manifest["names"] and name in manifest["skipped"]


def test_concurrent_builds_leave_one_complete_cache(synthetic_root: Path, tmp_path: Path):
    caches = [DecodedImageCache(synthetic_root, tmp_path / "cache", 72) for _ in range(3)]
    errors = []

    def build(cache: DecodedImageCache) -> None:
        try:
            cache.build(progress=False)
        except Exception as error:  # reported below, with the thread's error
            errors.append(error)

    threads = [threading.Thread(target=build, args=(cache,)) for cache in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [caches[0].path.name]
    manifest = caches[0].fresh_manifest()
    assert manifest is not None
    files = sorted(p.name for p in caches[0].path.iterdir())
    assert files == sorted(
        [
            "manifest.json",
            f"images-{manifest['build_id']}.npy",
            f"trimaps-{manifest['build_id']}.npy",
        ]
    )


def test_workers_map_the_arrays_instead_of_copying_them(synthetic_root: Path, tmp_path: Path):
    dm = datamodule(synthetic_root, tmp_path / "cache", batch_size=4, num_workers=1)
    dm.prepare_data()
    dataset = dm.dataset("train")
    dataset[0]  # maps the arrays in this process
    assert len(pickle.dumps(dataset)) < 100_000
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, SIZE, SIZE)
    assert batch["mask"].shape == (4, 1, SIZE, SIZE)


def test_a_cache_rebuilt_under_a_reader_fails_loudly(pets: Path, tmp_path: Path):
    dm = datamodule(pets, tmp_path / "cache")
    dm.prepare_data()
    dataset = dm.dataset("val")  # not opened yet: workers map the arrays on first use
    _edit_image(pets, dataset.names[0])
    dm.prepare_data()
    with pytest.raises(DataError, match="rebuilt or deleted while in use"):
        dataset[0]
