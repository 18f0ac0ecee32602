"""SyntheticPets: seeded, idempotent, atomic, and readable as Oxford-IIIT Pet."""

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from segpets.data import OxfordPetDataModule, SyntheticPets
from segpets.data.oxford_pet import load_trimap, parse_list_file
from segpets.data.synthetic import MARKER
from segpets.errors import ConfigError, DataError

TINY = SyntheticPets(num_trainval=12, num_test=3, min_size=40, max_size=56, seed=3)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path: Path):
    first, again = TINY.write(tmp_path / "a"), TINY.write(tmp_path / "b")
    assert files(first) == files(again)
    image, trimap = TINY.scene(0)
    other_image, other_trimap = SyntheticPets(seed=4, min_size=40, max_size=56).scene(0)
    assert image.shape != other_image.shape or not np.array_equal(image, other_image)
    assert trimap.shape != other_trimap.shape or not np.array_equal(trimap, other_trimap)


def test_scenes_vary_and_have_a_border(synthetic_root: Path):
    trimaps = [load_trimap(p) for p in sorted((synthetic_root / "annotations/trimaps").iterdir())]
    assert len(trimaps) == 40
    assert all(set(np.unique(t).tolist()) == {1, 2, 3} for t in trimaps)
    shapes = {t.shape for t in trimaps}
    assert len(shapes) > 10 and any(h != w for h, w in shapes)
    assert all(64 <= side <= 96 for shape in shapes for side in shape)
    pet = np.array([(t != 2).mean() for t in trimaps])
    assert pet.min() > 0.05 and pet.max() < 0.8  # a pet in every scene, never all of it
    # A thin ring: (almost) every border pixel is within 2 px of pet or background.
    border = [Image.fromarray((t == 3).astype(np.uint8)) for t in trimaps]
    deep = sum(np.asarray(b.filter(ImageFilter.MinFilter(5))).sum() for b in border)
    assert deep < 0.01 * sum((t == 3).sum() for t in trimaps)


def test_layout_and_lists(synthetic_root: Path):
    annotations = synthetic_root / "annotations"
    trainval, test = (
        parse_list_file(annotations / "trainval.txt"),
        parse_list_file(annotations / "test.txt"),
    )
    assert (len(trainval), len(test)) == (30, 10) and not set(trainval) & set(test)
    assert parse_list_file(annotations / "list.txt") == trainval + test  # after its # header
    breeds = {
        line.split()[0].rsplit("_", 1)[0]: line.split()[1:]
        for line in (annotations / "test.txt").read_text().splitlines()
    }
    assert breeds == {"Stripy": ["1", "1", "1"], "spotty": ["2", "2", "1"]}
    assert all((synthetic_root / "images" / f"{name}.jpg").is_file() for name in trainval + test)


def test_second_write_keeps_the_files_changed_params_regenerate(tmp_path: Path):
    root = TINY.write(tmp_path / "pets")
    image = root / "images" / f"{TINY.names()[0]}.jpg"
    stamp = image.stat().st_mtime_ns
    TINY.write(root)
    assert image.stat().st_mtime_ns == stamp
    bigger = SyntheticPets(num_trainval=14, num_test=3, min_size=40, max_size=56, seed=3)
    bigger.write(root)
    assert len(parse_list_file(root / "annotations" / "trainval.txt")) == 14
    assert json.loads((root / MARKER).read_text())["num_trainval"] == 14
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets"]  # no staging folder left


def test_concurrent_writers_leave_one_complete_dataset(tmp_path: Path):
    """As DDP ranks on nodes sharing a filesystem would: all succeed, none sees half a set."""
    with ProcessPoolExecutor(3) as pool:
        roots = list(pool.map(TINY.write, [tmp_path / "pets"] * 3))
    assert roots == [tmp_path / "pets"] * 3
    assert files(tmp_path / "pets") == files(TINY.write(tmp_path / "reference"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets", "reference"]


def test_never_overwrites_a_folder_it_did_not_write(tmp_path: Path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DataError, match=r"photos exists and holds no synthetic dataset"):
        TINY.write(tmp_path / "photos")
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"


def test_bad_parameters_name_the_option():
    with pytest.raises(ConfigError, match=r"data.synthetic needs 32 <= min_size <= max_size"):
        SyntheticPets(min_size=100, max_size=90)
    with pytest.raises(ConfigError, match=r"data.synthetic.num_trainval must be >= 2"):
        SyntheticPets(num_trainval=1)


def test_datamodule_generates_in_prepare_data(tmp_path: Path):
    datamodule = OxfordPetDataModule(
        str(tmp_path / "pets"), image_size=32, batch_size=4, num_workers=0, synthetic=TINY
    )
    datamodule.prepare_data()
    datamodule.setup()
    assert [len(datamodule.dataset(s)) for s in ("train", "val", "test")] == [10, 2, 3]
    for loader in (datamodule.train_dataloader(), datamodule.test_dataloader()):
        batch = next(iter(loader))
        assert batch["image"].dtype == torch.float32 and batch["image"].shape[1:] == (3, 32, 32)
        assert batch["mask"].dtype == torch.uint8 and batch["mask"].shape[1:] == (1, 32, 32)
        assert set(batch["mask"].unique().tolist()) == {0, 1}


def test_download_and_synthetic_together_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"data.download=true and data.synthetic"):
        OxfordPetDataModule(str(tmp_path), download=True, synthetic=TINY)
