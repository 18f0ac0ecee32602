"""What describes a run: the settings people compare it by, for reports and TensorBoard."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


def find_runs(root: Path) -> list[Path]:
    """Every run folder under root (root itself if it is one): a folder with `.hydra/` or
    `metrics.json`. A job of `optimized_metric=oof/dice` (with oof.json) is not one; its
    fold_k folders are."""
    markers = [*root.glob("**/.hydra/config.yaml"), *root.glob("**/metrics.json")]
    runs = {m.parent.parent if m.parent.name == ".hydra" else m.parent for m in markers}
    return sorted(run for run in runs if not (run / "oof.json").is_file())


def describe(config: Mapping[str, Any] | DictConfig, choices: Mapping[str, str]) -> dict[str, Any]:
    """What distinguishes a run: its group choices and the settings people compare."""
    config = OmegaConf.create(dict(config)) if not isinstance(config, DictConfig) else config

    def pick(key: str) -> Any:
        value = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
        return value if isinstance(value, int | float | str | bool) or value is None else str(value)

    return {
        "model": choices.get("model", pick("model._target_")),
        "loss": choices.get("loss", pick("loss._target_")),
        "upsample": pick("model.upsample"),
        "augment": choices.get("augment"),
        "data": choices.get("data"),
        "precision": str(pick("trainer.precision")),
        "epochs": pick("trainer.max_epochs"),
        "lr": pick("optimizer.lr"),
        "batch_size": pick("data.batch_size"),
        "image_size": pick("data.image_size"),
        "train_size": pick("data.train_size"),
    }


def hparams_of(metrics: Mapping[str, Any], cfg: DictConfig) -> dict[str, Any]:
    """TensorBoard HPARAMS for a run: its description and its command-line overrides."""
    hparams = {k: ("" if v is None else v) for k, v in describe(cfg, metrics["choices"]).items()}
    hparams["overrides"] = " ".join(metrics["overrides"])
    hparams["cpu_isa"] = metrics.get("machine", {}).get("cpu_isa", "")
    return hparams


def hparam_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The final numbers shown beside the hyperparameters in TensorBoard's HPARAMS tab."""
    val, test = metrics.get("val", {}), metrics.get("test", {})
    pairs = {
        "hp/val_dice": val.get("val/dice"),
        "hp/test_dice": test.get("test/dice"),
        "hp/test_dice_dataset": test.get("test/dice_dataset"),
        "hp/test_iou": test.get("test/iou"),
    }
    return {name: float(value) for name, value in pairs.items() if value is not None}


def hydra_choices() -> dict[str, str]:
    """The option picked in each config group (model: unet, ...), when run through Hydra."""
    if not HydraConfig.initialized():
        return {}
    return {
        k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")
    }


def hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
