"""Print docs/models.md's model table: parameters and GFLOPs of every model config at 256x256.

    python scripts/model_table.py [--size 256]   # with segpets installed (pip install -e .)

FLOPs are counted by segpets.cost.count_flops, as the bench counts them (torch's
FlopCounterMode: a multiply-add counts as 2 FLOPs; convolutions and matrix products only),
for one image in eval mode. The models are built on the meta device, so nothing is
computed and no weights are read.
smp rows appear only when segmentation-models-pytorch is installed.
"""

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from segpets.cost import count_flops

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CONFIGS = REPO_ROOT / "configs" / "model"


@dataclass(frozen=True)
class Row:
    name: str
    options: str  # the command-line choice, e.g. "model=deeplabv3 model.backbone=resnet101"
    config: str
    overrides: tuple[tuple[str, object], ...] = ()
    needs: str | None = None  # an optional package the model imports


ROWS = (
    Row("UNet", "model=unet", "unet"),
    Row("Attention U-Net", "model=attention_unet", "attention_unet"),
    Row("ResNet34-UNet", "model=resnet34_unet", "resnet34_unet"),
    Row(
        "ResNet34-UNet, smp's decoder",
        "model=resnet34_unet model.upsample=nearest",
        "resnet34_unet",
        (("upsample", "nearest"),),
    ),
    Row("DeepLabV3-ResNet50", "model=deeplabv3", "deeplabv3"),
    Row(
        "DeepLabV3-ResNet101",
        "model=deeplabv3 model.backbone=resnet101",
        "deeplabv3",
        (("backbone", "resnet101"),),
    ),
    Row(
        "smp Unet-ResNet34",
        "model=smp",
        "smp",
        needs="segmentation_models_pytorch",
    ),
)


def measure(model: nn.Module, size: int, device: str | torch.device = "meta") -> tuple[int, int]:
    """(parameters, FLOPs) of `model` on one 3 x size x size image, in eval mode."""
    parameters = sum(p.numel() for p in model.parameters())
    model = model.eval()
    with torch.no_grad():
        flops = count_flops(lambda: model(torch.zeros(1, 3, size, size, device=device)))
    return parameters, flops


def build(row: Row) -> nn.Module:
    cfg = OmegaConf.load(MODEL_CONFIGS / f"{row.config}.yaml")
    for key, value in row.overrides:
        cfg[key] = value
    with torch.device("meta"):
        return instantiate(cfg)


def table(size: int = 256) -> str:
    lines = [
        f"| Model | Options | Parameters | GFLOPs at {size}x{size} |",
        "|---|---|---:|---:|",
    ]
    for row in ROWS:
        if row.needs and importlib.util.find_spec(row.needs) is None:
            print(f"skipped {row.name}: {row.needs} is not installed", file=sys.stderr)
            continue
        parameters, flops = measure(build(row), size)
        lines.append(
            f"| {row.name} | `{row.options}` | {parameters / 1e6:.1f}M | {flops / 1e9:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side (default 256)")
    print(table(parser.parse_args().size))


if __name__ == "__main__":
    main()
