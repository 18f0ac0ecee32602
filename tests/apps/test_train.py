"""The training path end to end, on tiny synthetic data."""

import csv
import functools
import json
import math
import re

import pytest
import torch
from PIL import Image

from segpets.scores import TEST_SCORES, read_scores
from segpets.train import train
from tests.helpers import (
    EVERY_PIXEL_PET,
    TINY_UNET,
    check_test_scores,
    compose_train,
    run_segpets,
    tiny_run_overrides,
)
from tests.training.test_losses import LOGITS, PROBS, TARGET, TRUTH, p_true, tversky_score


@pytest.mark.parametrize("upsample", ["deconv", "bilinear", "nearest"])
@pytest.mark.parametrize(
    "model", [TINY_UNET, ["model=resnet34_unet"]], ids=["unet", "resnet34_unet"]
)
def test_fast_dev_run_each_model_and_upsample(model, upsample, synthetic_root, tmp_path):
    cfg = compose_train(
        tmp_path,
        [
            *tiny_run_overrides(synthetic_root),
            *model,
            f"model.upsample={upsample}",
            "debug=fdr",
            EVERY_PIXEL_PET,
        ],
    )
    metrics = train(cfg)
    check_test_scores(tmp_path / "run", metrics, images=4, every_pixel_pet=True)  # one batch
    assert set(metrics["val"]) >= {"val/loss", "val/dice", "val/iou", "val/dice_dataset"}


def bce_by_hand() -> float:
    return -sum(math.log(p_true(p, t)) for p, t in zip(PROBS, TRUTH, strict=True)) / len(PROBS)


def focal_by_hand(alpha: float, gamma: float) -> float:
    terms = [
        (alpha if t else 1 - alpha) * (1 - p_true(p, t)) ** gamma * -math.log(p_true(p, t))
        for p, t in zip(PROBS, TRUTH, strict=True)
    ]
    return sum(terms) / len(terms)


# Each loss option, with overrides that tell it from its neighbours (Tversky at its defaults
# is Dice), and its value on test_losses' fixed tensors by hand.
LOSSES = {
    "bce": ([], bce_by_hand),
    "dice": ([], lambda: 1 - tversky_score(PROBS, TRUTH, 0.5, 0.5)),
    "bce_dice": (["loss.weights.dice=0.5"], lambda: bce_by_hand() + 0.2),  # Dice loss 0.4
    "tversky": (
        ["loss.alpha=0.3", "loss.beta=0.7"],
        lambda: 1 - tversky_score(PROBS, TRUTH, 0.3, 0.7),
    ),
    "bce_tversky": (
        ["loss.terms.tversky.alpha=0.3", "loss.terms.tversky.beta=0.7"],
        lambda: bce_by_hand() + 1 - tversky_score(PROBS, TRUTH, 0.3, 0.7),
    ),
    "focal": ([], lambda: focal_by_hand(0.25, 2.0)),
}


@pytest.mark.parametrize("loss", LOSSES)
def test_fast_dev_run_each_loss_trains_with_its_formula(loss, synthetic_root, tmp_path):
    from segpets.train import build_module

    overrides, by_hand = LOSSES[loss]
    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *TINY_UNET, f"loss={loss}", *overrides, "debug=fdr"],
    )
    assert build_module(cfg).loss(LOGITS, TARGET).item() == pytest.approx(by_hand(), rel=1e-6)
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
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The Dice printed is the one in metrics.json: the mean of the per-image CSV's rows.
    assert f"test Dice (mean per image): {metrics['test']['test/dice']:.4f}\n" in result.stdout
    check_test_scores(run_dir, metrics, images=metrics["test_data"]["images"])
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_a_checkpoint_trained_compiled_loads_uncompiled_with_the_same_logits(
    synthetic_root, tmp_path, monkeypatch
):
    """module.compile=true compiles in place: eval, predict and export rebuild the model
    uncompiled from the checkpoint, and it computes what the compiled one does."""
    from segpets.checkpointing import model_from_checkpoint
    from segpets.train import build_module

    # Dynamo's eager backend: the same compiled wrapper, without minutes of C++ builds.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    one_batch = [f"trainer.limit_{stage}_batches=1" for stage in ("train", "val", "test")]
    cfg = compose_train(
        tmp_path,
        [
            *tiny_run_overrides(synthetic_root),
            *TINY_UNET,
            *one_batch,
            "trainer.max_epochs=1",
            "module.compile=true",
        ],
    )
    checkpoint = train(cfg)["last_checkpoint"]
    compiled = build_module(cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    compiled.load_state_dict(state)
    loaded, _ = model_from_checkpoint(checkpoint)
    assert loaded._compiled_call_impl is None
    fresh = build_module(cfg).model  # another initialisation: the weights did load
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = compiled.eval()(x)
        torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(fresh.eval()(x), expected, atol=1e-3)
