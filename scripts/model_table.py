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

import torch
from hydra.utils import instantiate
from torch import nn

from segpets.composing import compose_app_config
from segpets.cost import count_flops


@dataclass(frozen=True)
class Row:
    name: str
    options: str  # the command-line choice, e.g. "model=deeplabv3 model.backbone=resnet101"
    needs: str | None = None  # an optional package the model imports

    @property
    def config(self) -> str:
        """The model config file the options choose: "deeplabv3"."""
        return self.options.split()[0].removeprefix("model=")


ROWS = (
    Row("UNet", "model=unet"),
    Row("Attention U-Net", "model=attention_unet"),
    Row("ResNet18-UNet", "model=resnet18_unet"),
    Row("ResNet34-UNet", "model=resnet34_unet"),
    Row("ResNet34-UNet, smp's decoder", "model=resnet34_unet model.upsample=nearest"),
    Row("ResNet50-UNet", "model=resnet50_unet"),
    Row("DeepLabV3-ResNet50", "model=deeplabv3"),
    Row("DeepLabV3-ResNet101", "model=deeplabv3 model.backbone=resnet101"),
    Row("smp Unet-ResNet34", "model=smp", needs="segmentation_models_pytorch"),
)


def measure(model: nn.Module, size: int, device: str | torch.device = "meta") -> tuple[int, int]:
    """(parameters, FLOPs) of `model` on one 3 x size x size image, in eval mode."""
    parameters = sum(p.numel() for p in model.parameters())
    model = model.eval()
    with torch.no_grad():
        flops = count_flops(lambda: model(torch.zeros(1, 3, size, size, device=device)))
    return parameters, flops


def build(row: Row) -> nn.Module:
    """The model `row.options` choose, composed as `python -m segpets.train` composes it."""
    cfg = compose_app_config("train", row.options.split())
    with torch.device("meta"):
        return instantiate(cfg.model)


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
