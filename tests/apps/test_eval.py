"""segpets.eval on a tiny trained checkpoint."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from segpets.errors import ConfigError, SegpetsError
from segpets.eval import evaluate
from segpets.visual import SHEET_PADDING
from tests.helpers import REPO_ROOT, compose_train


def eval_config(tmp_path, ckpt, *overrides):
    overrides = [f"ckpt_path={ckpt}", *overrides]
    return compose_train(tmp_path, overrides, config_name="eval"), overrides


def test_eval_matches_the_test_dice_training_reported(tiny_run, tmp_path):
    trained = json.loads((tiny_run / "metrics.json").read_text())
    cfg, overrides = eval_config(tmp_path, tiny_run / "checkpoints" / "best.ckpt")
    report = evaluate(cfg, overrides)
    assert report["dice"] == pytest.approx(trained["test"]["test/dice"], abs=1e-6)
    assert report["iou"] == pytest.approx(trained["test"]["test/iou"], abs=1e-6)
    assert report["dice_dataset"] == pytest.approx(trained["test"]["test/dice_dataset"], abs=1e-6)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["images"] == 10
    assert set(written) >= {"dice", "dice_dataset", "iou", "precision", "recall", "images"}
    # What the report matches and pairs an eval by: the training run, the same test set.
    assert written["train_run"] == str(tiny_run.resolve())
    assert written["test_data"] == trained["test_data"]


def test_per_image_csv_lists_every_image_worst_first(tiny_run, tmp_path):
    cfg, overrides = eval_config(tmp_path, tiny_run / "checkpoints" / "best.ckpt", "split=val")
    report = evaluate(cfg, overrides)
    with open(tmp_path / "run" / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:5] == ["name", "dice", "iou", "true_fraction", "pred_fraction"]
    assert set(rows[0]) >= {"species", "breed", "boundary_dice", "interior_dice"}
    assert len(rows) == report["images"] == 3  # every 10th of 30 trainval lines
    dice = [float(row["dice"]) for row in rows]
    assert dice == sorted(dice)
    assert sum(dice) / len(dice) == pytest.approx(report["dice"], abs=1e-6)


def test_eval_reports_errors_by_kind_calibration_and_the_best_threshold(tiny_run, tmp_path):
    cfg, overrides = eval_config(tmp_path, tiny_run / "checkpoints" / "best.ckpt", "worst=4")
    report = evaluate(cfg, overrides)
    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text()) == report
    assert 0.0 <= report["ece"] <= 1.0
    assert 0.0 <= report["boundary_dice"] <= 1.0 and 0.0 <= report["interior_dice"] <= 1.0
    # The sweep scores as the metric does: at the checkpoint's threshold, the same Dice.
    assert report["dice_by_threshold"]["0.50"] == pytest.approx(report["dice"], abs=1e-6)
    assert report["best_threshold_dice"] == max(report["dice_by_threshold"].values())
    assert report["best_threshold_dice"] >= report["dice"] - 1e-6
    # Synthetic lists: Stripy cats and spotty dogs, five of each in the test split.
    assert report["by_species"] == {
        "cat": {"images": 5, "dice": pytest.approx(report["by_breed"]["Stripy"]["dice"])},
        "dog": {"images": 5, "dice": pytest.approx(report["by_breed"]["spotty"]["dice"])},
    }
    with Image.open(run / "worst.png") as sheet:
        assert sheet.size[0] > 4 * 64  # four panels in a row
    assert report["worst_sheet"] == str(run / "worst.png")


def test_worst_larger_than_the_split_shows_every_image_and_zero_none(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "best.ckpt"
    cfg, overrides = eval_config(tmp_path / "all", ckpt, "split=val", "worst=50")
    evaluate(cfg, overrides)
    cfg, overrides = eval_config(tmp_path / "two", ckpt, "split=val", "worst=2")
    evaluate(cfg, overrides)
    with (
        Image.open(tmp_path / "all" / "run" / "worst.png") as every,
        Image.open(tmp_path / "two" / "run" / "worst.png") as two,
    ):
        # Three val images: one row of three panels, one panel (and padding) wider than two.
        assert every.height == two.height
        assert every.width - two.width == (two.width - SHEET_PADDING) / 2
    cfg, overrides = eval_config(tmp_path / "none", ckpt, "split=val", "worst=0")
    assert evaluate(cfg, overrides)["worst_sheet"] is None
    assert not (tmp_path / "none" / "run" / "worst.png").exists()


def test_real_lists_give_scores_by_species_and_breed(tiny_run, sample_root, tmp_path):
    ckpt = tiny_run / "checkpoints" / "best.ckpt"
    cfg, overrides = eval_config(tmp_path, ckpt, f"data.root={sample_root}", "split=val", "worst=0")
    report = evaluate(cfg, overrides)
    assert report["images"] == 20
    assert set(report["by_species"]) == {"cat", "dog"}
    assert report["by_breed"]["Abyssinian"]["images"] == 10
    assert report["by_breed"]["american_bulldog"]["images"] == 10
    with open(tmp_path / "run" / "per_image.csv") as f:
        species = {row["name"]: row["species"] for row in csv.DictReader(f)}
    assert species["Abyssinian_100"] == "cat" and species["american_bulldog_10"] == "dog"


def test_a_negative_worst_names_the_option(tiny_run, tmp_path):
    cfg, overrides = eval_config(tmp_path, tiny_run / "checkpoints" / "best.ckpt", "worst=-1")
    with pytest.raises(ConfigError, match="worst must be a whole number >= 0"):
        evaluate(cfg, overrides)


def test_native_resolution_scores_the_original_trimap_by_hand(tiny_run, synthetic_root, tmp_path):
    """A 10 x 7 photo whose trimap has 15 pet, 3 border and 52 background pixels, every pixel
    predicted pet: at its own size, with the border ignored, Dice is 2 * 15 / (15 + 67)."""
    root = tmp_path / "pets"
    shutil.copytree(synthetic_root, root)
    (root / "annotations" / "test.txt").write_text("Stripy_16 1 1 1\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (7, 10, 3), dtype=np.uint8)).save(
        root / "images" / "Stripy_16.jpg"
    )
    trimap = np.full((7, 10), 2, dtype=np.uint8)
    trimap[2:5, 3:8] = 1  # 15 pet pixels
    trimap[1, 3:6] = 3  # 3 border pixels, ignored with data.boundary=ignore
    Image.fromarray(trimap).save(root / "annotations" / "trimaps" / "Stripy_16.png")
    cfg, overrides = eval_config(
        tmp_path,
        tiny_run / "checkpoints" / "best.ckpt",
        f"data.root={root}",
        "data.boundary=ignore",
        "resolution=native",
        "threshold=1e-30",  # every pixel pet: the Dice depends on the truth alone
        "tta=d4",
        "worst=0",  # the sheet's eight d4 predictions would double this test's time
    )
    report = evaluate(cfg, overrides)
    assert report["resolution"] == "native" and report["tta"] == "d4"
    assert report["images"] == 1
    with open(tmp_path / "run" / "per_image.csv") as f:
        (row,) = csv.DictReader(f)
    assert float(row["pred_fraction"]) == 1.0
    assert float(row["true_fraction"]) == pytest.approx(15 / 67)
    assert float(row["dice"]) == pytest.approx(2 * 15 / (15 + 67))
    assert report["dice"] == pytest.approx(2 * 15 / (15 + 67))
    assert report["iou"] == pytest.approx(15 / 67)


def test_command_line_data_overrides_replace_the_checkpoints(tiny_run, synthetic_root, tmp_path):
    ckpt = tiny_run / "checkpoints" / "best.ckpt"
    missing = tmp_path / "nowhere"
    cfg, overrides = eval_config(tmp_path, ckpt, f"data.root={missing}")
    with pytest.raises(SegpetsError, match="nowhere"):
        evaluate(cfg, overrides)


def test_bad_checkpoints_give_one_clear_error(tmp_path, tiny_run):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((tiny_run / "checkpoints" / "best.ckpt").read_bytes()[:5000])
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    for path, message in [
        (tmp_path / "missing.ckpt", "no such file"),
        (truncated, "not a readable PyTorch checkpoint"),
        (text, "not a readable PyTorch checkpoint"),
    ]:
        cfg, overrides = eval_config(tmp_path, path)
        with pytest.raises(SegpetsError, match=message):
            evaluate(cfg, overrides)


def test_a_checkpoint_of_another_model_is_named(tiny_run, tmp_path):
    cfg, overrides = eval_config(
        tmp_path, tiny_run / "checkpoints" / "best.ckpt", "model.widths=[8,16,32]"
    )
    with pytest.raises(SegpetsError, match=r"do not fit segpets\.models\.UNet"):
        evaluate(cfg, overrides)


@pytest.mark.slow
def test_eval_from_the_command_line(tiny_run, tmp_path):
    out = tmp_path / "eval"

    def eval_command(run_dir, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "segpets.eval", *args, f"hydra.run.dir={run_dir}"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # Both at once: each spends most of its time importing torch and Lightning.
    scored = eval_command(out, f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}", "tta=hflip")
    missing = eval_command(tmp_path / "missing", f"ckpt_path={tmp_path / 'nope.ckpt'}")
    stdout, stderr = scored.communicate(timeout=300)
    missing_stderr = missing.communicate(timeout=300)[1]
    assert scored.returncode == 0, stderr[-3000:]
    assert "Dice" in stdout
    assert json.loads((out / "metrics.json").read_text())["tta"] == "hflip"
    assert missing.returncode == 2
    assert "nope.ckpt: no such file" in missing_stderr
    assert "Traceback" not in missing_stderr
