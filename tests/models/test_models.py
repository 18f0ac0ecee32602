import importlib.util
import re
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
import torchvision
from omegaconf import OmegaConf
from torch.export import Dim

from segpets.errors import ConfigError
from segpets.models import ResNetUNet, SegmentationModel, UNet
from segpets.models.blocks import NearestUpsample
from tests.helpers import compose_train

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

TINY_UNET = {"widths": (8, 16, 32)}
SMALL_RESNET = {"decoder_channels": (32, 16, 16, 8, 8)}


def build(name: str, upsample: str = "deconv", **kwargs) -> SegmentationModel:
    if name == "unet":
        return UNet(upsample=upsample, **TINY_UNET, **kwargs)
    return ResNetUNet(upsample=upsample, **SMALL_RESNET, **kwargs)


def resnet34_encoder_state_dict() -> dict[str, torch.Tensor]:
    state = torchvision.models.resnet34(weights=None).state_dict()
    return {key: value for key, value in state.items() if not key.startswith("fc.")}


@pytest.mark.parametrize("name", ["unet", "resnet34_unet"])
@pytest.mark.parametrize("upsample", ["deconv", "bilinear", "nearest"])
def test_logits_have_input_size(name: str, upsample: str) -> None:
    torch.manual_seed(0)
    model = build(name, upsample).eval()
    with torch.no_grad():
        model.head.bias.fill_(-3.0)  # logits well below 0: a sigmoid or clamp would show
    for height, width in [(64, 64), (50, 70)]:
        logits = model(torch.randn(2, 3, height, width))
        assert logits.shape == (2, 1, height, width)
        assert logits.max() < 0


