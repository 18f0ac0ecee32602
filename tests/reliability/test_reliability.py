"""Failing early and clearly, losing nothing, and reproducing numbers."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segpets.callbacks import NonFiniteLossError
from segpets.checkpointing import AtomicCheckpointIO, write_atomically
from segpets.cli import _user_error, composition_error_message
from segpets.errors import SegpetsError
from segpets.train import train
from tests.helpers import REPO_ROOT, TINY_UNET, compose_train, tiny_run_overrides

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}


def segpets_train(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "segpets.train", *overrides],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def layout(root: Path, source: Path, *, images=True, trimaps=True, trainval=None) -> Path:
    """A dataset folder built from links into `source`, with parts missing or replaced."""
    (root / "annotations").mkdir(parents=True)
    if images:
        (root / "images").symlink_to(source / "images")
    if trimaps:
        (root / "annotations" / "trimaps").symlink_to(source / "annotations" / "trimaps")
    (root / "annotations" / "test.txt").symlink_to(source / "annotations" / "test.txt")
    trainval_file = root / "annotations" / "trainval.txt"
    if trainval is None:
        trainval_file.symlink_to(source / "annotations" / "trainval.txt")
    else:
        trainval_file.write_text(trainval)
    return root


def bad_input_cases(synthetic_root: Path, tiny_run: Path, tmp_path: Path) -> dict:
    """name -> (overrides, texts the one error message must contain)."""
    tiny = [
        "model=unet",
        "model.widths=[4,8,16]",
        "trainer.max_epochs=1",
        f"data.root={synthetic_root}",
        "data.num_workers=0",
    ]
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((tiny_run / "checkpoints" / "best.ckpt").read_bytes()[:4000])
    (tmp_path / "notes.ckpt").write_text("a text file")
    (tmp_path / "pets.txt").write_text("not the dataset folder")
    bad_line = "cat_1 1 1\n"
    return {
        "missing data.root": (
            ["data=synthetic", f"data.root={tmp_path / 'nowhere'}", "data.synthetic=null"],
            ["nowhere", "data=synthetic"],
        ),
        "data.root a file": (
            [f"data.root={tmp_path / 'pets.txt'}"],
            ["data.root=", "pets.txt is a file, not a folder"],
        ),
        "no images/": (
            [f"data.root={layout(tmp_path / 'a', synthetic_root, images=False)}"],
            ["missing images/"],
        ),
        "no trimaps/": (
            [f"data.root={layout(tmp_path / 'b', synthetic_root, trimaps=False)}"],
            ["annotations/trimaps/"],
        ),
        "empty split": (
            [f"data.root={layout(tmp_path / 'c', synthetic_root, trainval='')}"],
            ["trainval.txt", "no usable train samples"],
        ),
        "bad list line": (
            [f"data.root={layout(tmp_path / 'd', synthetic_root, trainval=bad_line)}"],
            ["trainval.txt line 1: expected 4 fields", "got 3"],
        ),
        "unknown model": (
            ["model=unet3"],
            ["Could not find 'model/unet3'", "unet", "resnet34_unet"],
        ),
        "negative lr": ([*tiny, "optimizer.lr=-1"], ["optimizer", "Invalid learning rate: -1"]),
        "unknown encoder": (
            [*tiny[2:], "model=resnet34_unet", "model.encoder=resnet99"],
            ["model.encoder='resnet99' is not one of resnet18, resnet34, resnet50", "model=smp"],
        ),
        "zero batch": (
            [*tiny, "data.batch_size=0"],
            ["data.batch_size must be a positive integer"],
        ),
        "zero size": ([*tiny, "data.image_size=0"], ["data.image_size must be a positive integer"]),
        "tversky alpha": (
            [*tiny, "loss=tversky", "loss.alpha=2"],
            ["loss.alpha must be in [0, 1], got 2"],
        ),
        "missing ckpt": (
            [*tiny, f"ckpt_path={tmp_path / 'gone.ckpt'}"],
            ["gone.ckpt: no such file"],
        ),
        "text ckpt": (
            [*tiny, f"ckpt_path={tmp_path / 'notes.ckpt'}"],
            ["not a readable PyTorch checkpoint"],
        ),
        "truncated ckpt": (
            [*tiny, f"ckpt_path={truncated}"],
            ["not a readable PyTorch checkpoint"],
        ),
        "other model ckpt": (
            [
                *tiny[2:],
                "model=resnet34_unet",
                f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}",
            ],
            ["do not fit segpets.models.ResNetUNet"],
        ),
        "bad precision": ([*tiny, "trainer.precision=17"], ["trainer:", "precision"]),
    }


CLI_CASES = ("missing data.root", "unknown model", "negative lr", "truncated ckpt", "bad precision")


def test_bad_input_from_the_command_line_gives_one_message_and_status_2(
    synthetic_root, tiny_run, tmp_path
):
    # One case per way an error reaches the command line (data, Hydra's composition, an
    # option, a checkpoint, Lightning's Trainer); test_every_bad_input_... checks every message.
    every = bad_input_cases(synthetic_root, tiny_run, tmp_path)
    cases = {name: every[name] for name in CLI_CASES}
    # All at once: each process spends most of its time importing torch and Lightning.
    runs = {}
    for name in cases:
        run_dir = tmp_path / "runs" / name.replace(" ", "_")
        runs[name] = segpets_train(tmp_path, *cases[name][0], f"hydra.run.dir={run_dir}")
    for name in cases:
        _, stderr = runs[name].communicate(timeout=300)
        assert runs[name].returncode == 2, f"{name}: exit {runs[name].returncode}\n{stderr[-2000:]}"
        assert "Traceback" not in stderr, f"{name}:\n{stderr[-2000:]}"
        for text in cases[name][1]:
            assert text in stderr, f"{name}: {text!r} not in\n{stderr[-2000:]}"


def test_every_bad_input_gives_its_clear_error_before_training(synthetic_root, tiny_run, tmp_path):
    from hydra.errors import MissingConfigException

    for name, (overrides, expected) in bad_input_cases(synthetic_root, tiny_run, tmp_path).items():
        if name == "unknown model":
            with pytest.raises(MissingConfigException, match="unet3"):
                compose_train(tmp_path / name, overrides)
            continue
        cfg = compose_train(tmp_path / name.replace(" ", "_"), overrides)
        with pytest.raises(Exception) as error:
            train(cfg)
        message = str(_user_error(error.value))
        for text in expected:
            assert text in message, f"{name}: {text!r} not in {message!r}"
        assert not (tmp_path / name.replace(" ", "_") / "run" / "checkpoints").exists(), name


def test_ctrl_c_saves_last_ckpt_and_the_run_resumes_in_place(synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    common = [
        f"data.root={synthetic_root}",
        "data=synthetic",
        "data.synthetic=null",
        "data.num_workers=0",
        "data.image_size=64",
        "data.batch_size=2",
        "model.widths=[4,8,16]",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]
    process = segpets_train(tmp_path, *common, "trainer.max_epochs=50", f"hydra.run.dir={run_dir}")
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert last.exists(), process.communicate()[1][-2000:]
    time.sleep(0.3)  # into the next epoch
    # Ctrl-C: segpets turns it into Lightning's SIGTERM handling (stop after this batch).
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "resume with: python -m segpets.train ckpt_path=" in stdout
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["global_step"] > 0 and saved["epoch"] < 49
    assert not list(run_dir.glob("checkpoints/.*.tmp"))

    resumed = segpets_train(
        tmp_path, *common, f"trainer.max_epochs={saved['epoch'] + 2}", f"ckpt_path={last}"
    )
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())  # the same run dir
    assert metrics["global_step"] > saved["global_step"]
    final = torch.load(last, map_location="cpu", weights_only=False)
    assert final["global_step"] == metrics["global_step"]
    # The optimizer and scheduler went on from their saved state, not from scratch.
    assert final["optimizer_states"][0]["state"][0]["step"] == final["global_step"]
    assert final["lr_schedulers"][0]["last_epoch"] == final["global_step"]
    # One TensorBoard run, written to by both processes.
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) >= 2


def test_resume_last_finds_the_newest_run(tiny_run, tmp_path):
    from segpets.checkpointing import find_checkpoint, resume_dir

    runs = tiny_run.parent
    assert find_checkpoint("last", runs) == tiny_run / "checkpoints" / "last.ckpt"
    assert resume_dir("last", str(runs), "new") == str(tiny_run)
    assert resume_dir(None, str(runs), "new") == "new"
    assert resume_dir(str(tmp_path / "typo.ckpt"), str(runs), "new") == "new"
    with pytest.raises(SegpetsError, match="ckpt_path=last: no run under"):
        find_checkpoint("last", tmp_path)


def test_a_diverging_run_stops_with_its_step_and_keeps_finite_checkpoints(synthetic_root, tmp_path):
    cfg = compose_train(
        tmp_path,
        [
            *tiny_run_overrides(synthetic_root),
            *TINY_UNET,
            "trainer.max_epochs=5",
            "loss._target_=tests.helpers.NaNAfterSteps",
            "+loss.steps=9",
            "~loss.terms",
            "~loss.weights",
        ],
    )
    with pytest.raises(
        NonFiniteLossError, match=r"NaN or infinite at step \d+ \(epoch 1\)"
    ) as error:
        train(cfg)
    assert "optimizer.lr" in str(error.value) and "gradient_clip_val" in str(error.value)
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(tmp_path / "run" / "checkpoints" / name, weights_only=False)
        assert checkpoint["epoch"] == 0
        assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_a_finished_run_dir_is_never_overwritten(tiny_run, tmp_path):
    cfg = compose_train(tmp_path, [f"paths.output_dir={tiny_run}"])
    before = (tiny_run / "metrics.json").read_text()
    with pytest.raises(SegpetsError, match="already holds a run"):
        train(cfg)
    assert (tiny_run / "metrics.json").read_text() == before


def test_the_same_seed_gives_the_same_metrics(synthetic_root, tmp_path):
    results = []
    for name in ("first", "second"):
        cfg = compose_train(
            tmp_path / name,
            [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=2", "seed=7"],
        )
        results.append(train(cfg))
    assert results[0]["val"] == results[1]["val"]
    assert results[0]["test"] == results[1]["test"]
    assert results[0]["seed"] == 7


def test_a_kill_during_a_checkpoint_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_checkpoints_are_readable_by_others_as_the_umask_allows(synthetic_root, tmp_path):
    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=1", "test=false"],
    )
    umask = os.umask(0o022)
    try:
        train(cfg)
    finally:
        os.umask(umask)
    for name in ("best.ckpt", "last.ckpt"):
        path = tmp_path / "run" / "checkpoints" / name
        assert not path.is_symlink()
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, f"{name}: {oct(path.stat().st_mode)}"


def test_atomic_writes_follow_the_umask(tmp_path):
    umask = os.umask(0o027)
    try:
        write_atomically(tmp_path / "a" / "bytes.bin", b"data")
        write_atomically(tmp_path / "written.bin", lambda file: file.write(b"data"))
    finally:
        os.umask(umask)
    for path in (tmp_path / "a" / "bytes.bin", tmp_path / "written.bin"):
        assert path.read_bytes() == b"data"
        assert stat.S_IMODE(path.stat().st_mode) == 0o640


UNKNOWN_KEYS = {
    "trainer.max_epoch=5": "trainer.max_epoch: no such option; did you mean trainer.max_epochs?",
    "optimizer.lrr=1": "optimizer.lrr: no such option; did you mean optimizer.lr?",
}


@pytest.mark.parametrize("override", UNKNOWN_KEYS)
def test_an_unknown_key_names_the_nearest_one(override, tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        compose_train(tmp_path, [override])
    assert composition_error_message(error.value) == f"segpets: error: {UNKNOWN_KEYS[override]}"


def test_an_unknown_key_with_no_near_one_lists_the_keys_and_the_plus(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        compose_train(tmp_path, ["trainer.enable_checkpointing=false"])
    message = composition_error_message(error.value)
    assert message.startswith("segpets: error: trainer.enable_checkpointing: no such option; ")
    assert "max_epochs, " in message and "_target_" not in message
    assert message.endswith("write +trainer.enable_checkpointing=false")


@pytest.mark.slow
def test_unknown_keys_from_the_command_line_exit_2_with_did_you_mean(tmp_path):
    # The message for each key is checked in process (test_an_unknown_key_names_...). The
    # three commands run at once: each spends most of its time importing torch and Lightning.
    for name in ("key", "option", "multirun"):
        (tmp_path / name).mkdir()
    runs = {
        "key": segpets_train(tmp_path / "key", "trainer.max_epoch=5"),
        "option": segpets_train(tmp_path / "option", "model=unet3"),
        "multirun": segpets_train(tmp_path / "multirun", "-m", "trainer.max_epoch=1,2"),
    }
    stderr = {name: run.communicate(timeout=300)[1] for name, run in runs.items()}
    assert runs["key"].returncode == 2, stderr["key"][-2000:]
    assert stderr["key"] == f"segpets: error: {UNKNOWN_KEYS['trainer.max_epoch=5']}\n"
    assert not list((tmp_path / "key").iterdir()), "nothing is written for a config that fails"
    # Hydra's own composition errors keep Hydra's message, and status 2.
    assert runs["option"].returncode == 2 and "Traceback" not in stderr["option"]
    assert (
        "Could not find 'model/unet3'" in stderr["option"] and "resnet34_unet" in stderr["option"]
    )
    assert runs["multirun"].returncode == 2, stderr["multirun"][-2000:]
    assert stderr["multirun"].endswith(f"segpets: error: {UNKNOWN_KEYS['trainer.max_epoch=5']}\n")


@pytest.mark.slow
def test_a_bug_in_the_task_keeps_its_traceback(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(
        "import hydra\n"
        "from segpets.cli import exit_on_user_error, run\n"
        "@hydra.main(version_base='1.3', config_path=None, config_name=None)\n"
        "@exit_on_user_error\n"
        "def main(cfg):\n"
        "    raise RuntimeError('a bug in the task')\n"
        "run(main)\n"
    )
    result = subprocess.run(
        [sys.executable, str(app), "hydra.run.dir=out"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and 'app.py", line 6, in main' in result.stderr
    assert result.stderr.rstrip().endswith("RuntimeError: a bug in the task")


def test_report_on_a_missing_folder_says_so_and_exits_2(tmp_path, capsys):
    from segpets.report import main

    (tmp_path / "a_file").write_text("")
    for folder, what in (("nowhere", ": no such folder."), ("a_file", " is a file, not a folder.")):
        with pytest.raises(SystemExit) as exit_:
            main([str(tmp_path / folder)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"segpets: error: {tmp_path / folder}{what}") and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:  # a folder without runs
        main([str(tmp_path / "empty")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"segpets: error: no runs under {tmp_path / 'empty'}")


def test_data_root_a_file_is_named_as_a_file(tmp_path):
    from segpets.data.oxford_pet import check_layout
    from segpets.errors import DataError

    (tmp_path / "pets.zip").write_bytes(b"")
    with pytest.raises(DataError, match=r"pets.zip is a file, not a folder"):
        check_layout(tmp_path / "pets.zip")
    with pytest.raises(DataError, match="the folder does not exist"):
        check_layout(tmp_path / "nowhere")
