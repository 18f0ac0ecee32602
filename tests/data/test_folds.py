"""k-fold cross-validation (data.folds, data.fold) and nested training subsets
(data.train_fraction) on Oxford's layout and a folder's: segpets/data/folds.py."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpets.data import FolderDataModule, OxfordPetDataModule
from segpets.data.folds import fold_assignment, nested_subset
from segpets.data.oxford_pet import parse_list_file
from segpets.errors import ConfigError
from segpets.scores import VAL_SCORES
from tests.helpers import (
    CONFIG_DIR,
    TINY_UNET,
    check_test_scores,
    compose_train,
    run_segpets,
    tiny_run_overrides,
)

PAIRS = 24  # a folder's default split: 16 train, 4 val, 4 test


def oxford(root: Path, **options) -> OxfordPetDataModule:
    return OxfordPetDataModule(str(root), image_size=64, num_workers=0, **options)


def folder(root: Path, **options) -> FolderDataModule:
    return FolderDataModule(str(root), image_size=64, num_workers=0, **options)


def names(datamodule, split: str) -> list[str]:
    return list(datamodule.dataset(split).names)


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 px image/mask pairs whose foreground squares grow from a few pixels to most of it."""
    root = tmp_path_factory.mktemp("folds") / "polyps"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(PAIRS):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        side = 4 + 2 * index
        mask[:side, :side] = 255
        Image.fromarray(image).save(root / "images" / f"p{index:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"p{index:02d}.png")
    return root


def check_partition(make, folds: int) -> None:
    """Every fold's val is one fold of the train+val pool; train the rest; test untouched."""
    plain = make()
    pool = set(names(plain, "train")) | set(names(plain, "val"))
    test = names(plain, "test")
    seen: list[str] = []
    for fold in range(folds):
        datamodule = make(folds=folds, fold=fold)
        train, val = names(datamodule, "train"), names(datamodule, "val")
        assert not set(train) & set(val)
        assert set(train) | set(val) == pool
        assert not (set(train) | set(val)) & set(test)
        assert names(datamodule, "test") == test
        seen += val
    assert sorted(seen) == sorted(pool)  # each pool stem in exactly one fold
    sizes = [len(names(make(folds=folds, fold=fold), "val")) for fold in range(folds)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_oxford_folds_partition_trainval_and_never_touch_test(synthetic_root, folds):
    check_partition(lambda **options: oxford(synthetic_root, **options), folds)
    trainval = parse_list_file(synthetic_root / "annotations" / "trainval.txt")
    record = oxford(synthetic_root, folds=folds, fold=0).resplit_record()
    assert sorted(record["folds"]) == sorted(trainval)
    assert record["splits"]["test"] == parse_list_file(synthetic_root / "annotations" / "test.txt")


@pytest.mark.parametrize("folds", [2, 4])
def test_folder_folds_partition_train_and_val_and_never_touch_test(folder_root, folds):
    check_partition(lambda **options: folder(folder_root, **options), folds)


def test_folder_with_split_files_folds_its_listed_train_and_val(folder_root, tmp_path):
    root = tmp_path / "listed"
    root.mkdir()
    for kind in ("images", "masks"):
        (root / kind).symlink_to(folder_root / kind)
    stems = sorted(p.stem for p in (folder_root / "images").iterdir())
    (root / "splits").mkdir()
    for split, part in (("train", stems[:12]), ("val", stems[12:18]), ("test", stems[18:])):
        (root / "splits" / f"{split}.txt").write_text("\n".join(part) + "\n")
    check_partition(lambda **options: folder(root, **options), 3)


def test_a_folder_runs_stored_split_holds_the_folds_and_is_not_folded_again(folder_root):
    from omegaconf import OmegaConf

    folded = folder(folder_root, folds=3, fold=1, train_fraction=0.5)
    stored = folded.stored_options()["splits"]
    assert stored["val"] == names(folded, "val") and stored["train"] == names(folded, "train")
    again = folder(
        folder_root, splits=OmegaConf.create(stored), folds=3, fold=1, train_fraction=0.5
    )
    assert {split: names(again, split) for split in stored} == stored


def test_the_same_seed_gives_the_same_folds_and_another_seed_others(synthetic_root, folder_root):
    for make in (oxford, folder):
        root = synthetic_root if make is oxford else folder_root
        first = make(root, folds=3, fold=2).resplit_record()
        second = make(root, folds=3, fold=2).resplit_record()
        assert first == second
        other = make(root, folds=3, fold=2, fold_seed=1).resplit_record()
        assert other["folds"] != first["folds"]
        assert sorted(other["folds"]) == sorted(first["folds"])


def test_the_folds_are_the_same_in_another_process_and_as_recorded(synthetic_root):
    """No hash randomisation, file order or machine in the draw: a process with another
    PYTHONHASHSEED gets the same folds, and a fixed pool gets the folds recorded here."""
    import os
    import subprocess
    import sys

    code = (
        "import json, sys; from segpets.data import OxfordPetDataModule; "
        "d = OxfordPetDataModule(sys.argv[1], folds=3, fold=0, train_fraction=0.5); "
        "print(json.dumps(d.resplit_record()))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(synthetic_root)],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    )
    here = oxford(synthetic_root, folds=3, fold=0, train_fraction=0.5).resplit_record()
    assert json.loads(other.stdout.splitlines()[-1]) == here
    shares = {f"s{index:02d}": (index * 7 % 12) / 12 for index in range(12)}
    assigned = fold_assignment(shares, 3, 0)
    assert [assigned[stem] for stem in sorted(assigned)] == [2, 0, 1, 1, 1, 0, 2, 0, 1, 2, 2, 0]
    assert nested_subset(sorted(shares), 0.25, 0) == ["s02", "s07", "s09"]


def test_the_folds_do_not_depend_on_the_order_or_the_boundary_option(synthetic_root):
    shares = {f"s{index}": index / 40 for index in range(40)}
    reversed_shares = dict(reversed(shares.items()))
    assert fold_assignment(shares, 4, 7) == fold_assignment(reversed_shares, 4, 7)
    by_boundary = {
        boundary: oxford(synthetic_root, folds=3, fold=0, boundary=boundary).resplit_record()
        for boundary in ("foreground", "ignore")
    }
    assert by_boundary["foreground"] == by_boundary["ignore"]


def test_every_fold_holds_small_and_large_foreground_shares():
    folds = 5
    shares = {f"s{index:02d}": (index * 37 % 50) / 50 for index in range(50)}
    assigned = fold_assignment(shares, folds, seed=3)
    order = sorted(shares, key=lambda stem: (shares[stem], stem))
    for start in range(0, len(order), folds):  # each run of 5 neighbours: one of each fold
        assert sorted(assigned[stem] for stem in order[start : start + folds]) == [0, 1, 2, 3, 4]
    uneven = fold_assignment({f"s{index}": index / 23 for index in range(23)}, folds, seed=0)
    sizes = [list(uneven.values()).count(fold) for fold in range(folds)]
    assert sorted(sizes) == [4, 4, 5, 5, 5]


def test_train_fractions_are_nested_subsets_and_leave_val_and_test_alone(synthetic_root):
    full = oxford(synthetic_root)
    train = names(full, "train")
    subsets = {}
    for fraction in (0.25, 0.5, 1.0):
        datamodule = oxford(synthetic_root, train_fraction=fraction)
        subsets[fraction] = names(datamodule, "train")
        assert len(subsets[fraction]) == max(1, round(fraction * len(train)))
        assert names(datamodule, "val") == names(full, "val")
        assert names(datamodule, "test") == names(full, "test")
    assert set(subsets[0.25]) < set(subsets[0.5]) < set(subsets[1.0]) == set(train)
    assert subsets[1.0] == train
    other = names(oxford(synthetic_root, train_fraction=0.5, train_fraction_seed=1), "train")
    assert set(other) != set(subsets[0.5])
    tiny = oxford(synthetic_root, folds=3, fold=1, train_fraction=0.01)
    assert len(names(tiny, "train")) == 1
    assert set(names(tiny, "train")) < set(names(oxford(synthetic_root, folds=3, fold=1), "train"))
    assert nested_subset(["b", "a", "c"], 1.0, 0) == ["b", "a", "c"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"folds": 5, "fold": 5}, r"data.fold must be one of 0..4 .* got 5"),
        ({"folds": 5, "fold": -1}, r"data.fold must be one of 0..4 .* got -1"),
        ({"folds": 1, "fold": 0}, r"data.folds must be an integer >= 2 .* got 1"),
        ({"fold": 1}, r"data.fold=1 needs data.folds"),
        ({"folds": 3}, r"data.folds=3 needs data.fold"),
        ({"train_fraction": 0}, r"data.train_fraction must be a number in \(0, 1\] .* got 0"),
        ({"train_fraction": 1.5}, r"data.train_fraction must be a number in \(0, 1\] .* got 1.5"),
        ({"train_fraction": -0.5}, r"data.train_fraction must be a number in \(0, 1\]"),
    ],
)
def test_bad_fold_and_fraction_options_say_what_is_wrong(synthetic_root, options, message):
    with pytest.raises(ConfigError, match=message):
        oxford(synthetic_root, **options)


