"""The label audit: its ranking on handmade labels, the app on two tiny runs, data.exclude."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpets.audit import main
from segpets.consensus import audit_image, rank, shifted
from segpets.errors import SegpetsError
from tests.helpers import TINY_UNET, compose_train, tiny_run_overrides

SIZE = 64


def ellipse(cy: int, cx: int, ry: int, rx: int) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE]
    return ((((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2) <= 1).astype(np.uint8)


def handmade_set(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """12 true pet masks and their labels, four of them corrupted: inverted, half erased,
    shifted by 6 px, and one with an extra region drawn beside the pet."""
    rng = np.random.default_rng(seed)
    truth = {
        f"pet_{i:02d}": ellipse(*rng.integers(26, 38, 2), *rng.integers(9, 15, 2))
        for i in range(12)
    }
    labels = dict(truth)
    labels["pet_01"] = 1 - truth["pet_01"]
    erased = truth["pet_02"].copy()
    rows = np.nonzero(erased.any(axis=1))[0]
    erased[: (rows.min() + rows.max()) // 2] = 0
    labels["pet_02"] = erased
    labels["pet_03"] = shifted(truth["pet_03"], 0, 6)
    extra = truth["pet_04"].copy()
    extra[2:16, 2:16] = 1
    labels["pet_04"] = extra
    return truth, labels


def models_agreeing_with(truth: np.ndarray, models: int, rng: np.random.Generator) -> list:
    """Probabilities of `models` models that agree with the true mask, each a little noisy."""
    return [
        np.clip(truth * 0.9 + 0.05 + rng.normal(0, 0.05, truth.shape), 0, 1) for _ in range(models)
    ]


def test_corrupted_labels_rank_first_with_their_kinds():
    truth, labels = handmade_set()
    rng = np.random.default_rng(1)
    entries = rank(
        [audit_image(n, labels[n], models_agreeing_with(t, 3, rng)) for n, t in truth.items()]
    )
    top = {entry.name: entry.kind for entry in entries[:4]}
    assert top == {
        "pet_01": "inverted",
        "pet_02": "missing part",
        "pet_03": "shifted",
        "pet_04": "extra region",
    }
    assert entries[0].name == "pet_01" and entries[0].dice == pytest.approx(0.0)
    shifted_entry = next(e for e in entries if e.name == "pet_03")
    assert shifted_entry.shift[0] == 0 and shifted_entry.shift[1] < 0  # moved back left
    assert shifted_entry.shifted_dice > shifted_entry.dice + 0.15
    for entry in entries[4:]:
        assert entry.kind == "agrees" and entry.score < 0.05
        assert entry.models == 3 and 0.8 < entry.confidence <= 1


def test_corrupted_masks_of_the_synthetic_set_rank_first(synthetic_root):
    """The synthetic pets' own masks at 64 px, three of them corrupted: inverted (the
    ignored pixels kept), the upper half erased, moved 6 px right."""
    datamodule = oxford(synthetic_root)
    dataset = datamodule.dataset("train")
    truth = {}
    for index, name in enumerate(dataset.names[:12]):
        image, mask = dataset._decoded(index)
        truth[name] = datamodule.eval_transform(image=image, mask=mask)["mask"].numpy()
    names = list(truth)
    labels = dict(truth)
    labels[names[1]] = np.where(truth[names[1]] == 255, 255, 1 - truth[names[1]])
    erased = truth[names[2]].copy()
    rows = np.nonzero((erased == 1).any(axis=1))[0]
    erased[: (rows.min() + rows.max()) // 2] = 0
    labels[names[2]] = erased
    labels[names[3]] = shifted(truth[names[3]], 0, 6)
    rng = np.random.default_rng(0)
    entries = rank(
        [audit_image(n, labels[n], models_agreeing_with(t == 1, 2, rng)) for n, t in truth.items()]
    )
    assert [(entry.name, entry.kind) for entry in entries[:3]] == [
        (names[1], "inverted"),
        (names[2], "missing part"),
        (names[3], "shifted"),
    ]
    assert all(entry.kind == "agrees" for entry in entries[3:])


def test_unsure_models_score_lower_than_sure_ones():
    truth, labels = handmade_set()
    sure = audit_image("a", labels["pet_01"], [truth["pet_01"] * 0.98 + 0.01])
    split = audit_image("b", labels["pet_01"], [truth["pet_01"], 1 - truth["pet_01"]])
    assert sure.score > 0.9 and split.confidence == pytest.approx(0.0)
    assert split.score == pytest.approx(0.0)


def test_ignored_pixels_do_not_count():
    truth, _ = handmade_set()
    label = truth["pet_00"].copy()
    label[:, : SIZE // 2] = 255  # the left half ignored, the models disagree there
    probs = truth["pet_00"].astype(np.float32)
    probs[:, : SIZE // 2] = 1 - probs[:, : SIZE // 2]
    entry = audit_image("pet_00", label, [probs])
    assert entry.dice == pytest.approx(1.0) and entry.kind == "agrees"


# --- The app on tiny runs ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_seeds(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two tiny UNets trained on `synthetic_root` with seeds 0 and 1."""
    from segpets.train import train

    runs = tmp_path_factory.mktemp("audit_runs")
    for seed in (0, 1):
        cfg = compose_train(
            runs / f"seed{seed}",
            [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=1",
             "trainer.precision=32-true", f"seed={seed}"],
        )  # fmt: skip
        train(cfg)
    return runs


