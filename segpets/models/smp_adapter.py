"""Any segmentation_models_pytorch architecture and encoder as a segpets model.

smp is an optional extra: `pip install -e ".[smp]"`. It is imported when a model is
built, so segpets works without it until `model=smp` is chosen.
"""

from types import ModuleType
from typing import Any

import torch
from torch import nn

from segpets.errors import ConfigError
from segpets.models.base import SegmentationModel
from segpets.models.pretrained import (
    IMAGENET,
    Normalization,
    check_freeze_epochs,
    is_none,
    load_encoder_state,
    read_state_dict,
)

ARCHITECTURES = (
    "Unet",
    "UnetPlusPlus",
    "MAnet",
    "Linknet",
    "FPN",
    "PSPNet",
    "DeepLabV3",
    "DeepLabV3Plus",
    "PAN",
    "UPerNet",
    "Segformer",
    "DPT",
)
"""smp's model classes, as `model.arch` names them (the installed smp may have fewer)."""


def import_smp() -> ModuleType:
    """segmentation_models_pytorch, or a ConfigError saying how to install it."""
    try:
        import segmentation_models_pytorch
    except ImportError as error:
        raise ConfigError(
            "model=smp needs segmentation-models-pytorch, an optional extra of segpets: "
            f'pip install -e ".[smp]" ({error})'
        ) from None
    return segmentation_models_pytorch


class SMPModel(SegmentationModel):
    """`smp.<arch>(encoder, classes=classes)`, padded like every segpets model.

    smp rejects sides that do not divide by its encoder's output stride; segpets pads
    and crops instead. `pretrained`: `none`, `imagenet` (smp's own weights for the
    encoder, fetched by smp from the Hugging Face hub into its cache), or the path of
    a state dict for `model.net.encoder` (for ResNet encoders, a torchvision-style
    state dict). Further `+model.<option>=...` go to the architecture, e.g.
    `+model.decoder_attention_type=scse` for Unet.
    """

    input_normalization: Normalization | None = None

    def __init__(
        self,
        arch: str = "Unet",
        encoder: str = "resnet34",
        in_channels: int = 3,
        classes: int = 1,
        pretrained: str | None = "none",
        freeze_encoder_epochs: int = 0,
        **arch_options: Any,
    ) -> None:
        super().__init__()
        smp = import_smp()
        archs = {name.lower(): getattr(smp, name) for name in ARCHITECTURES if hasattr(smp, name)}
        if arch.lower() not in archs:
            raise ConfigError(
                f"model.arch must be one of {[a.__name__ for a in archs.values()]}, got {arch!r}"
            )
        encoders = smp.encoders.get_encoder_names()
        if encoder not in encoders and not encoder.startswith("tu-"):
            raise ConfigError(
                f"model.encoder={encoder!r} is not an smp encoder; e.g. resnet34, resnet50, "
                f"efficientnet-b0, mit_b0, or tu-<timm name> ({len(encoders)} in all: "
                "segmentation_models_pytorch.encoders.get_encoder_names())"
            )
        self.freeze_encoder_epochs = check_freeze_epochs(freeze_encoder_epochs)
        imagenet = str(pretrained) == IMAGENET
        try:
            self.net = archs[arch.lower()](
                encoder_name=encoder,
                encoder_weights=IMAGENET if imagenet else None,
                in_channels=in_channels,
                classes=classes,
                **arch_options,
            )
        except OSError as error:  # Hugging Face hub: offline and not cached
            raise ConfigError(
                f"model.pretrained=imagenet: smp could not fetch the ImageNet weights of encoder "
                f"{encoder} and they are not in its cache ($HF_HOME): {str(error).splitlines()[0]}. "
                "Run once with network, or pass model.pretrained=PATH to a state dict"
            ) from None
        self.output_stride = int(getattr(self.net.encoder, "output_stride", 32))
        if imagenet:
            params = smp.encoders.get_preprocessing_params(encoder, IMAGENET)
            self.input_normalization = (tuple(params["mean"]), tuple(params["std"]))
        elif not is_none(pretrained):
            load_encoder_state(
                self.net.encoder,
                read_state_dict(pretrained),
                str(pretrained),
                f"a state dict of smp's {encoder} encoder",
            )

    @property
    def encoder(self) -> nn.Module:
        """smp's encoder, for `model.freeze_encoder_epochs`."""
        return self.net.encoder

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
