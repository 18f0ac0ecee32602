"""Every option of every config group composes, and instantiates what it names."""

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segpets.train import build_datamodule, build_module
from tests.helpers import CONFIG_DIR, compose_train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


GROUPS = [
    "data",
    "augment",
    "model",
    "loss",
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
            "segmentation_models_pytorch", reason='optional extra: pip install -e ".[smp]"'
        )
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
        assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)
    elif group in {"model", "loss", "optimizer", "scheduler", "experiment"}:
        module = build_module(cfg)
        assert isinstance(module, L.LightningModule)
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
    assert type(module.model).__name__ == "ResNet34UNet"
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
