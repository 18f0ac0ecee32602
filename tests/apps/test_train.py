"""The training path end to end, on tiny synthetic data."""

import csv
import json
import re

import pytest
import torch
from PIL import Image

from segpets.scores import TEST_SCORES, read_scores
from segpets.train import train
from tests.helpers import TINY_UNET, compose_train, run_segpets, tiny_run_overrides


@pytest.mark.parametrize("upsample", ["deconv", "bilinear", "nearest"])
@pytest.mark.parametrize(
    "model", [TINY_UNET, ["model=resnet34_unet"]], ids=["unet", "resnet34_unet"]
)
def test_fast_dev_run_each_model_and_upsample(model, upsample, synthetic_root, tmp_path):
    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *model, f"model.upsample={upsample}", "debug=fdr"],
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test"]["test/dice"] <= 1.0
    assert set(metrics["val"]) >= {"val/loss", "val/dice", "val/iou", "val/dice_dataset"}


@pytest.mark.parametrize("loss", ["bce", "dice", "bce_dice", "tversky", "bce_tversky", "focal"])
def test_fast_dev_run_each_loss(loss, synthetic_root, tmp_path):
    cfg = compose_train(
        tmp_path, [*tiny_run_overrides(synthetic_root), *TINY_UNET, f"loss={loss}", "debug=fdr"]
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["test"]["test/loss"]))


def test_training_writes_the_run_dir(synthetic_root, tmp_path):
    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=2", "logger=many"],
    )
    metrics = train(cfg)
    run = tmp_path / "run"
    written = json.loads((run / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "csv" / "metrics.csv").is_file()
    assert metrics["best_checkpoint"] == str(run / "checkpoints" / "best.ckpt")
    assert metrics["last_checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    assert metrics["seed"] == 42
    assert set(metrics["test"]) >= {"test/dice", "test/iou", "test/dice_dataset", "test/loss"}
    # The reported val/dice is the best checkpoint's, the one the test split was scored with.
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert best["epoch"] == metrics["best_epoch"]
    best_score = next(
        c["best_model_score"]
        for k, c in best["callbacks"].items()
        if k.startswith("ModelCheckpoint{'monitor': 'val/dice'")
    )
    assert metrics["val"]["val/dice"] == pytest.approx(float(best_score), abs=1e-6)
    assert best["segpets_config"]["model"]["_target_"] == "segpets.models.UNet"

    # Per-image test scores beside metrics.json, one row per test image, averaging to test/dice.
    scores = read_scores(run / TEST_SCORES)
    assert len(scores) == metrics["test_data"]["images"] == 10
    mean = sum(row["dice"] for row in scores.values()) / len(scores)
    assert mean == pytest.approx(metrics["test"]["test/dice"], abs=1e-6)
    assert set(next(iter(scores.values()))) == {"dice", "iou", "true_fraction", "pred_fraction"}
    assert metrics["test_data"]["root"] == str(synthetic_root.resolve())
    assert metrics["gflops_forward"] > 0 and metrics["test_images_per_second"] > 0
    assert Image.open(run / "worst.png").size[0] > 0
    # Training time beside each validation, for curves against wall-clock time.
    with open(run / "csv" / "metrics.csv") as f:
        times = [
            float(r["time/train_seconds"]) for r in csv.DictReader(f) if r["time/train_seconds"]
        ]
    assert len(times) == 2 and 0 < times[0] < times[1] <= metrics["train_seconds"]


def test_test_checkpoint_last_scores_the_weights_training_ended_with(synthetic_root, tmp_path):
    from segpets.eval import evaluate

    overrides = [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=3"]
    metrics = train(compose_train(tmp_path, [*overrides, "test_checkpoint=last"]))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert metrics["scored_checkpoint"] == metrics["last_checkpoint"] == str(last)
    # segpets.eval on last.ckpt gives the test Dice training reported.
    scored = evaluate(compose_train(tmp_path / "eval", [f"ckpt_path={last}"], "eval"), [])
    assert scored["dice"] == pytest.approx(metrics["test"]["test/dice"], abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["test_checkpoint=final"], "test_checkpoint must be best (the best val Dice) or last"),
        (
            ["test_checkpoint=last", "callbacks.last_checkpoint=null"],
            "test_checkpoint=last but no callback writes last.ckpt",
        ),
    ],
)
def test_a_bad_test_checkpoint_is_refused_before_training(
    overrides, message, synthetic_root, tmp_path
):
    from segpets.errors import ConfigError

    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=1", *overrides],
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_training_learns_two_batches_by_heart(synthetic_root, tmp_path):
    cfg = compose_train(
        tmp_path,
        [
            *tiny_run_overrides(synthetic_root),
            "model=unet",
            "model.widths=[8,16,32]",
            "debug=overfit",
            "trainer.max_epochs=8",
            "optimizer.lr=0.01",
            "scheduler=constant",
            "logger=csv",
            "test=false",
        ],
    )
    train(cfg)
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["train/dice"]]
    first, last = rows[0], rows[-1]
    assert len(rows) == 8
    assert float(last["train/loss_epoch"]) < 0.9 * float(first["train/loss_epoch"])
    assert float(last["train/dice"]) > float(first["train/dice"]) + 0.1


@pytest.mark.slow
def test_quickstart_from_the_command_line(synthetic_root, tmp_path):
    run_dir = tmp_path / "quickstart"
    result = run_segpets(
        "train",
        "experiment=quickstart",
        f"data.root={synthetic_root}",
        "data.synthetic=null",
        "data.num_workers=0",
        "data.image_size=64",
        "model.widths=[4,8,16]",
        "trainer.max_epochs=2",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test Dice (mean per image)" in result.stdout
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["test/dice"] <= 1.0
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_compiled_module_checkpoints_load_uncompiled(synthetic_root, tmp_path):
    from segpets.train import build_module

    cfg = compose_train(
        tmp_path, [*tiny_run_overrides(synthetic_root), *TINY_UNET, "module.compile=true"]
    )
    module = build_module(cfg)
    plain = build_module(compose_train(tmp_path, [*tiny_run_overrides(synthetic_root), *TINY_UNET]))
    assert module.model._compiled_call_impl is not None
    assert module.state_dict().keys() == plain.state_dict().keys()
