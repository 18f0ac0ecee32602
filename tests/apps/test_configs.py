"""Every option of every config group composes, and instantiates what it names."""

import inspect
import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segpets.builders import build_datamodule, build_module, build_trainer
from tests.helpers import CONFIG_DIR, compose_train, run_segpets, tiny_run_overrides


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


GROUPS = [
    "data",
    "augment",
    "model",
    "loss",
    "postprocess",
    "optimizer",
    "scheduler",
    "trainer",
    "callbacks",
    "logger",
    "experiment",
    "debug",
]


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_instantiates(group, option, tmp_path, request):
    overrides = [f"{group}={option}"]
    if (group, option) == ("model", "smp"):
        pytest.importorskip(
            "segmentation_models_pytorch", reason="not installed: the dev and smp extras install it"
        )
    if group == "logger" and option in {"wandb", "mlflow"} and os.environ.get("CI") != "true":
        pytest.importorskip(option, reason=f'optional extra: pip install -e ".[{option}]"')
    if (group, option) == ("model", "ensemble"):
        best = request.getfixturevalue("tiny_run") / "checkpoints" / "best.ckpt"
        overrides.append(f"model.checkpoints=[{best}]")
    cfg = compose_train(tmp_path, overrides)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    if group in {"callbacks", "logger"}:
        objects = [instantiate(node) for node in cfg[group].values() if node is not None]
        assert objects, f"{group}={option} instantiates nothing"
    elif group == "trainer":
        if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
            pytest.skip(
                "no GPU on this machine: the gpu/ddp trainer configs compose but cannot start"
            )
        assert isinstance(build_trainer(cfg, logger=False), L.Trainer)  # settles precision auto
    elif group in {"model", "loss", "postprocess", "optimizer", "scheduler", "experiment"}:
        module = build_module(cfg)
        assert isinstance(module, L.LightningModule)
        assert (module.postprocess is None) == (cfg.postprocess is None)
        optimizer = module.optimizer_factory(params=module.parameters())
        module.scheduler_factory(optimizer, total_steps=10)
    if group in {"data", "augment", "experiment"}:
        datamodule = build_datamodule(cfg)
        assert isinstance(datamodule, L.LightningDataModule)


def test_experiments_say_only_what_differs():
    for path in (CONFIG_DIR / "experiment").glob("*.yaml"):
        assert path.read_text().startswith("# @package _global_"), path


def test_command_line_overrides_reach_the_objects(tmp_path: Path):
    cfg = compose_train(
        tmp_path,
        [
            "model=resnet34_unet",
            "model.upsample=bilinear",
            "loss=bce_tversky",
            "loss.terms.tversky.alpha=0.7",
            "optimizer.lr=0.01",
            "trainer.precision=16",
        ],
    )
    module = build_module(cfg)
    assert type(module.model).__name__ == "ResNetUNet"
    assert module.loss.terms["tversky"].alpha == 0.7
    assert module.optimizer_factory(params=module.parameters()).param_groups[0]["lr"] == 0.01
    assert cfg.trainer.precision == 16


@pytest.mark.parametrize("launcher", ["joblib", "slurm"])
def test_sweep_launchers_compose(launcher):
    from hydra import compose, initialize_config_dir

    plugin = "joblib" if launcher == "joblib" else "submitit"
    pytest.importorskip(
        f"hydra_plugins.hydra_{plugin}_launcher", reason='optional extra: pip install -e ".[sweep]"'
    )
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hydra/launcher={launcher}", "trainer=ddp"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("Launcher")
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == cfg.hydra.launcher.tasks_per_node
        assert cfg.hydra.launcher.partition and cfg.hydra.launcher.timeout_min > 0


@pytest.mark.parametrize("grid", ["seed000_grid", "seed001_grid"])
def test_the_lab_grids_run_three_seeds_per_configuration(grid):
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={grid}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    sizes = {o.key_or_group: len(list(o.sweep_iterator())) for o in parsed}
    assert sizes == {"model": 2, next(k for k in sizes if k not in ("model", "seed")): 2, "seed": 3}
    assert [str(v) for v in next(o for o in parsed if o.key_or_group == "seed").sweep_iterator()] == [
        "1", "2", "3",
    ]  # fmt: skip


# The Trainer arguments people set from the command line, as Lightning's docs write them.
LIGHTNING_OPTIONS = (
    "fast_dev_run",
    "max_time",
    "max_steps",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "overfit_batches",
    "accumulate_grad_batches",
    "val_check_interval",
    "gradient_clip_val",
    "deterministic",
    "benchmark",
    "profiler",
)


def test_lightnings_trainer_options_are_keys_with_lightnings_defaults():
    trainer = OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")
    defaults = inspect.signature(L.Trainer.__init__).parameters
    # deterministic false, as before these keys: torch's own default, which Lightning's None keeps
    kept = {"deterministic": False}
    for name in LIGHTNING_OPTIONS:
        assert name in trainer, name
        assert trainer[name] == kept.get(name, defaults[name].default), name
    assert trainer.precision == "auto"


def test_lightnings_options_override_without_a_plus(tmp_path: Path):
    cfg = compose_train(
        tmp_path,
        ["trainer.fast_dev_run=true", "trainer.limit_val_batches=0.5", "trainer.profiler=simple"],
    )
    assert cfg.trainer.fast_dev_run is True
    assert cfg.trainer.limit_val_batches == 0.5 and cfg.trainer.profiler == "simple"
    for path in (CONFIG_DIR / "debug").glob("*.yaml"):  # they set the same keys, plainly
        assert "+" not in "".join(line.split("#")[0] for line in path.read_text().splitlines())


@pytest.mark.slow
def test_fast_dev_run_from_the_command_line_completes(synthetic_root, tmp_path):
    result = run_segpets(
        "train",
        "trainer.fast_dev_run=true",
        *tiny_run_overrides(synthetic_root),
        "model=unet",
        "model.widths=[4,8,16]",
        "trainer.precision=32-true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_checkpoint"] is None  # a fast_dev_run saves no best.ckpt
    assert metrics["test"]  # and it went on to score the test split
    output = result.stdout + result.stderr
    assert "litlogger" not in output and "💡" not in output  # no Lightning advertisement
