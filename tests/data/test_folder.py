"""data=folder: a folder of images and masks, built here from the real Oxford sample
(converted trimaps, written to tmp_path) and from handmade files."""

import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from segpets.constants import IGNORE_INDEX
from segpets.data import FolderDataModule, FolderSource, OxfordPetDataModule
from segpets.data.datamodule import CachedFolderDataset
from segpets.data.folder import load_photo, split_hash, stratified_split
from segpets.data.masks import THRESHOLDED, ZERO_255
from segpets.data.oxford_pet import parse_list_file
from segpets.errors import ConfigError, DataError
from segpets.train import store_data_options
from tests.helpers import run_segpets

NAMES = 8  # pairs in a converted sample: enough for three splits, quick to decode


def sample_names(sample_root: Path, count: int = NAMES) -> list[str]:
    return parse_list_file(sample_root / "annotations" / "trainval.txt")[:count]


def trimap(sample_root: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(sample_root / "annotations" / "trimaps" / f"{name}.png"))


def pet(sample_root: Path, name: str) -> np.ndarray:
    """The pet as oxford_pet's default boundary=foreground reads it: trimap 1 and 3."""
    return (trimap(sample_root, name) != 2).astype(np.uint8)


def write_mask(trimap_array: np.ndarray, path: Path, encoding: str, scale: int = 1) -> Path:
    """A trimap's pet written in `encoding`; `path` without suffix."""
    fg = (trimap_array != 2).astype(np.uint8)
    if encoding == "palette":  # indices 0 background, 1 pet, 2 border
        image = Image.fromarray(np.choose(trimap_array - 1, [1, 0, 2]).astype(np.uint8), "P")
        image.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128])
    elif encoding == "0_1":
        image = Image.fromarray(fg)
    elif encoding == "rgb":
        image = Image.fromarray(np.repeat(fg[..., None] * 255, 3, axis=2))
    else:
        image = Image.fromarray(fg * 255)
    if scale > 1:
        image = image.resize((image.width // scale, image.height // scale), Image.NEAREST)
    if encoding == "jpeg":
        path = path.with_suffix(".jpg")
        image.save(path, quality=75)
    else:
        path = path.with_suffix(".png")
        image.save(path)
    return path


def convert(
    sample_root: Path,
    root: Path,
    names: list[str],
    encoding: str = "0_255",
    suffix: str = "",
    scale: int = 1,
    images: str = "images",
    masks: str = "masks",
) -> Path:
    """root/images (links to the sample's photos) + root/masks (converted trimaps)."""
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / masks).mkdir(parents=True, exist_ok=True)
    for name in names:
        link = root / images / f"{name}.jpg"
        if not link.exists():
            os.symlink(sample_root / "images" / f"{name}.jpg", link)
        write_mask(trimap(sample_root, name), root / masks / f"{name}{suffix}", encoding, scale)
    return root


def folder(root: Path, **options) -> FolderDataModule:
    return FolderDataModule(str(root), image_size=64, batch_size=4, num_workers=0, **options)


def built(root: Path, **options) -> FolderDataModule:
    datamodule = folder(root, **options)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


# ---------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("encoding", "options", "found"),
    [
        ("0_255", {}, ZERO_255),
        ("0_1", {}, "0/1"),
        ("rgb", {}, ZERO_255),
        ("jpeg", {}, THRESHOLDED),
        ("palette", {"foreground_values": [1, 2]}, "foreground_values=[1, 2]"),
    ],
)
def test_each_encoding_decodes_to_the_oxford_foreground(
    sample_root, tmp_path, encoding, options, found
):
    names = sample_names(sample_root)
    root = convert(sample_root, tmp_path / "data", names, encoding)
    source = FolderSource(root, **options)
    scan = source.scan()
    assert dict(scan.encodings) == {found: len(names)}
    assert [w for w in scan.warnings if "thresholded" in w] == (
        [scan.warnings[0]] if encoding == "jpeg" else []
    )
    for name in names:
        mask, truth = source.native_mask(name), pet(sample_root, name)
        assert mask.shape == truth.shape
        mismatch = np.mean(mask != truth)
        assert mismatch <= (0.01 if encoding == "jpeg" else 0.0), (name, mismatch)