def test_more_folds_than_pool_images_is_an_error_naming_both(synthetic_root, folder_root):
    with pytest.raises(
        ConfigError, match=r"data.folds=31 needs at least 31 train\+val images.* 30"
    ):
        oxford(synthetic_root, folds=31, fold=0).setup("fit")
    with pytest.raises(ConfigError, match=r"data.folds=21 needs at least 21 .* 20"):
        folder(folder_root, folds=21, fold=0).setup("fit")


def test_a_bad_fold_exits_2_with_one_line(tmp_path):
    result = run_segpets("train", "data.folds=5", "data.fold=7", cwd=tmp_path)
    assert result.returncode == 2
    message = [line for line in result.stderr.splitlines() if "data.fold" in line]
    assert len(message) == 1 and "data.fold must be one of 0..4" in message[0]


def test_experiment_cv_sweeps_five_folds_of_five():
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=cv"], return_hydra_config=True)
    assert cfg.data.folds == 5 and cfg.hydra.mode.name == "MULTIRUN"
    params = cfg.hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    assert [(o.key_or_group, [str(v) for v in o.sweep_iterator()]) for o in parsed] == [
        ("data.fold", ["0", "1", "2", "3", "4"])
    ]


@pytest.mark.slow
def test_a_fold_run_writes_its_out_of_fold_scores_and_its_folds(synthetic_root, tmp_path):
    from segpets.train import train

    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=1",
         "trainer.precision=32-true", "worst_images=0", "data.folds=2", "data.fold=1",
         "logger=csv"],
    )  # fmt: skip
    train(cfg)
    run = tmp_path / "run"
    expected = names(oxford(synthetic_root, folds=2, fold=1), "val")
    with (run / VAL_SCORES).open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["name"] for row in rows) == sorted(expected)
    assert {row["fold"] for row in rows} == {"1"}
    assert list(rows[0])[:5] == ["name", "dice", "iou", "true_fraction", "pred_fraction"]
    assert (run / "splits" / "val.txt").read_text().split() == expected
    with (run / "splits" / "folds.csv").open(newline="") as file:
        folds = {row["stem"]: int(row["fold"]) for row in csv.DictReader(file)}
    assert sorted(stem for stem, fold in folds.items() if fold == 1) == sorted(expected)
    metrics = json.loads((run / "metrics.json").read_text())
    check_test_scores(run, metrics, images=10)  # the test split, untouched
    assert metrics["train_images"] == len(names(oxford(synthetic_root, folds=2, fold=1), "train"))
    with (run / "csv" / "metrics.csv").open(newline="") as file:  # one test/dice: the test's
        logged = [row["test/dice"] for row in csv.DictReader(file) if row.get("test/dice")]
    assert [float(value) for value in logged] == pytest.approx([metrics["test"]["test/dice"]])


@pytest.mark.parametrize("layout", ["oxford", "folder"])
def test_the_decoded_image_cache_serves_the_folds(synthetic_root, folder_root, tmp_path, layout):
    make, root = (oxford, synthetic_root) if layout == "oxford" else (folder, folder_root)
    options = {"folds": 3, "fold": 1, "train_fraction": 0.5}
    cached = make(root, cache=True, cache_dir=str(tmp_path / "cache"), **options)
    cached.prepare_data()
    plain = make(root, **options)
    for split in ("train", "val", "test"):
        assert type(cached.dataset(split)).__name__.startswith("Cached")
        assert names(cached, split) == names(plain, split)
