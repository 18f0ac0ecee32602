"""segpets.inspect: a dataset's fingerprint, checked against figures worked out by hand."""

import json
import re
import statistics

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from segpets.data.fingerprint import count_regions, mask_encoding, root_manifest
from segpets.errors import SegpetsError
from segpets.inspect import inspect_dataset
from tests.helpers import compose_train, run_segpets

# A handmade Oxford-layout dataset. data.val_every=2: trainval lines 0 and 2 are val, 1
# and 3 train. Photo sides and trimap rectangles (1 = pet, 2 = background, 3 = border,
# which data.boundary=foreground counts as pet) are chosen so the figures are easy.
SIZES = {  # name: (width, height)
    "val_a": (64, 48),
    "train_b": (80, 40),
    "val_c": (48, 64),
    "train_d": (96, 48),  # a noisy copy of test_e, resized: leakage
    "test_e": (96, 48),
    "test_f": (72, 72),
}
TRAINVAL = ["val_a", "train_b", "val_c", "train_d"]
TEST = ["test_e", "test_f"]
# Pet pixels and regions (8-connected) per mask.
PET = {
    "val_a": (10 * 10, 1),  # one square of 1s
    "train_b": (2 * 6 * 6, 2),  # two squares apart
    "val_c": (2 * 4 * 4, 1),  # two squares touching at a corner: one region
    "train_d": (8 * 8 + 3 * 3, 2),  # a square of 1s and one of 3s (border), apart
    "test_e": (0, 0),  # empty
    "test_f": (20 * 30, 1),
}


def _photo(seed: int, width: int, height: int) -> np.ndarray:
    """A smooth random colour field: distinct photos get distinct hashes."""
    coarse = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def _trimap(name: str, width: int, height: int) -> np.ndarray:
    trimap = np.full((height, width), 2, np.uint8)
    if name == "val_a":
        trimap[5:15, 20:30] = 1
    elif name == "train_b":
        trimap[2:8, 2:8] = 1
        trimap[20:26, 40:46] = 1
    elif name == "val_c":
        trimap[10:14, 10:14] = 1
        trimap[14:18, 14:18] = 1
    elif name == "train_d":
        trimap[0:8, 0:8] = 1
        trimap[30:33, 60:63] = 3
    elif name == "test_f":
        trimap[10:40, 5:25] = 1
    return trimap