def test_palette_masks_without_foreground_values_exit_listing_the_values(sample_root, tmp_path):
    root = convert(sample_root, tmp_path / "data", sample_names(sample_root), "palette")
    with pytest.raises(
        DataError, match=r"values no rule maps .*values found 0 \(.* %\), 1 .*, 2 "
    ) as error:
        folder(root, cache=True, cache_dir=str(tmp_path / "cache")).prepare_data()
    assert "data.foreground_values" in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "cache").exists()  # nothing written before the check


def test_half_size_masks_are_resized_and_counted_in_one_warning(sample_root, tmp_path):
    names = sample_names(sample_root)
    root = convert(sample_root, tmp_path / "data", names, scale=2)
    scan = FolderSource(root).scan()
    (warning,) = scan.warnings
    assert warning.startswith(f"{len(names)} masks differ in size") and "nearest" in warning
    source = FolderSource(root)
    for name in names:
        assert np.mean(source.native_mask(name) != pet(sample_root, name)) < 0.03


def test_a_mask_of_another_aspect_ratio_is_an_error_naming_both_files(sample_root, tmp_path):
    names = sample_names(sample_root, 3)
    root = convert(sample_root, tmp_path / "data", names)
    Image.new("L", (64, 64)).save(root / "masks" / f"{names[1]}.png")
    with pytest.raises(
        DataError,
        match=rf"masks/{names[1]}\.png is 64x64 but its image .*{names[1]}\.jpg is \d+x\d+",
    ):
        FolderSource(root).scan()


def test_ignore_value_is_left_out_as_oxford_boundary_ignore(sample_root, tmp_path):
    names = sample_names(sample_root, 3)
    root = tmp_path / "data"
    convert(sample_root, root, names)
    for name in names:  # VOC style: 0 background, 1 pet, 255 border
        t = trimap(sample_root, name)
        voc = np.choose(t - 1, [1, 0, 255]).astype(np.uint8)
        Image.fromarray(voc).save(root / "masks" / f"{name}.png")
    source = FolderSource(root, ignore_value=255, split_fractions=[0.34, 0.33, 0.33])
    oxford = OxfordPetDataModule(str(sample_root), boundary="ignore").dataset("train")
    for name in names:
        mask = source.native_mask(name)
        np.testing.assert_array_equal(mask, oxford.native_mask(name))
        assert (mask == IGNORE_INDEX).any()


# ---------------------------------------------------------------------------- layouts


