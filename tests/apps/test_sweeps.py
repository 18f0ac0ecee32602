"""Multirun sweeps from the command line, the comparison report, and DDP on two CPU processes."""

import csv
import json

import pytest
from omegaconf import OmegaConf

from tests.helpers import TINY_UNET, run_segpets, tiny_run_overrides


def tiny(synthetic_root):
    """A two-epoch run of a tiny UNet, as command-line overrides."""
    return [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=2"]


@pytest.mark.slow
def test_a_two_run_sweep_then_the_report(synthetic_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_segpets(
        "train",
        "-m",
        *tiny(synthetic_root),
        "model.upsample=deconv,bilinear",
        # Both jobs at once, in two processes.
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))
    assert [run.name for run in runs] == ["0", "1"]
    for run in runs:
        assert (run / "checkpoints" / "best.ckpt").is_file()
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    # TensorBoard's HPARAMS tab: each run's overrides beside its final metrics.
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    summaries = {
        value.tag: value
        for path in (runs[0] / "tensorboard").glob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
    }
    session = summaries["_hparams_/session_start_info"].metadata.plugin_data
    assert session.plugin_name == "hparams" and b"model.upsample=deconv" in session.content
    assert {"hp/val_dice", "hp/test_dice", "hp/test_iou"} <= set(summaries)
    upsamples = {json.loads((run / "metrics.json").read_text())["overrides"][-1] for run in runs}
    assert upsamples == {"model.upsample=deconv", "model.upsample=bilinear"}

    # An unfinished run (no metrics.json) is listed, not dropped.
    (sweep_dir / "2" / ".hydra").mkdir(parents=True)
    (sweep_dir / "2" / ".hydra" / "config.yaml").write_text("model: {upsample: deconv}\n")
    report = run_segpets("report", str(sweep_dir), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    with open(sweep_dir / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert {
        "model",
        "loss",
        "upsample",
        "augment",
        "precision",
        "epochs",
        "parameters",
        "val_dice",
        "best_epoch",
        "test_dice",
        "test_dice_dataset",
        "test_iou",
        "lowest_val_loss_epoch",
        "train_seconds",
        "status",
    } <= set(rows[0])
    finished = [row for row in rows if row["status"] == "finished"]
    assert {row["upsample"] for row in finished} == {"deconv", "bilinear"}
    assert [row["status"] for row in rows].count("unfinished or failed") == 1
    dice = [float(row["val_dice"]) for row in finished]
    assert dice == sorted(dice, reverse=True)
    assert all(
        int(row["parameters"]) > 0 and row["lowest_val_loss_epoch"] != "" for row in finished
    )
    assert {row["group"] for row in rows} == {
        "model.upsample=deconv",
        "model.upsample=bilinear",
        "runs without saved overrides",
    }
    # The two upsamplings are paired on the same ten test images; the unfinished run sits out.
    with open(sweep_dir / "comparisons.csv") as f:
        [comparison] = list(csv.DictReader(f))
    assert comparison["images"] == "10" and comparison["p_holm"] != ""
    markdown = (sweep_dir / "report.md").read_text()
    assert (
        "**model.upsample=" in markdown and "Holm correction applied over 1 comparison" in markdown
    )
    assert "model.upsample=deconv" in (sweep_dir / "report.html").read_text()
    for figure in ("curves.png", "pareto.png"):
        png = sweep_dir / figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(synthetic_root, tmp_path):
    run_dir = tmp_path / "ddp"
    result = run_segpets(
        "train",
        *tiny(synthetic_root),
        "trainer=ddp_sim",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # One TensorBoard log, all written by rank zero (its pid is in every file name).
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and len({path.name.split(".")[4] for path in events}) == 1
    assert not list(tmp_path.glob("logs"))  # the second process wrote into the same run dir
    ddp = json.loads((run_dir / "metrics.json").read_text())
    # Val has 3 images for 2 processes: equal only if no sample is repeated to even them out.
    for split, images in (("test", 10), ("val", 3)):
        single = run_segpets(
            "eval",
            f"ckpt_path={ddp['best_checkpoint']}",
            f"split={split}",
            "trainer=cpu",
            f"hydra.run.dir={tmp_path / split}",
            cwd=tmp_path,
        )
        assert single.returncode == 0, single.stderr[-3000:]
        evaluated = json.loads((tmp_path / split / "metrics.json").read_text())
        assert evaluated["images"] == images
        for name in ("dice", "iou", "dice_dataset"):
            assert ddp[split][f"{split}/{name}"] == pytest.approx(evaluated[name], abs=1e-4)


@pytest.mark.slow
def test_a_two_trial_optuna_search(synthetic_root, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason='pip install -e ".[sweep]"')
    sweep_dir = tmp_path / "optuna"
    result = run_segpets(
        "train",
        "hparams_search=optuna",
        *tiny(synthetic_root),
        "trainer.max_epochs=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/metrics.json"))]
    assert len(trials) == 2
    assert all(any(o.startswith("optimizer.lr=") for o in t["overrides"]) for t in trials)
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(t["val"]["val/dice"] for t in trials))