def write_oxford(root, extra_trainval=()):
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for seed, (name, (width, height)) in enumerate(SIZES.items()):
        if name == "train_d":
            continue
        Image.fromarray(_photo(seed, width, height)).save(root / "images" / f"{name}.jpg")
        trimap = Image.fromarray(_trimap(name, width, height))
        trimap.save(root / "annotations" / "trimaps" / f"{name}.png")
    # train_d: test_e's photo with slight noise, as a re-encoded copy would be.
    copy = np.asarray(Image.open(root / "images" / "test_e.jpg")).astype(np.int16)
    noise = np.random.default_rng(9).integers(-4, 5, copy.shape)
    noisy = np.clip(copy + noise, 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(root / "images" / "train_d.jpg", quality=85)
    Image.fromarray(_trimap("train_d", 96, 48)).save(
        root / "annotations" / "trimaps" / "train_d.png"
    )
    lines = [f"{name} 1 1 1\n" for name in [*TRAINVAL, *extra_trainval]]
    (root / "annotations" / "trainval.txt").write_text("".join(lines))
    (root / "annotations" / "test.txt").write_text("".join(f"{n} 1 1 1\n" for n in TEST))
    return root


def inspect(tmp_path, root, *overrides):
    cfg = compose_train(
        tmp_path,
        [f"data.root={root}", "data.val_every=2", "workers=0", *overrides],
        config_name="inspect",
    )
    return inspect_dataset(cfg)


@pytest.fixture
def handmade(tmp_path):
    return write_oxford(tmp_path / "pets")


def test_figures_equal_those_worked_out_by_hand(handmade, tmp_path):
    result = inspect(tmp_path, handmade)
    assert result["pairs"] == {"train": 2, "val": 2, "test": 2}
    widths = [w for w, _ in SIZES.values()]
    heights = [h for _, h in SIZES.values()]
    aspects = [w / h for w, h in SIZES.values()]
    assert result["image_size"]["width"] == {"min": 48, "median": 76.0, "max": 96}
    assert result["image_size"]["width"]["median"] == statistics.median(widths)
    assert result["image_size"]["height"] == {
        "min": 40,
        "median": statistics.median(heights),
        "max": 72,
    }
    assert result["image_size"]["aspect"]["max"] == pytest.approx(max(aspects), abs=1e-4)
    assert result["image_size"]["aspect"]["min"] == pytest.approx(0.75, abs=1e-4)
    assert result["image_modes"] == {"RGB": 6} and result["channels"] == {"3": 6}

    shares = [PET[name][0] / (w * h) for name, (w, h) in SIZES.items()]
    foreground = result["foreground"]
    assert foreground["min"] == 0 and foreground["empty"] == 1
    assert foreground["max"] == pytest.approx(max(shares), abs=1e-6)
    assert foreground["median"] == pytest.approx(statistics.median(shares), abs=1e-6)
    assert foreground["mean"] == pytest.approx(statistics.fmean(shares), abs=1e-6)

    regions = [count for _, count in PET.values()]
    assert result["regions"] == {
        "min": 0,
        "median": statistics.median(regions),
        "max": 2,
        "one_region": 3,
        "one_region_share": 0.5,
    }
    # Every trimap holds background (2); test_e's holds nothing else.
    assert result["mask_encodings"] == {"trimap {1,2,3}": 6}
    assert [(p["split"], p["name"], p["kind"]) for p in result["problems"]] == [
        ("test", "test_e", "empty mask")
    ]
    assert result["problems"][0]["files"] == [
        str(handmade / "images" / "test_e.jpg"),
        str(handmade / "annotations" / "trimaps" / "test_e.png"),
    ]
    assert result["problem_counts"] == {"empty mask": 1}


def test_near_duplicates_across_splits_are_found_and_distinct_photos_are_not(handmade, tmp_path):
    duplicates = inspect(tmp_path, handmade)["near_duplicates"]
    assert duplicates["hash"] == "dhash64" and duplicates["threshold"] == 6
    assert duplicates["count"] == 1
    (pair,) = duplicates["pairs"]
    assert (pair["a"], pair["b"]) == ("train/train_d", "test/test_e")
    assert pair["distance"] <= 6
    assert pair["files"] == [str(handmade / "images" / n) for n in ("train_d.jpg", "test_e.jpg")]
    # With 0 bits allowed, only identical thumbnails would count.
    strict = inspect(tmp_path / "strict", handmade, "duplicate_bits=0", "montage=0")
    assert strict["near_duplicates"]["count"] <= 1
    assert strict["montage"] is None and not (tmp_path / "strict" / "run" / "montage.png").exists()


def test_fingerprint_json_montage_and_the_worker_processes(handmade, tmp_path):
    result = inspect(tmp_path, handmade, "workers=2", "montage=5", f"output={tmp_path / 'fp.json'}")
    run = tmp_path / "run"
    written = json.loads((run / "fingerprint.json").read_text())
    assert written == result == json.loads((tmp_path / "fp.json").read_text())
    assert list(written) == [
        "format",
        "source",
        "manifest",
        "pairs",
        "image_size",
        "image_modes",
        "channels",
        "foreground",
        "regions",
        "mask_encodings",
        "near_duplicates",
        "problems",
        "problem_counts",
        "montage",
        "seconds",
    ]
    assert written["format"] == 1 and written["montage"] == "montage.png"
    assert written["source"]["root"] == str(handmade.resolve())
    assert written["source"]["target"] == "segpets.data.OxfordPetDataModule"
    assert written["manifest"] == root_manifest(handmade)
    # Worker processes read the same figures as this process does.
    alone = inspect(tmp_path / "alone", handmade, "workers=0")
    assert {k: v for k, v in alone.items() if k != "seconds"} == {
        k: v for k, v in result.items() if k != "seconds"
    }
    with Image.open(run / "montage.png") as sheet:
        assert sheet.mode == "RGB" and sheet.width > 4 * 150 and sheet.height > 2 * 150


def test_the_manifest_changes_with_the_files(handmade):
    before = root_manifest(handmade)
    assert root_manifest(handmade) == before
    (handmade / "fingerprint.json").write_text("{}")  # one written beside the data
    assert root_manifest(handmade) == before
    (handmade / "annotations" / "trimaps" / "val_a.png").write_bytes(b"")
    assert root_manifest(handmade) != before


def test_samples_the_dataset_leaves_out_are_problems_named_by_file(tmp_path):
    root = write_oxford(tmp_path / "pets", extra_trainval=["gone", "odd_size"])
    Image.fromarray(_photo(7, 64, 48)).save(root / "images" / "gone.jpg")  # no trimap
    Image.fromarray(_photo(8, 64, 48)).save(root / "images" / "odd_size.jpg")
    Image.fromarray(np.full((40, 64), 2, np.uint8)).save(
        root / "annotations" / "trimaps" / "odd_size.png"
    )
    result = inspect(tmp_path, root)
    # trainval lines 4 and 5: "gone" is val, "odd_size" train; neither is counted.
    assert result["pairs"] == {"train": 2, "val": 2, "test": 2}
    problems = {p["name"]: p for p in result["problems"]}
    assert problems["gone"]["split"] == "val"
    assert str(root / "annotations" / "trimaps" / "gone.png") in problems["gone"]["problem"]
    assert problems["odd_size"]["problem"] == "trimap is 64x40, image 64x48"
    assert (problems["gone"]["kind"], problems["odd_size"]["kind"]) == ("unpaired", "size mismatch")
    assert result["problem_counts"] == {"unpaired": 1, "size mismatch": 1, "empty mask": 1}


@pytest.mark.parametrize(
    ("mode", "values", "encoding"),
    [
        ("L", [0, 255], "L {0,255}"),
        ("L", [0, 1], "L {0,1}"),
        ("L", [1, 2, 3], "trimap {1,2,3}"),
        ("L", list(range(0, 256, 16)), "L many values (JPEG-like)"),
        ("P", [0, 1], "P palette"),
    ],
)
def test_mask_encodings_are_named_by_mode_and_values(mode, values, encoding):
    pixels = np.array(values * 4, np.uint8).reshape(4, -1)
    assert (
        mask_encoding(
            Image.fromarray(pixels).convert(mode) if mode == "P" else Image.fromarray(pixels)
        )
        == encoding
    )
    rgb = Image.fromarray(np.stack([pixels] * 3, axis=-1))
    if encoding.startswith("L {"):
        assert mask_encoding(rgb) == "RGB " + encoding[2:]


def write_folder(root, oxford):
    """The handmade dataset in data=folder's layout: 0/255 PNG masks, split files."""
    for folder in ("images", "masks", "splits"):
        (root / folder).mkdir(parents=True)
    for name in SIZES:
        (root / "images" / f"{name}.jpg").write_bytes(
            (oxford / "images" / f"{name}.jpg").read_bytes()
        )
        trimap = np.asarray(Image.open(oxford / "annotations" / "trimaps" / f"{name}.png"))
        Image.fromarray(np.where(trimap == 2, 0, 255).astype(np.uint8)).save(
            root / "masks" / f"{name}.png"
        )
    for split in ("train", "val", "test"):
        names = [name for name in SIZES if name.startswith(split)]
        (root / "splits" / f"{split}.txt").write_text("\n".join(names) + "\n")
    (root / "images" / "notes.txt").write_text("not a photo")
    return root


def test_folder_data_gives_the_figures_of_the_same_files_in_the_oxford_layout(handmade, tmp_path):
    root = write_folder(tmp_path / "folder", handmade)
    oxford = inspect(tmp_path / "oxford", handmade)
    cfg = compose_train(
        tmp_path / "folder-run", ["data=folder", f"data.root={root}", "workers=0"], "inspect"
    )
    folder = inspect_dataset(cfg)
    for key in ("pairs", "image_size", "image_modes", "foreground", "regions"):
        assert folder[key] == oxford[key], key
    for pairs in (folder["near_duplicates"]["pairs"], oxford["near_duplicates"]["pairs"]):
        assert [(p["a"], p["b"]) for p in pairs] == [("train/train_d", "test/test_e")]
    assert folder["source"]["target"] == "segpets.data.FolderDataModule"
    # test_e's mask holds only background.
    assert folder["mask_encodings"] == {"L {0,255}": 5, "L {0}": 1}
    kinds = [(p["kind"], p["name"]) for p in folder["problems"]]
    assert ("empty mask", "test_e") in kinds
    (warning,) = [p["problem"] for p in folder["problems"] if p["kind"] == "source warning"]
    assert str(root / "images" / "notes.txt") in warning


def test_regions_are_counted_as_scipy_labels_them_8_connected():
    rng = np.random.default_rng(0)
    for density in (0.05, 0.3, 0.6):
        mask = rng.random((40, 50)) < density
        expected = ndimage.label(mask, np.ones((3, 3), bool))[1]
        assert count_regions(mask) == expected
    assert count_regions(np.eye(5, dtype=bool)) == 1  # a diagonal is one region


def test_no_dataset_at_data_root_exits_2_naming_it(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_segpets(
        "inspect", f"data.root={missing}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(missing) in line and "data.root" in line
    assert not missing.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=folder", "data.root={missing}"], "data.root={missing} is not a folder"),
        (["data=folder", "data.root={oxford}"], "use data=oxford_pet"),
        (["data.root={oxford}", "workers=-1"], "workers must be auto or an integer >= 0"),
        (["data.root={oxford}", "duplicate_bits=65"], "duplicate_bits must be at most 64"),
    ],
)
def test_bad_input_is_a_user_error_naming_the_option(handmade, tmp_path, overrides, message):
    paths = {"missing": tmp_path / "nowhere", "oxford": handmade}
    overrides = [o.format(**paths) for o in overrides]
    cfg = compose_train(tmp_path, ["workers=0", *overrides], config_name="inspect")
    with pytest.raises(SegpetsError, match=re.escape(message.format(**paths))):
        inspect_dataset(cfg)


def test_the_real_sample(sample_root, tmp_path):
    result = inspect(tmp_path, sample_root, "data.val_every=10", "workers=2", "montage=4")
    # Abyssinian_34's empty trimap is in no list: neither counted nor a problem.
    assert result["pairs"] == {"train": 180, "val": 20, "test": 198}
    assert not any(p["name"] == "Abyssinian_34" for p in result["problems"])
    assert result["image_size"]["width"]["min"] == 150
    assert result["image_size"]["width"]["max"] == 1646
    assert result["mask_encodings"] == {"trimap {1,2,3}": 398}
    assert result["foreground"]["empty"] == 0
    assert result["regions"]["min"] == 1 and result["regions"]["one_region"] < 398
    assert "RGBA" in result["image_modes"]  # a PNG under a .jpg name
    # Two photos in train are also in val or test: the sample leaks.
    assert sorted((pair["a"], pair["b"]) for pair in result["near_duplicates"]["pairs"]) == [
        ("train/Abyssinian_11", "val/Abyssinian_177"),
        ("train/Abyssinian_151", "test/Abyssinian_99"),
    ]