def test_flat_layout_splits_by_seed_and_states_one_line(sample_root, tmp_path, caplog):
    names = sample_names(sample_root, 20)
    root = convert(sample_root, tmp_path / "data", names)
    datamodule = built(root)
    splits = {s: datamodule.dataset(s).names for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [14, 3, 3]
    assert sorted(n for names in splits.values() for n in names) == sorted(names)
    again = built(root)
    assert {s: again.dataset(s).names for s in splits} == splits
    other = built(root, split_seed=1)
    assert {s: other.dataset(s).names for s in splits} != splits
    line = datamodule.source.scan().summary(root)
    assert "images/ + masks/ paired by stem, 20 pairs" in line
    assert "train 14 / val 3 / test 3" in line and "0/255 (20)" in line


def test_stratified_split_spreads_foreground_shares_over_every_split():
    shares = {f"{i:03d}": i / 100 for i in range(100)}
    splits = stratified_split(shares, (0.7, 0.15, 0.15), seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [70, 15, 15]
    for split in ("val", "test"):  # every tenth of the shares is in it (1.5 expected)
        tenths = np.bincount([int(shares[n] * 10) for n in splits[split]], minlength=10)
        assert tenths.min() >= 1 and tenths.max() <= 3, (split, tenths)
    assert stratified_split(shares, (0.7, 0.15, 0.15), seed=0) == splits


def test_mask_suffix_pairs_isic_style_names_in_two_folders_or_one(sample_root, tmp_path):
    names = sample_names(sample_root)
    two = convert(sample_root, tmp_path / "two", names, suffix="_mask")
    one = convert(sample_root, tmp_path / "one", names, suffix="_mask", masks="images")
    for root, options in ((two, {}), (one, {"masks_dir": "images"})):
        source = FolderSource(root, mask_suffix="_mask", **options)
        assert sorted(source.scan().pairs) == sorted(names)
        assert source.mask_path(names[0]).name == f"{names[0]}_mask.png"
        assert source.image_path(names[0]).name == f"{names[0]}.jpg"
    with pytest.raises(ConfigError, match=r"set data\.mask_suffix"):
        FolderSource(one, masks_dir="images").scan()


def test_split_folders_read_valid_as_val_and_carve_a_missing_val(sample_root, tmp_path):
    names = sample_names(sample_root, 16)
    root = tmp_path / "data"
    convert(sample_root, root / "train", names[:10])
    convert(sample_root, root / "valid", names[10:12])
    convert(sample_root, root / "test", names[12:])
    datamodule = built(root)
    assert datamodule.dataset("val").names == sorted(names[10:12])
    assert datamodule.dataset("test").names == sorted(names[12:])
    assert "split folders train/, valid/, test/" in datamodule.source.scan().layout
    no_val = tmp_path / "no_val"
    convert(sample_root, no_val / "train", names[:12])
    convert(sample_root, no_val / "test", names[12:])
    carved = built(no_val)
    train, val = carved.dataset("train").names, carved.dataset("val").names
    assert len(val) == 2 and sorted(train + val) == sorted(names[:12])
    assert "val carved from train" in carved.source.scan().split_origin


def test_split_files_are_read_in_their_order(sample_root, tmp_path):
    names = sample_names(sample_root)
    root = convert(sample_root, tmp_path / "data", names)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(names[5::-1]) + "\n")
    (root / "splits" / "val.txt").write_text(f"{names[6]}\n")
    (root / "splits" / "test.txt").write_text(f"# held out\n{names[7]}.jpg\n")
    datamodule = built(root)
    assert datamodule.dataset("train").names == names[5::-1]
    assert datamodule.dataset("test").names == [names[7]]


def test_the_written_split_reloads_identically(sample_root, tmp_path):
    names = sample_names(sample_root, 12)
    root = convert(sample_root, tmp_path / "data", names)
    datamodule = folder(root)
    cfg = OmegaConf.create({"data": {"root": str(root)}})
    module = SimpleNamespace(run_config={"data": {}})
    store_data_options(cfg, module, datamodule, tmp_path / "run")
    stored = module.run_config["data"]["splits"]
    written = {s: (tmp_path / "run" / "splits" / f"{s}.txt").read_text().split() for s in stored}
    assert written == stored
    (root / "splits").mkdir()
    for split, lines in written.items():
        (root / "splits" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    reread = built(root)
    assert {s: reread.dataset(s).names for s in stored} == stored
    from_config = built(root, splits=stored, split_seed=5)
    assert {s: from_config.dataset(s).names for s in stored} == stored
    assert datamodule.test_data()["split_hash"] == split_hash(stored["test"])
    assert "splits" not in cfg.data  # the stems stay out of the logged hyperparameters


# ---------------------------------------------------------------------------- images


def test_exif_orientation_turns_image_and_mask_alike(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    truth = np.zeros((20, 40), np.uint8)
    truth[:, :10] = 1  # the left quarter, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    for i in range(3):
        Image.fromarray(np.repeat(truth[..., None] * 255, 3, axis=2)).save(
            root / "images" / f"{i}.png", exif=exif
        )
        Image.fromarray(truth * 255).save(root / "masks" / f"{i}.png", exif=exif)
    source = FolderSource(root, split_fractions=[0.34, 0.33, 0.33])
    image, mask = source.load_image("0"), source.native_mask("0")
    assert image.shape == (40, 20, 3) and mask.shape == (40, 20)
    np.testing.assert_array_equal(image[..., 0] > 127, mask == 1)
    assert mask[:10].all() and not mask[10:].any()  # the left quarter is now on top


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "CMYK", "P"])
def test_images_of_any_mode_read_as_rgb(tmp_path, mode):
    path = tmp_path / ("photo.jpg" if mode == "CMYK" else "photo.png")
    Image.new(mode, (12, 8)).save(path)
    image = load_photo(path)
    assert image.shape == (8, 12, 3) and image.dtype == np.uint8


def test_normalize_dataset_uses_the_train_splits_statistics(sample_root, tmp_path):
    names = sample_names(sample_root, 10)
    root = convert(sample_root, tmp_path / "data", names)
    datamodule = folder(root, normalize="dataset")
    pixels = np.concatenate(
        [load_photo(root / "images" / f"{n}.jpg").reshape(-1, 3) / 255 for n in
         datamodule.source.split_names("train")]
    )  # fmt: skip
    np.testing.assert_allclose(datamodule.mean, pixels.mean(0), atol=1e-5)
    np.testing.assert_allclose(datamodule.std, pixels.std(0), atol=1e-5)
    stored = datamodule.stored_options()
    assert stored["normalize"] == "stored" and stored["mean"] == list(datamodule.mean)
    again = folder(root, **{k: v for k, v in stored.items()})
    assert again.mean == datamodule.mean


def test_the_decoded_image_cache_serves_folders(sample_root, tmp_path):
    names = sample_names(sample_root)
    root = convert(sample_root, tmp_path / "data", names, "jpeg")
    plain = built(root)
    cached = built(root, cache=True, cache_dir=str(tmp_path / "cache"))
    dataset = cached.dataset("train")
    assert isinstance(dataset, CachedFolderDataset)
    assert dataset.names == plain.dataset("train").names
    image, mask = dataset._decoded(0)
    assert image.shape[:2] == mask.shape and set(np.unique(mask)) <= {0, 1}
    manifest = json.loads((cached.cache.path / "manifest.json").read_text())
    assert manifest["decoding"] == {"foreground_values": None, "ignore_value": None}


# ---------------------------------------------------------------------------- bad input


def test_unpaired_files_are_named_in_one_warning_or_an_error_when_strict(sample_root, tmp_path):
    root = convert(sample_root, tmp_path / "data", sample_names(sample_root))
    (root / "images" / ".DS_Store").write_bytes(b"\0")
    (root / "masks" / "Thumbs.db").write_bytes(b"\0")
    Image.new("L", (4, 4)).save(root / "masks" / "orphan.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built(root)
    (warning,) = [str(w.message) for w in caught if "not image/mask pairs" in str(w.message)]
    assert warning.startswith("3 files under")
    assert ".DS_Store" in warning and "Thumbs.db" in warning and "orphan.png (no image)" in warning
    with pytest.raises(DataError, match=r"data\.strict=true"):
        built(root, strict=True)


def bad_root(sample_root: Path, tmp_path: Path, case: str) -> tuple[Path, dict]:
    """A folder (and options) with one thing wrong, named by `case`."""
    root = tmp_path / "data"
    names = sample_names(sample_root, 6)
    if case == "empty":
        root.mkdir()
    elif case == "no masks folder":
        convert(sample_root, root, names)
        (root / "masks").rename(root / "labels")
    elif case in ("every mask empty", "unmappable values"):
        convert(sample_root, root, names)
        for name in names:
            size = Image.open(root / "images" / f"{name}.jpg").size
            values = np.zeros(size[::-1], np.uint8)
            if case == "unmappable values":
                values[:, : size[0] // 2] = 7
                values[0, 0] = 3
            Image.fromarray(values).save(root / "masks" / f"{name}.png")
    elif case == "missing stem":
        convert(sample_root, root, names)
        (root / "splits").mkdir()
        (root / "splits" / "train.txt").write_text("\n".join(names[:4]) + "\n")
        (root / "splits" / "val.txt").write_text(f"{names[4]}\n")
        (root / "splits" / "test.txt").write_text("not_there\n")
    elif case == "two images one stem":
        convert(sample_root, root, names)
        os.symlink(sample_root / "images" / f"{names[0]}.jpg", root / "images" / f"{names[0]}.png")
    elif case == "oxford layout":
        root = sample_root
    return root, {}


BAD_INPUT = {
    "empty": r"data\.root=\S+ is empty: put the images in images/",
    "no masks folder": r"no masks folder \S+/masks: .*data\.masks_dir",
    "every mask empty": r"every mask under \S+ is empty .*data\.foreground_values",
    "unmappable values": r"6 masks have values no rule maps .*values found 0 \(50\.0 %\), 3 \(0\.0 %\), 7 \(50\.0 %\)",
    "missing stem": r"splits/test\.txt line 1: not_there has no image/mask pair .*remove the line",
    "two images one stem": r"two images with stem \S+: .*rename or remove one",
    "oxford layout": r"holds the Oxford-IIIT Pet layout .*use data=oxford_pet",
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_naming_file_or_option_and_the_fix(sample_root, tmp_path, case):
    root, options = bad_root(sample_root, tmp_path, case)
    cache_dir = tmp_path / "cache"
    with pytest.raises(DataError, match=BAD_INPUT[case]) as error:
        built(root, cache=True, cache_dir=str(cache_dir), **options)
    assert "\n" not in str(error.value)
    assert not cache_dir.exists()


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        (
            [0.7, 0.2, 0.2],
            r"sum to 1, e\.g\. \[0\.7, 0\.15, 0\.15\]; got \[0\.7, 0\.2, 0\.2\] \(sum 1\.1\)",
        ),
        ([0.8, 0.2], r"must be 3 positive fractions"),
        ([1.0, 0.0, 0.0], r"must be 3 positive fractions"),
        ([0.9, 0.05, 0.05], r"gives the val split 0\.05 of 6 pairs, which leaves it empty"),
    ],
)
def test_bad_split_fractions(sample_root, tmp_path, fractions, message):
    root = convert(sample_root, tmp_path / "data", sample_names(sample_root, 6))
    with pytest.raises(ConfigError, match=message):
        built(root, split_fractions=fractions)


def test_oxford_error_says_data_folder_fits_a_folder_of_images_and_masks(sample_root, tmp_path):
    root = convert(sample_root, tmp_path / "my_polyps", sample_names(sample_root, 3))
    with pytest.raises(DataError, match=r"holds images and masks, .*use data=folder"):
        OxfordPetDataModule(str(root)).setup()


@pytest.mark.slow  # starts the app in a new process
def test_the_app_exits_2_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_segpets(
        "train", "data=folder", f"data.root={tmp_path / 'empty'}",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("segpets: error:")]
    assert len(errors) == 1 and "is empty" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    written = {p.name for p in (tmp_path / "run").iterdir()}  # Hydra's config and log only
    assert not written & {"splits", "checkpoints", "metrics.json"}, written


# ---------------------------------------------------------------------------- training


def mini_oxford(sample_root: Path, root: Path, trainval: int = 24, test: int = 8) -> Path:
    """A slice of the sample in the official layout: list files cut, files linked."""
    (root / "annotations" / "trimaps").mkdir(parents=True)
    (root / "images").mkdir()
    lists = {}
    for list_name, count in (("trainval.txt", trainval), ("test.txt", test)):
        lines = (sample_root / "annotations" / list_name).read_text().splitlines()
        lines = [line for line in lines if line.strip() and not line.startswith("#")][:count]
        (root / "annotations" / list_name).write_text("\n".join(lines) + "\n")
        lists[list_name] = [line.split()[0] for line in lines]
    for name in lists["trainval.txt"] + lists["test.txt"]:
        os.symlink(sample_root / "images" / f"{name}.jpg", root / "images" / f"{name}.jpg")
        os.symlink(
            sample_root / "annotations" / "trimaps" / f"{name}.png",
            root / "annotations" / "trimaps" / f"{name}.png",
        )
    return root


def per_image_dice(run_dir: Path) -> dict[str, str]:
    import csv

    with open(run_dir / "test_per_image.csv", newline="") as file:
        return {row["name"]: row["dice"] for row in csv.DictReader(file)}


@pytest.mark.slow
def test_a_run_on_the_png_conversion_scores_as_on_the_oxford_layout(sample_root, tmp_path):
    from segpets.train import train
    from tests.helpers import TINY_UNET, compose_train

    oxford = mini_oxford(sample_root, tmp_path / "oxford")
    splits = {
        split: OxfordPetDataModule(str(oxford)).dataset(split).names
        for split in ("train", "val", "test")
    }
    names = [name for split in splits.values() for name in split]
    converted = convert(sample_root, tmp_path / "folder", names)
    (converted / "splits").mkdir()
    for split, split_names in splits.items():  # the same split, in the same order
        (converted / "splits" / f"{split}.txt").write_text("\n".join(split_names) + "\n")
    common = [
        "data.image_size=64", "data.batch_size=4", "data.num_workers=0", *TINY_UNET,
        "trainer.max_epochs=2", "trainer.precision=32-true",
        "callbacks.progress_bar=null", "callbacks.model_summary=null",
        # Scores above 0 after two short epochs, so that equal scores mean something.
        "loss=dice", "optimizer.lr=0.01", "test_checkpoint=last", "module.threshold=0.3",
    ]  # fmt: skip
    runs = {}
    for data, root in (("oxford_pet", oxford), ("folder", converted)):
        cfg = compose_train(tmp_path / data, [f"data={data}", f"data.root={root}", *common])
        metrics = train(cfg)
        runs[data] = (metrics, per_image_dice(tmp_path / data / "run"))
    (oxford_metrics, oxford_dice), (folder_metrics, folder_dice) = (
        runs["oxford_pet"],
        runs["folder"],
    )
    assert sorted(oxford_dice) == sorted(splits["test"])
    assert len(set(oxford_dice.values())) > 1  # scores that tell images apart
    assert folder_dice == oxford_dice
    assert folder_metrics["test"]["test/dice"] == oxford_metrics["test"]["test/dice"]
    assert folder_metrics["test_data"]["dataset"] == "folder"
    assert folder_metrics["test_data"]["split_hash"] == split_hash(splits["test"])
    written = (tmp_path / "folder" / "run" / "splits" / "test.txt").read_text().split()
    assert written == splits["test"]


@pytest.mark.slow
def test_a_folder_run_evaluates_predicts_and_exports_with_its_split_and_statistics(
    sample_root, tmp_path
):
    import segpets
    from segpets.eval import evaluate
    from segpets.export import export
    from segpets.train import train
    from tests.helpers import TINY_UNET, compose_train

    names = sample_names(sample_root, 12)
    root = convert(sample_root, tmp_path / "data", names)
    (root / "images" / "notes.txt").write_text("not an image")
    groups = tmp_path / "groups.csv"
    groups.write_text(
        "stem,group\n" + "".join(f"{n},{'a' if i % 2 else 'b'}\n" for i, n in enumerate(names))
    )
    cfg = compose_train(
        tmp_path / "train",
        [
            "data=folder", f"data.root={root}", "data.normalize=dataset", f"data.groups_csv={groups}",
            "data.image_size=64", "data.batch_size=4", "data.num_workers=0", *TINY_UNET,
            "trainer.max_epochs=1", "trainer.precision=32-true",
            "callbacks.progress_bar=null", "callbacks.model_summary=null",
        ],
    )  # fmt: skip
    metrics = train(cfg)
    run = tmp_path / "train" / "run"
    test_names = (run / "splits" / "test.txt").read_text().split()
    assert metrics["test_data"] == {
        "dataset": "folder", "root": str(root.resolve()), "split": "test",
        "split_hash": split_hash(test_names), "ignore_value": None, "foreground_values": None,
        "images": len(test_names),
    }  # fmt: skip
    ckpt = run / "checkpoints" / "best.ckpt"
    stored = __import__("torch").load(ckpt, weights_only=False)["segpets_config"]["data"]
    assert stored["normalize"] == "stored" and stored["mean"] != [0.485, 0.456, 0.406]
    assert stored["splits"]["test"] == test_names

    (root / "images" / "extra.jpg").symlink_to(sample_root / "images" / f"{names[0]}.jpg")
    Image.fromarray(pet(sample_root, names[0]) * 255).save(root / "masks" / "extra.png")
    overrides = [f"ckpt_path={ckpt}"]
    report = evaluate(compose_train(tmp_path / "eval", overrides, "eval"), overrides)
    assert report["images"] == len(test_names)  # the stored split, not a new one
    assert set(report["by_group"]) <= {"a", "b"}
    assert "by_species" not in report and "by_breed" not in report  # no official lists here

    folder_out = tmp_path / "model"
    export(
        compose_train(
            tmp_path / "export",
            [f"ckpt_path={ckpt}", "format=folder", f"output={folder_out}"],
            "export",
        )
    )
    card = (folder_out / "README.md").read_text()
    assert split_hash(test_names) in card and "the training split's own" in card
    summary = metrics["data_summary"]
    assert summary["pairs"] == {"train": 8, "val": 2, "test": 2} and summary["empty_masks"] == 0
    shares = [pet(sample_root, n).mean() for n in names]  # every pair's, as the scan reads them
    assert summary["foreground_median"] == pytest.approx(np.median(shares), abs=1e-4)
    assert summary["masks"] == {"0/255": 12}
    assert f"12 pairs; masks 0/255 (12); median foreground {np.median(shares):.1%}" in card
    model = segpets.load(folder_out)
    mask = model.predict(load_photo(root / "images" / f"{names[0]}.jpg"))
    assert mask.shape == pet(sample_root, names[0]).shape


def test_outline_band_is_the_ring_around_a_masks_edge():
    import torch

    from segpets.analysis import outline_band

    masks = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    masks[..., 4:12, 4:12] = 1
    band = outline_band(masks, radius=1)
    rows = band[0, 0].any(dim=1).nonzero().flatten().tolist()
    assert rows == list(range(2, 14))  # the edge pixels (rows 3-4, 11-12) and one more
    assert not band[0, 0, 6:10, 6:10].any()  # the interior stays out
    assert not band[0, 0, :2].any()


def test_synthetic_scenes_in_split_folders_read_as_their_oxford_layout(synthetic_root, tmp_path):
    oxford = OxfordPetDataModule(str(synthetic_root), image_size=64, num_workers=0)
    root = tmp_path / "scenes"
    for split, folder_name in (("train", "train"), ("val", "validation"), ("test", "test")):
        convert(synthetic_root, root / folder_name, oxford.dataset(split).names)
    converted = built(root)
    for split in ("train", "val", "test"):
        expected, dataset = oxford.dataset(split), converted.dataset(split)
        assert dataset.names == sorted(expected.names)
        for name in dataset.names[:3]:
            index = dataset.names.index(name)
            image, mask = dataset._decoded(index)
            oxford_image, oxford_mask = expected._decoded(expected.names.index(name))
            np.testing.assert_array_equal(image, oxford_image)
            np.testing.assert_array_equal(mask, oxford_mask)
    assert converted.dataset("test").image_path(name).name == f"{name}.jpg"
