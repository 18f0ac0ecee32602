"""Model selection on the mean out-of-fold Dice: `optimized_metric=oof/dice data.folds=K`."""

import json

import pytest

from segpets.errors import ConfigError
from segpets.report import group_runs, read_runs
from segpets.scores import VAL_SCORES, read_scores
from segpets.train import optimized
from tests.helpers import TINY_UNET, compose_train, tiny_run_overrides


def test_oof_dice_trains_every_fold_in_the_job_and_returns_their_pooled_val_dice(
    synthetic_root, tmp_path
):
    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=1",
         "trainer.precision=32-true", "data.folds=2", "optimized_metric=oof/dice",
         "test=false"],
    )  # fmt: skip
    value = optimized(cfg)
    run = tmp_path / "run"
    pooled = {}
    for fold in (0, 1):
        rows = read_scores(run / f"fold_{fold}" / VAL_SCORES)
        assert {int(r["fold"]) for r in rows.values()} == {fold}
        pooled.update({n: r["dice"] for n, r in rows.items()})
    assert len(pooled) == 30  # every train+val image once, by the fold that held it out
    assert value == pytest.approx(sum(pooled.values()) / len(pooled))
    assert json.loads((run / "oof.json").read_text()) == {
        "oof/dice": pytest.approx(value),
        "folds": 2,
        "images": 30,
    }
    # The report reads the job's folds as fold runs of one group, with the same OOF Dice.
    [group] = group_runs(read_runs(run).rows)
    assert sorted(r["fold"] for r in group.finished) == [0, 1] and len(group.runs) == 2
    assert group.out_of_fold.mean == pytest.approx(value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimized_metric=oof/dice"], "needs data.folds=K, K >= 2"),
        (
            ["optimized_metric=test/dice"],
            "optimized_metric must be one of ['val/dice', 'oof/dice']",
        ),
    ],
)
def test_a_bad_optimized_metric_is_refused_before_training(overrides, message, tmp_path):
    cfg = compose_train(tmp_path, overrides)
    with pytest.raises(ConfigError) as error:
        optimized(cfg)
    assert message in str(error.value)
    assert not (tmp_path / "run").exists()
