"""Reading the official layout: splits, quirks, masks, bad files, errors, loaders."""

import re
import shutil
import warnings
from pathlib import Path

import albumentations as A
import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from segpets.constants import IGNORE_INDEX
from segpets.data import OxfordPetDataModule, OxfordPetDataset, SyntheticPets
from segpets.data.oxford_pet import load_image, load_trimap, parse_list_file, trimap_to_mask
from segpets.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def sample_data(sample_root: Path) -> OxfordPetDataModule:
    datamodule = OxfordPetDataModule(str(sample_root), image_size=64, batch_size=4, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real sample has no bad file to leave out
        datamodule.setup()
    return datamodule


@pytest.fixture
def mini_root(synthetic_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny synthetic dataset, to break files in."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "pets"))


def listed(root: Path, list_name: str) -> list[str]:
    return parse_list_file(root / "annotations" / list_name)


def test_splits_follow_the_lists(sample_data: OxfordPetDataModule, sample_root: Path):
    trainval = listed(sample_root, "trainval.txt")
    train, val, test = (sample_data.dataset(s).names for s in ("train", "val", "test"))
    assert (len(trainval), len(train), len(val)) == (200, 180, 20)
    assert val == trainval[::10]  # lines 0, 10, 20, ...
    assert sorted(train + val) == sorted(trainval)
    assert test == listed(sample_root, "test.txt") and len(test) == 198


def test_files_in_no_list_and_mat_files_are_not_used(
    sample_data: OxfordPetDataModule, sample_root: Path
):
    used = {name for s in ("train", "val", "test") for name in sample_data.dataset(s).names}
    assert (sample_root / "images" / "Abyssinian_34.jpg").is_file()
    assert (sample_root / "images" / "Abyssinian_82.jpg").is_file()
    assert not used & {"Abyssinian_34", "Abyssinian_82"}
    mat_files = {p.stem for p in (sample_root / "images").glob("*.mat")}
    assert len(mat_files) == 3
    assert all((sample_root / "images" / f"{name}.jpg").is_file() for name in used)


@pytest.mark.parametrize(("name", "format"), [("Abyssinian_34", "GIF"), ("Abyssinian_5", "PNG")])
def test_non_jpeg_images_under_jpg_names_load_as_rgb(sample_root: Path, name: str, format: str):
    path = sample_root / "images" / f"{name}.jpg"
    with Image.open(path) as image:
        assert image.format == format  # the quirk is still there
        width, height = image.size
    pixels = load_image(path)
    assert pixels.shape == (height, width, 3) and pixels.dtype == np.uint8


def test_rgba_image_goes_through_the_dataset(sample_data: OxfordPetDataModule):
    (dataset,) = [
        sample_data.dataset(s)
        for s in ("train", "val", "test")
        if "Abyssinian_5" in sample_data.dataset(s).names
    ]
    item = dataset[dataset.names.index("Abyssinian_5")]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32


def test_trimap_without_pet_gives_an_empty_mask(sample_root: Path):
    trimap = load_trimap(sample_root / "annotations" / "trimaps" / "Abyssinian_34.png")
    for boundary in ("foreground", "background", "ignore"):
        mask = trimap_to_mask(trimap, boundary)
        assert mask.shape == trimap.shape and not mask.any()


def test_empty_mask_is_a_valid_sample(mini_root: Path):
    name = listed(mini_root, "test.txt")[0]
    path = mini_root / "annotations" / "trimaps" / f"{name}.png"
    Image.fromarray(np.full_like(load_trimap(path), 2)).save(path)
    dataset = OxfordPetDataset(mini_root, "test")
    assert dataset.names[0] == name and not dataset[0]["mask"].any()


@pytest.mark.parametrize(
    ("boundary", "border_value", "values"),
    [("foreground", 1, {0, 1}), ("background", 0, {0, 1}), ("ignore", IGNORE_INDEX, {0, 1, 255})],
)
def test_boundary_policy_on_a_real_trimap(sample_root: Path, boundary, border_value, values):
    trimap = load_trimap(sample_root / "annotations" / "trimaps" / "Abyssinian_1.png")
    mask = trimap_to_mask(trimap, boundary)
    assert mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == values
    assert (trimap == 3).sum() > 1000  # a real border, so the counts below mean something
    assert np.all(mask[trimap == 3] == border_value)
    assert np.all(mask[trimap == 1] == 1) and np.all(mask[trimap == 2] == 0)
    pet = (trimap == 1).sum() + (trimap == 3).sum() * (border_value == 1)
    assert (mask == 1).sum() == pet


def test_ignore_boundary_reaches_the_batch(sample_root: Path):
    datamodule = OxfordPetDataModule(
        str(sample_root), image_size=64, batch_size=4, num_workers=0, boundary="ignore"
    )
    mask = datamodule.dataset("val")[0]["mask"]
    assert set(mask.unique().tolist()) == {0, 1, IGNORE_INDEX}


def test_trimap_errors():
    with pytest.raises(DataError, match=r"\[0, 7\]"):
        trimap_to_mask(np.array([[0, 1], [2, 7]], np.uint8), "foreground")
    with pytest.raises(ConfigError, match=r"foreground, background, ignore.*'border'"):
        trimap_to_mask(np.ones((2, 2), np.uint8), "border")


def test_list_file_skips_comments_and_names_the_bad_line(tmp_path: Path):
    path = tmp_path / "annotations" / "trainval.txt"
    path.parent.mkdir()
    path.write_text("#Image CLASS-ID SPECIES BREED ID\n\nAbyssinian_100 1 1 1\nbeagle_1 6 2 3\n")
    assert parse_list_file(path) == ["Abyssinian_100", "beagle_1"]
    path.write_text("# header\nAbyssinian_100 1 1 1\nAbyssinian_1 1\n")
    with pytest.raises(DataError) as error:
        parse_list_file(path)
    message = str(error.value)
    assert "annotations/trainval.txt line 3" in message
    assert 'expected 4 fields "<name> <class-id> <species> <breed-id>", got 2' in message
    assert "'Abyssinian_1 1'" in message


def test_bad_files_are_left_out_with_one_warning(mini_root: Path):
    trainval = listed(mini_root, "trainval.txt")
    images, trimaps = mini_root / "images", mini_root / "annotations" / "trimaps"
    missing_trimap, truncated, text, wrong_size, gone = trainval[1:6]
    (trimaps / f"{missing_trimap}.png").unlink()
    jpeg = (images / f"{truncated}.jpg").read_bytes()
    (images / f"{truncated}.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (images / f"{text}.jpg").write_text("<html>404 Not Found</html>")
    trimap = Image.open(trimaps / f"{wrong_size}.png")
    trimap = trimap.resize((trimap.width + 3, trimap.height), Image.NEAREST)
    trimap.save(trimaps / f"{wrong_size}.png")
    (images / f"{gone}.jpg").unlink()

    datamodule = OxfordPetDataModule(str(mini_root), image_size=64, batch_size=4, num_workers=0)
    with pytest.warns(UserWarning) as record:
        datamodule.setup("fit")
    assert len(record) == 1
    message = str(record[0].message)
    assert "Left out 5 of 30 samples" in message
    for name, reason in [
        (missing_trimap, "trimap missing"),
        (truncated, "image unreadable"),
        (text, "image unreadable"),
        (wrong_size, "trimap is"),
        (gone, "image missing"),
    ]:
        assert f"{name}: {reason}" in message
    assert "truncated" in message
    train = datamodule.dataset("train")
    assert len(train) == 27 - 5 and not {missing_trimap, truncated, text} & set(train.names)
    assert sum(len(batch["name"]) for batch in datamodule.train_dataloader()) == 20


def test_split_with_no_usable_sample_is_an_error(mini_root: Path):
    for name in listed(mini_root, "test.txt"):
        (mini_root / "images" / f"{name}.jpg").unlink()
    with pytest.raises(DataError, match=r"annotations/test.txt gives no usable test samples"):
        OxfordPetDataset(mini_root, "test")


@pytest.mark.parametrize(
    "remove", [None, "images", "annotations/trimaps", "annotations/trainval.txt"]
)
def test_missing_data_says_what_and_how_to_get_it(mini_root: Path, tmp_path: Path, remove):
    root = tmp_path / "nowhere" if remove is None else mini_root
    if remove == "annotations/trainval.txt":
        (root / remove).unlink()
    elif remove is not None:
        shutil.rmtree(root / remove)
    datamodule = OxfordPetDataModule(str(root), image_size=64)
    with pytest.raises(DataError) as error:
        datamodule.setup("fit")
    message = str(error.value)
    assert str(root) in message
    assert "does not exist" in message if remove is None else f"missing {remove}" in message
    assert "data.download=true" in message and "800 MB" in message
    assert "data=synthetic" in message


@pytest.mark.parametrize("source", ["synthetic", "download", "none"])
def test_a_file_as_data_root_is_named_before_anything_is_written(tmp_path: Path, source):
    root = tmp_path / "pets.zip"
    root.write_bytes(b"not a folder")
    options = {
        "synthetic": {"synthetic": SyntheticPets(num_trainval=2, num_test=1, seed=0)},
        "download": {"download": True},
        "none": {},
    }[source]
    datamodule = OxfordPetDataModule(str(root), image_size=64, **options)
    with pytest.raises(DataError, match=re.escape(f"data.root={root} is a file, not a folder")):
        datamodule.prepare_data()
        datamodule.setup("fit")
    assert root.read_bytes() == b"not a folder"


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("batch_size", 0, "data.batch_size must be a positive integer, got 0"),
        ("image_size", -64, "data.image_size must be a positive integer, got -64"),
        ("train_size", 0, "data.train_size must be a positive integer (or null: data.image_size)"),
        ("num_workers", -1, "data.num_workers must be auto or an integer >= 0, got -1"),
        ("val_every", 1, "data.val_every must be an integer >= 2"),
        ("boundary", "fg", "data.boundary must be one of foreground, background, ignore"),
        ("std", (0.2, 0.0, 0.2), "data.std must be 3 positive numbers"),
        ("mean", (0.5, 0.5), "data.mean must be 3 numbers"),
        ("augment", [{"_target_": "albumentations.HorizontalFlip"}], "_target_"),
        ("augment", [A.HorizontalFlip()], "into 80x136, but batches need"),
    ],
)
def test_bad_options_name_themselves(tmp_path: Path, option, value, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        OxfordPetDataModule(str(tmp_path), **{"image_size": 64, option: value})


def test_batches_follow_the_contract(synthetic_root: Path):
    datamodule = OxfordPetDataModule(
        str(synthetic_root), image_size=64, batch_size=4, num_workers=0
    )
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 1, 64, 64) and batch["mask"].dtype == torch.uint8
    assert set(batch["mask"].unique().tolist()) <= {0, 1}
    assert len(batch["name"]) == 4 and all(isinstance(n, str) for n in batch["name"])
    std, mean = (torch.tensor(v).view(1, 3, 1, 1) for v in (datamodule.std, datamodule.mean))
    pixels = batch["image"] * std + mean  # what callbacks do to show the images
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5 and pixels.std() > 0.05
    assert datamodule.mean == (0.485, 0.456, 0.406) and datamodule.image_size == 64


def test_loader_options(synthetic_root: Path):
    datamodule = OxfordPetDataModule(
        str(synthetic_root), image_size=64, batch_size=4, num_workers=2
    )
    datamodule.setup("fit")
    train, val = datamodule.train_dataloader(), datamodule.val_dataloader()
    assert isinstance(train.sampler, torch.utils.data.RandomSampler) and train.drop_last
    assert isinstance(val.sampler, torch.utils.data.SequentialSampler) and not val.drop_last
    assert train.persistent_workers and train.worker_init_fn is not None
    big = OxfordPetDataModule(str(synthetic_root), image_size=64, batch_size=64, num_workers=0)
    assert not big.train_dataloader().drop_last  # 27 samples: one short batch, not none
    assert not big.train_dataloader().persistent_workers
    with pytest.raises(ConfigError, match="split must be one of train, val, test"):
        big.dataset("valid")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_seed_everything_makes_augmentation_reproducible(synthetic_root: Path, num_workers: int):
    def first_batches(seed: int) -> torch.Tensor:
        L.seed_everything(seed, workers=True, verbose=False)
        datamodule = OxfordPetDataModule(
            str(synthetic_root),
            image_size=32,
            batch_size=4,
            num_workers=num_workers,
            augment=[A.RandomResizedCrop(size=(32, 32), scale=(0.3, 1.0)), A.ColorJitter(p=1)],
        )
        loader = datamodule.train_dataloader()
        return torch.cat([batch["image"] for batch, _ in zip(loader, range(4), strict=False)])

    assert torch.equal(first_batches(7), first_batches(7))
    assert not torch.equal(first_batches(7), first_batches(8))


def test_loaders_pin_memory_only_when_batches_go_to_a_gpu(synthetic_root):
    from types import SimpleNamespace

    datamodule = OxfordPetDataModule(str(synthetic_root), image_size=64, num_workers=0)
    assert datamodule.val_dataloader().pin_memory is False
    for device, pinned in (("cuda", True), ("cpu", False)):
        datamodule.trainer = SimpleNamespace(
            strategy=SimpleNamespace(root_device=torch.device(device)), world_size=1, num_devices=1
        )
        assert datamodule.val_dataloader().pin_memory is pinned
    forced = OxfordPetDataModule(str(synthetic_root), image_size=64, num_workers=0, pin_memory=True)
    assert forced.val_dataloader().pin_memory is True