def copy_runs(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("audit.*"))
    return target


def test_audit_of_two_seeds_writes_the_ranked_csv_and_the_figure(two_seeds, tmp_path, capsys):
    runs = copy_runs(two_seeds, tmp_path / "runs")
    (runs / "eval").mkdir()  # eval's output: a metrics.json, but no trained model
    (runs / "eval" / "metrics.json").write_text('{"dice": 0.5, "checkpoint": "x.ckpt"}')
    main([str(runs), "top=3", "device=cpu"])
    out = capsys.readouterr().out
    assert f"left out (unfinished or not a training run): {runs / 'eval'}" in out
    assert "label audit: 10 images, 2 models on the test split" in out
    with open(runs / "audit.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10  # the synthetic test split
    assert [int(row["rank"]) for row in rows] == list(range(1, 11))
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    for row in rows:
        assert row["models"] == "2" and row["where"] == "test"
        dice, confidence = float(row["label_vs_consensus_dice"]), float(row["confidence"])
        assert float(row["score"]) == pytest.approx((1 - dice) * confidence, abs=2e-4)
        assert row["kind"] in {"inverted", "shifted", "missing part", "extra region", "other",
                               "agrees"}  # fmt: skip
    assert rows[0]["image"] in out
    with Image.open(runs / "audit.png") as picture:
        assert picture.width > 3 * SIZE and picture.height > 3 * SIZE


def test_audit_predicts_another_split(two_seeds, tmp_path, capsys):
    runs = copy_runs(two_seeds, tmp_path / "runs")
    main([str(runs), "split=val", "top=0", "device=cpu"])
    with open(runs / "audit.csv") as f:
        rows = list(csv.DictReader(f))
    assert {row["where"] for row in rows} == {"val"} and len(rows) == 3
    assert not (runs / "audit.png").exists()


def exit_message(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_a_folder_without_runs_exits_2(tmp_path, capsys):
    err = exit_message([str(tmp_path)], capsys)
    assert "holds no finished training run" in err
    assert "no such folder" in exit_message([str(tmp_path / "nothing")], capsys)


def test_a_run_without_checkpoint_exits_2_naming_it(two_seeds, tmp_path, capsys):
    runs = copy_runs(two_seeds, tmp_path / "runs")
    run = runs / "seed1" / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("best_checkpoint", "scored_checkpoint", "last_checkpoint"):
        metrics[key] = str(run / "checkpoints" / Path(metrics[key]).name)
    (run / "metrics.json").write_text(json.dumps(metrics))
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    err = exit_message([str(runs), "device=cpu"], capsys)
    assert f"{runs / 'seed1' / 'run'} has no checkpoint" in err


def test_runs_of_different_datasets_exit_2_naming_both(two_seeds, tmp_path, capsys):
    runs = copy_runs(two_seeds, tmp_path / "runs")
    metrics_file = runs / "seed1" / "run" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["test_data"]["root"] = "/elsewhere/pets"
    metrics_file.write_text(json.dumps(metrics))
    err = exit_message([str(runs), "device=cpu"], capsys)
    assert "runs of different datasets" in err
    assert str(runs / "seed0" / "run") in err and str(runs / "seed1" / "run") in err
    assert "/elsewhere/pets" in err


def test_a_bad_option_exits_2(tmp_path, capsys):
    assert "not an option of the audit" in exit_message([str(tmp_path), "splits=val"], capsys)
    assert "top must be an integer" in exit_message([str(tmp_path), "top=-1"], capsys)
    assert "split must be one of" in exit_message([str(tmp_path), "split=holdout"], capsys)


def test_fold_runs_predict_their_own_val_fold(synthetic_root, two_seeds, tmp_path, capsys):
    from segpets.train import train

    runs = tmp_path / "cv"
    for fold in (0, 1):
        cfg = compose_train(
            runs / f"fold{fold}",
            [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=1",
             "trainer.precision=32-true", "data.folds=2", f"data.fold={fold}", "test=false"],
        )  # fmt: skip
        train(cfg)
    main([str(runs), "top=2", "device=cpu"])
    assert "30 images, 2 models out-of-fold over 2 folds" in capsys.readouterr().out
    with open(runs / "audit.csv") as f:
        rows = list(csv.DictReader(f))
    folds = {}
    for line in (runs / "fold0" / "run" / "splits" / "folds.csv").read_text().splitlines()[1:]:
        stem, fold = line.split(",")
        folds[stem] = f"fold {fold}"
    assert {row["image"]: row["where"] for row in rows} == folds  # every train+val image once
    assert {row["models"] for row in rows} == {"1"}
    copy_runs(two_seeds / "seed0", tmp_path / "plain")
    err = exit_message([str(tmp_path), "device=cpu"], capsys)  # fold and plain runs
    assert "fold runs mixed with other runs" in err


# --- data.exclude ------------------------------------------------------------------------


def oxford(root: Path, **options):
    from segpets.data import OxfordPetDataModule

    return OxfordPetDataModule(str(root), image_size=64, num_workers=0, **options)


def names(datamodule, split: str) -> list[str]:
    return list(datamodule.dataset(split).names)


def test_excluded_stems_leave_train_and_val_and_stay_in_test(synthetic_root, tmp_path):
    plain = oxford(synthetic_root)
    train, val, test = (names(plain, split) for split in ("train", "val", "test"))
    listed = [*train[:2], val[0], *test[:2], "no_such_stem"]
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# from audit.csv\n" + "\n".join(listed) + "\n\n" + train[0] + "\n")
    datamodule = oxford(synthetic_root, exclude=str(exclude))
    assert names(datamodule, "train") == train[2:]
    assert names(datamodule, "val") == val[1:]
    assert names(datamodule, "test") == test  # never silently out of the test split
    assert datamodule.excluded() == {
        "file": str(exclude), "listed": 6, "train": 2, "val": 1, "test_kept": 2,
    }  # fmt: skip
    assert plain.excluded() is None


def test_exclusion_keeps_the_folds_and_needs_its_file_only_for_train_and_val(
    synthetic_root, tmp_path
):
    folds = {"folds": 3, "fold": 1}
    plain = oxford(synthetic_root, **folds)
    val = names(plain, "val")
    exclude = tmp_path / "exclude.txt"
    exclude.write_text(f"{val[0]}\n{names(plain, 'train')[0]}\n")
    datamodule = oxford(synthetic_root, exclude=str(exclude), **folds)
    assert names(datamodule, "val") == val[1:]
    assert datamodule.resplit_record()["folds"] == plain.resplit_record()["folds"]
    assert datamodule.excluded()["train"] == 1 and datamodule.excluded()["val"] == 1
    missing = oxford(synthetic_root, exclude=str(tmp_path / "gone.txt"))
    assert len(names(missing, "test")) == 10  # eval of test runs without the file
    with pytest.raises(SegpetsError, match=r"data.exclude=.*gone.txt: cannot read it"):
        names(missing, "train")


def test_a_folder_with_a_stored_split_leaves_excluded_stems_out(tmp_path):
    from segpets.data import FolderDataModule

    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (tmp_path / "pets" / folder).mkdir(parents=True)
    stems = [f"pet_{i}" for i in range(8)]
    for stem in stems:
        photo = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(photo).save(tmp_path / "pets" / "images" / f"{stem}.png")
        Image.fromarray(ellipse(32, 32, 12, 12)[16:48, 16:48] * 255).save(
            tmp_path / "pets" / "masks" / f"{stem}.png"
        )
    (tmp_path / "exclude.txt").write_text("pet_0\npet_6\n")
    splits = {"train": stems[:4], "val": stems[4:6], "test": stems[6:]}
    datamodule = FolderDataModule(
        str(tmp_path / "pets"), image_size=32, num_workers=0, splits=splits,
        exclude=str(tmp_path / "exclude.txt"),
    )  # fmt: skip
    assert names(datamodule, "train") == stems[1:4]
    assert names(datamodule, "test") == stems[6:]
    assert datamodule.excluded() == {
        "file": str(tmp_path / "exclude.txt"), "listed": 2, "train": 1, "val": 0, "test_kept": 1,
    }  # fmt: skip


def test_a_run_with_data_exclude_records_it_in_metrics(synthetic_root, tmp_path):
    from segpets.train import train

    plain = oxford(synthetic_root)
    exclude = tmp_path / "exclude.txt"
    exclude.write_text(f"{names(plain, 'train')[0]}\n{names(plain, 'test')[0]}\n")
    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=1",
         "trainer.precision=32-true", f"data.exclude={exclude}"],
    )  # fmt: skip
    metrics = train(cfg)
    assert metrics["excluded"] == {
        "file": str(exclude), "listed": 2, "train": 1, "val": 0, "test_kept": 1,
    }  # fmt: skip
    assert metrics["train_images"] == len(names(plain, "train")) - 1
    assert metrics["test_data"]["images"] == len(names(plain, "test"))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["excluded"] == metrics["excluded"]
    trained_on = (tmp_path / "run" / "splits" / "train.txt").read_text().splitlines()
    assert exclude.read_text().split()[0] not in trained_on