def test_nearest_upsampling_repeats_pixels_and_keeps_the_channels() -> None:
    up = NearestUpsample(8, 4)
    x = torch.randn(2, 8, 3, 5)
    assert up.out_channels == 8 and not list(up.parameters())
    torch.testing.assert_close(up(x), x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    # The stage's convolutions take the upsampled input and the skip, unreduced.
    model = ResNetUNet(upsample="nearest")
    first_convs = [block.conv[0][0].in_channels for block in model.decoder]
    assert first_convs == [512 + 256, 256 + 128, 128 + 64, 64 + 64, 32]


@pytest.mark.skipif(
    importlib.util.find_spec("segmentation_models_pytorch") is None,
    reason="compares with segmentation-models-pytorch (the dev and smp extras install it)",
)
def test_resnet34_unet_with_nearest_upsampling_is_smps_unet() -> None:
    """upsample=nearest is smp.Unet("resnet34")'s network up to the head: with smp's
    weights copied in, in order, the decoder's output features are the same."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    theirs = smp.Unet("resnet34", encoder_weights=None, classes=1).eval()
    ours = ResNetUNet(upsample="nearest").eval()
    encoder = {k: v for k, v in theirs.encoder.state_dict().items() if not k.startswith("fc.")}
    ours.encoder.load_state_dict(encoder)
    ours_keys = list(ours.decoder.state_dict())
    theirs_values = list(theirs.decoder.state_dict().values())
    assert len(ours_keys) == len(theirs_values)
    ours.decoder.load_state_dict(dict(zip(ours_keys, theirs_values, strict=True)))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        *skips, features = ours.encoder(x)
        for block in ours.decoder:
            features = block(features, skips.pop() if skips else None)
        expected = theirs.decoder(theirs.encoder(x))
    torch.testing.assert_close(features, expected)


@pytest.mark.parametrize("name", ["unet", "resnet34_unet"])
def test_odd_sides_are_replicate_padded_then_cropped(name: str) -> None:
    model = build(name).eval()
    assert model.output_stride == (4 if name == "unet" else 32)
    x = torch.randn(1, 3, 50, 70)
    stride = model.output_stride
    padded = F.pad(x, (0, (-70) % stride, 0, (-50) % stride), mode="replicate")
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :50, :70])


def test_unet_output_stride_follows_depth() -> None:
    assert UNet(widths=(4, 8)).output_stride == 2
    assert UNet().output_stride == 16


def test_exports_with_dynamic_height_and_width() -> None:
    # Traced at a multiple of the stride, the graph must still pad and crop other sizes.
    model = build("unet").eval()
    dynamic = ({2: Dim.DYNAMIC, 3: Dim.DYNAMIC},)
    program = torch.export.export(model, (torch.randn(1, 3, 64, 64),), dynamic_shapes=dynamic)
    for x in [torch.randn(1, 3, 37, 91), torch.randn(1, 3, 64, 32)]:
        torch.testing.assert_close(program.module()(x), model(x))


@pytest.mark.parametrize("name", ["unet", "resnet34_unet"])
def test_other_input_channels_and_classes(name: str) -> None:
    model = build(name, in_channels=4, classes=2).eval()
    assert model(torch.randn(1, 4, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.parametrize("model_class", [UNet, ResNetUNet])
def test_unknown_upsample_is_a_config_error(model_class: type[SegmentationModel]) -> None:
    message = "model.upsample must be one of ['bilinear', 'deconv', 'nearest'], got 'bicubic'"
    with pytest.raises(ConfigError, match=re.escape(message)):
        model_class(upsample="bicubic")


def test_bad_widths_and_decoder_channels_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=re.escape("model.widths must list at least 2")):
        UNet(widths=(8,))
    with pytest.raises(ConfigError, match=re.escape("model.decoder_channels must list 5")):
        ResNetUNet(decoder_channels=(16, 8))


def test_resnet34_encoder_loads_torchvision_weights() -> None:
    model = ResNetUNet(**SMALL_RESNET)
    state = resnet34_encoder_state_dict()
    assert set(model.encoder.state_dict()) == set(state)
    model.encoder.load_state_dict(state)
    torch.testing.assert_close(model.encoder.layer4[2].conv2.weight, state["layer4.2.conv2.weight"])


@pytest.mark.parametrize(
    ("encoder", "skips", "blocks"),
    [
        ("resnet18", (64, 64, 128, 256, 512), [2, 2, 2, 2]),
        ("resnet34", (64, 64, 128, 256, 512), [3, 4, 6, 3]),
        ("resnet50", (64, 256, 512, 1024, 2048), [3, 4, 6, 3]),
    ],
)
def test_model_encoder_picks_the_torchvision_resnet(encoder, skips, blocks, tmp_path) -> None:
    """`model=<encoder>_unet` builds that ResNet under the same decoder: torchvision's
    weights (minus fc) load, each stage's features have smp's channel counts."""
    cfg = compose_train(
        tmp_path, [f"model={encoder}_unet", "model.decoder_channels=[32,16,16,8,8]"]
    )
    model = hydra.utils.instantiate(cfg.model).eval()
    assert cfg.model.encoder == encoder
    assert [len(model.encoder.get_submodule(f"layer{i}")) for i in range(1, 5)] == blocks
    state = getattr(torchvision.models, encoder)(weights=None).state_dict()
    model.encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.encoder(x)
        logits = model(x)
    assert tuple(f.shape[1] for f in features) == model.encoder.out_channels == skips
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4, 2]
    assert model.decoder[0].up.in_channels == skips[-1]
    assert logits.shape == (1, 1, 64, 64)


def test_unknown_encoder_names_the_choices() -> None:
    message = "model.encoder='resnet101' is not one of resnet18, resnet34, resnet50"
    with pytest.raises(ConfigError, match=re.escape(message)):
        ResNetUNet(encoder="resnet101")


def test_default_parameter_counts() -> None:
    resnet34 = torchvision.models.resnet34(weights=None)
    encoder = sum(p.numel() for p in resnet34.parameters()) - sum(
        p.numel() for p in resnet34.fc.parameters()
    )
    resnet = ResNetUNet()
    assert sum(p.numel() for p in resnet.encoder.parameters()) == encoder == 21_284_672
    assert 24.0e6 < sum(p.numel() for p in resnet.parameters()) < 24.7e6  # smp.Unet: 24.4M
    assert 30.5e6 < sum(p.numel() for p in UNet().parameters()) < 31.5e6  # the paper: 31M


@pytest.mark.parametrize("name", ["unet", "resnet34_unet"])
def test_overfits_one_batch(name: str) -> None:
    torch.manual_seed(0)
    model = build(name)
    images = torch.randn(2, 3, 64, 64)
    masks = (images[:, :1] > 0).float()  # learnable from the pixels themselves
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(images), masks)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("config", ["unet", "resnet34_unet"])
def test_model_configs_instantiate(config: str) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "model" / f"{config}.yaml")
    cfg.upsample = "bilinear"  # as `model.upsample=bilinear` on the command line
    model = hydra.utils.instantiate(cfg)
    assert isinstance(model, SegmentationModel)
    assert model.decoder[0].up.__class__.__name__ == "BilinearUpsample"


@pytest.mark.parametrize("channels_last", [False, True])
def test_deconv_upsample_is_the_transposed_convolution(channels_last: bool) -> None:
    """DeconvUpsample computes ConvTranspose2d(k=2, s=2) as a matrix product: same
    parameters (checkpoints keep their keys), same values and gradients, same layout."""
    from segpets.models.blocks import DeconvUpsample

    torch.manual_seed(0)
    up = DeconvUpsample(6, 3)
    assert set(up.state_dict()) == {"weight", "bias"} and up.weight.shape == (6, 3, 2, 2)
    x = torch.randn(2, 6, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = up(x)
    expected = F.conv_transpose2d(x, up.weight, up.bias, stride=2)
    assert y.shape == (2, 3, 10, 14)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(y, expected)
    grad = torch.randn_like(y)
    ours = torch.autograd.grad(y, (x, up.weight, up.bias), grad)
    reference = torch.autograd.grad(expected, (x, up.weight, up.bias), grad)
    for got, want in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, want)


def test_deconv_bench_script_times_every_decoder_shape() -> None:
    """scripts/deconv_bench.py (docs/performance.md's transposed-convolution figure) runs and
    prints a row per ResNet34-UNet decoder step and the total."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    process = subprocess.run(
        [
            sys.executable,
            str(repo / "scripts" / "deconv_bench.py"),
            "--size",
            "64",
            "--batch",
            "1",
            "--steps",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = process.stdout.splitlines()
    assert sum("ConvTranspose2d" in line and "DeconvUpsample" in line for line in lines) == 6
    assert re.search(
        r"all five: ConvTranspose2d [\d.]+ ms, DeconvUpsample [\d.]+ ms \([\d.]+x\)", lines[-1]
    )
