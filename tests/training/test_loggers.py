"""logger=wandb and logger=mlflow, offline; what every logger gets; combining loggers."""

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from segpets.errors import ConfigError
from segpets.loggers import HPARAMS_KEY, log_results, mlflow_logger, wandb_logger
from segpets.runs import hparam_metrics
from segpets.train import train
from tests.helpers import REPO_ROOT, TINY_UNET, compose_train, tiny_run_overrides

LOGGERS = ("csv", "many", "mlflow", "tensorboard", "wandb")


def extra(package: str):
    """The optional extra `package`: CI installs it (the dev extra); elsewhere a skip says how."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(package)
    return pytest.importorskip(package, reason=f'optional extra: pip install -e ".[{package}]"')


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """wandb kept offline and out of the home folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def tiny_train(synthetic_root: Path, tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=1", *overrides],
    )
    return train(cfg)


def test_loggers_combine_as_a_list_of_options(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_train(tmp_path, ["logger=[many,wandb,mlflow]"])
    assert list(cfg.logger) == ["tensorboard", "csv", "wandb", "mlflow"]
    assert cfg.logger.wandb.offline is True
    assert cfg.logger.wandb.save_dir == str(tmp_path / "run")
    assert cfg.logger.mlflow.tracking_uri is None
    assert cfg.logger.mlflow.save_dir == str(tmp_path / "run" / "mlflow")
    cfg = compose_train(tmp_path, ["logger=[tensorboard,mlflow]"])
    assert list(cfg.logger) == ["tensorboard", "mlflow"]


def test_an_unknown_logger_is_refused_listing_the_options(tmp_path):
    # The command prints this message with exit 2, as for any option Hydra cannot find
    # (tests/reliability/test_reliability.py runs one from the command line).
    with pytest.raises(MissingConfigException) as error:
        compose_train(tmp_path, ["logger=comet"])
    assert "Could not find 'logger/comet'" in str(error.value)
    listed = str(error.value).split("Available options in 'logger':")[1]
    for option in LOGGERS:
        assert f"\t{option}\n" in listed


@pytest.mark.parametrize(
    ("factory", "package"), [(wandb_logger, "wandb"), (mlflow_logger, "mlflow")]
)
def test_a_missing_package_names_the_pip_command(factory, package, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # `import <package>` raises ImportError
    with pytest.raises(ConfigError, match=rf'pip install -e "\.\[{package}\]"'):
        factory()


def test_a_run_without_wandb_installed_exits_2(synthetic_root, tmp_path):
    """The whole command, with a `wandb` package that cannot be imported."""
    blocker = tmp_path / "blocker" / "wandb"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named wandb')\n")
    overrides = [*tiny_run_overrides(synthetic_root), *TINY_UNET, "logger=wandb"]
    result = subprocess.run(
        [sys.executable, "-m", "segpets.train", *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocker"), str(REPO_ROOT)]),
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert "logger=wandb needs the wandb package" in result.stderr
    assert 'pip install -e ".[wandb]"' in result.stderr
    assert "Traceback" not in result.stderr


class Recorder(Logger):
    """A logger that keeps what it is given."""

    name, version = "recorder", "0"

    def __init__(self) -> None:
        super().__init__()
        self.hparams: list[dict] = []
        self.metrics: list[tuple[dict, int | None]] = []

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self.hparams.append(dict(params))

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((dict(metrics), step))


def test_every_logger_gets_the_hparams_and_final_metrics(tmp_path):
    recorded = {
        "val": {"val/dice": 0.5},
        "test": {"test/dice": 0.25, "test/dice_dataset": 0.3, "test/iou": 0.125},
    }
    hparams = {"model": "unet", "lr": 0.001}
    metrics = hparam_metrics(recorded)
    recorder = Recorder()
    csv = CSVLogger(tmp_path, name="csv", version="")
    tensorboard = TensorBoardLogger(tmp_path, name="tb", version="", default_hp_metric=False)
    log_results([recorder, csv, tensorboard], hparams, metrics, step=7)
    assert recorder.hparams == [{HPARAMS_KEY: hparams}]
    assert recorder.metrics == [(metrics, 7)]
    assert set(metrics) == {"hp/val_dice", "hp/test_dice", "hp/test_dice_dataset", "hp/test_iou"}
    assert "hp/test_dice" in (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]


def wandb_record(run: Path, expected: list[bytes], seconds: float = 30) -> bytes:
    """The bytes of the offline run's transaction log once they hold `expected` (wandb's
    service writes it asynchronously), or as they are after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        data = b"".join(path.read_bytes() for path in run.glob("run-*.wandb")).replace(b" ", b"")
        if all(item in data for item in expected) or time.monotonic() > deadline:
            return data
        time.sleep(0.5)


def test_wandb_writes_an_offline_run_with_the_hparams(synthetic_root, tmp_path, offline_wandb):
    wandb = extra("wandb")
    metrics = tiny_train(synthetic_root, tmp_path, "logger=[tensorboard,wandb]")
    assert wandb.run is None  # finished: a next run in this process gets its own
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and len(list(runs[0].glob("run-*.wandb"))) == 1
    expected = [b'"cpu_isa":']  # the `hp` config entry: hparams_of
    for name, value in hparam_metrics(metrics).items():
        expected += [name.encode(), json.dumps(value).encode()]
    data = wandb_record(runs[0], expected)
    assert [item for item in expected if item not in data] == []


def test_mlflow_writes_a_run_read_back_with_its_client(synthetic_root, tmp_path, monkeypatch):
    """Through segpets.train, as the command runs: the group choices are the HPARAMS'."""
    extra("mlflow")
    from mlflow.tracking import MlflowClient

    import segpets

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    metrics = segpets.train(
        overrides=[
            *tiny_run_overrides(synthetic_root),
            *TINY_UNET,
            "trainer.max_epochs=1",
            "logger=mlflow",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={tmp_path / 'data'}",
        ]
    )
    run_dir = Path(metrics["output_dir"])
    database = run_dir / "mlflow" / "mlflow.db"
    assert database.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{database}")
    experiment = client.get_experiment_by_name("segpets")
    (run,) = client.search_runs([experiment.experiment_id])
    params, logged = run.data.params, run.data.metrics
    assert params[f"{HPARAMS_KEY}/model"] == "unet" and params[f"{HPARAMS_KEY}/data"] == "synthetic"
    assert params[f"{HPARAMS_KEY}/image_size"] == params[f"{HPARAMS_KEY}/train_size"] == "64"
    # Lightning cuts MLflow param values to 250 characters.
    assert params[f"{HPARAMS_KEY}/overrides"].startswith("data=synthetic data.root=")
    assert params["seed"] == "42" and params["model/_target_"] == "segpets.models.UNet"
    for name, value in hparam_metrics(metrics).items():
        assert logged[name] == value
    assert "val/dice" in logged and "train/loss_epoch" in logged  # the curves, as for TensorBoard
    assert run.info.status == "FINISHED"
