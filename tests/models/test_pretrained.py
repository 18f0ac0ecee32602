"""`model.pretrained` and `model.freeze_encoder_epochs`: weights in, encoder held still."""

import importlib.util
import re
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torchvision
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segpets.callbacks import CheckInputNormalization, FreezeEncoder, encoder_callbacks
from segpets.checkpointing import CONFIG_KEY, load_model
from segpets.constants import IMAGENET_MEAN, IMAGENET_STD
from segpets.errors import ConfigError
from segpets.models import DeepLabV3, ResNetUNet, UNet
from segpets.models.pretrained import hub_cache_path
from segpets.train import build_datamodule, build_module
from tests.helpers import compose_train, tiny_run_overrides

SMALL_DECODER = [32, 16, 16, 8, 8]
RESNET34_URL = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.url


def resnet34_state(seed: int = 0, with_fc: bool = True) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = torchvision.models.resnet34(weights=None).state_dict()
    return {k: v for k, v in state.items() if with_fc or not k.startswith("fc.")}


def resnet34_unet(tmp_path: Path, *overrides: str) -> ResNetUNet:
    """The model as `python -m segpets.train model=resnet34_unet ...` would build it."""
    cfg = compose_train(
        tmp_path, ["model=resnet34_unet", f"model.decoder_channels={SMALL_DECODER}", *overrides]
    )
    return instantiate(cfg.model)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, and a network that fails every download; returns the cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url: str, *args, **kwargs) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


# A state dict on disk


@pytest.mark.parametrize("with_fc", [True, False], ids=["with_fc", "without_fc"])
def test_pretrained_path_loads_the_given_weights(with_fc: bool, tmp_path: Path) -> None:
    state = resnet34_state(seed=1, with_fc=with_fc)
    torch.save(state, tmp_path / "resnet34.pth")
    model = resnet34_unet(tmp_path, f"model.pretrained={tmp_path / 'resnet34.pth'}")
    torch.testing.assert_close(model.encoder.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(
        model.encoder.layer4[2].bn2.running_var, state["layer4.2.bn2.running_var"]
    )
    assert model.input_normalization is None  # unknown statistics: nothing to check


def test_pretrained_path_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.pretrained=.*nowhere.pth: no such file"):
        ResNetUNet(pretrained=str(tmp_path / "nowhere.pth"))
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(ConfigError, match="not a readable PyTorch file"):
        ResNetUNet(pretrained=str(tmp_path / "notes.pth"))
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    message = (
        r"its keys do not fit the encoder \(missing layer1.2.bn1.bias, .* and \d+ more\)\. "
        r"Expected a torchvision-style resnet34 state dict \(with or without fc.\*\)"
    )
    with pytest.raises(ConfigError, match=message):
        ResNetUNet(pretrained=str(tmp_path / "r18.pth"))
    # The same file fits model=resnet18_unet.
    resnet18 = resnet34_unet(
        tmp_path, "model=resnet18_unet", f"model.pretrained={tmp_path / 'r18.pth'}"
    )
    torch.testing.assert_close(
        resnet18.encoder.layer4[1].conv2.weight,
        torch.load(tmp_path / "r18.pth")["layer4.1.conv2.weight"],
    )
    torch.save(resnet34_state(), tmp_path / "r34.pth")
    with pytest.raises(
        ConfigError, match=r"shape mismatch for conv1\.weight.*model\.in_channels=3"
    ):
        ResNetUNet(in_channels=4, pretrained=str(tmp_path / "r34.pth"))


def test_deeplab_backbone_takes_torchvision_resnet_weights() -> None:
    state = torchvision.models.resnet50(weights=None).state_dict()
    model = DeepLabV3("resnet50")
    assert set(model.encoder.state_dict()) == {k for k in state if not k.startswith("fc.")}


@pytest.mark.skipif(
    importlib.util.find_spec("segmentation_models_pytorch") is None,
    reason="segmentation-models-pytorch is not installed (the dev and smp extras install it)",
)
def test_smp_resnet_encoder_takes_a_torchvision_state_dict(tmp_path: Path) -> None:
    from segpets.models import SMPModel

    state = resnet34_state(seed=2)
    torch.save(state, tmp_path / "resnet34.pth")
    model = SMPModel(pretrained=str(tmp_path / "resnet34.pth"), decoder_channels=SMALL_DECODER)
    torch.testing.assert_close(model.encoder.conv1.weight, state["conv1.weight"])


# ImageNet from the torch hub cache


def test_imagenet_offline_and_uncached_names_url_and_path(offline_hub: Path, tmp_path) -> None:
    path = offline_hub / "resnet34-b627a593.pth"
    assert hub_cache_path(RESNET34_URL) == path
    with pytest.raises(InstantiationException) as wrapped:
        resnet34_unet(tmp_path, "model.pretrained=imagenet")
    error = wrapped.value.__cause__  # Hydra wraps it; segpets.cli unwraps it for the user
    assert isinstance(error, ConfigError)
    message = str(error)
    assert message.startswith("model.pretrained=imagenet: the ResNet34_Weights.IMAGENET1K_V1")
    assert f"download {RESNET34_URL} and copy the file to {path}" in message
    assert "Name or service not known" in message


def test_imagenet_is_read_from_the_hub_cache_without_network(offline_hub: Path, tmp_path) -> None:
    state = resnet34_state(seed=3)  # stands in for the real file: same name, same keys
    offline_hub.mkdir(parents=True)
    torch.save(state, offline_hub / "resnet34-b627a593.pth")
    model = resnet34_unet(tmp_path, "model.pretrained=imagenet")
    torch.testing.assert_close(model.encoder.conv1.weight, state["conv1.weight"])
    assert model.input_normalization == (IMAGENET_MEAN, IMAGENET_STD)
    assert [type(c) for c in encoder_callbacks(model)] == [CheckInputNormalization]


def test_imagenet_weights_follow_the_encoder(offline_hub: Path, tmp_path) -> None:
    with pytest.raises(InstantiationException) as wrapped:
        resnet34_unet(tmp_path, "model=resnet50_unet", "model.pretrained=imagenet")
    message = str(wrapped.value.__cause__)
    assert message.startswith("model.pretrained=imagenet: the ResNet50_Weights.IMAGENET1K_V2")
    assert str(offline_hub / "resnet50-11ad3fa6.pth") in message


def test_a_damaged_cached_file_says_to_delete_it(offline_hub: Path) -> None:
    offline_hub.mkdir(parents=True)
    (offline_hub / "resnet34-b627a593.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(
        ConfigError, match=r"the cached file .*resnet34-b627a593.pth is not a readable"
    ):
        ResNetUNet(pretrained="imagenet")


def test_checkpoints_load_without_the_pretrained_weights(offline_hub: Path) -> None:
    # Eval on another machine: the checkpoint holds the weights; imagenet must not be fetched.
    trained = ResNetUNet(decoder_channels=SMALL_DECODER)
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()},
        CONFIG_KEY: {
            "model": {
                "_target_": "segpets.models.ResNetUNet",
                "decoder_channels": SMALL_DECODER,
                "pretrained": "imagenet",
            }
        },
    }
    model = load_model(checkpoint, OmegaConf.create(checkpoint[CONFIG_KEY]), "run.ckpt")
    torch.testing.assert_close(model.encoder.conv1.weight, trained.encoder.conv1.weight)


def test_checkpoints_of_the_resnet34_only_model_still_load() -> None:
    # Runs saved before model.encoder existed name segpets.models.ResNet34UNet, no encoder.
    trained = ResNetUNet(decoder_channels=SMALL_DECODER)
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()},
        CONFIG_KEY: {
            "model": {"_target_": "segpets.models.ResNet34UNet", "decoder_channels": SMALL_DECODER}
        },
    }
    model = load_model(checkpoint, OmegaConf.create(checkpoint[CONFIG_KEY]), "old.ckpt")
    assert [len(model.encoder.get_submodule(f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    torch.testing.assert_close(model.head.weight, trained.head.weight)


def test_data_normalisation_must_match_imagenet_weights() -> None:
    check = CheckInputNormalization(IMAGENET_MEAN, IMAGENET_STD)
    matching = SimpleNamespace(datamodule=SimpleNamespace(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    check.setup(matching, None, "fit")
    other = SimpleNamespace(datamodule=SimpleNamespace(mean=(0.5, 0.5, 0.5), std=IMAGENET_STD))
    message = "expect inputs normalised with data.mean=[0.485, 0.456, 0.406]"
    with pytest.raises(ConfigError, match=re.escape(message)):
        check.setup(other, None, "fit")


def test_config_defaults_are_the_imagenet_statistics(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, ["data=oxford_pet"])
    assert tuple(cfg.data.mean) == IMAGENET_MEAN and tuple(cfg.data.std) == IMAGENET_STD


# freeze_encoder_epochs


def test_encoder_callbacks_follow_the_model_options() -> None:
    assert encoder_callbacks(UNet(widths=(4, 8))) == []
    assert encoder_callbacks(ResNetUNet(decoder_channels=SMALL_DECODER)) == []
    (freeze,) = encoder_callbacks(
        ResNetUNet(decoder_channels=SMALL_DECODER, freeze_encoder_epochs=2)
    )
    assert isinstance(freeze, FreezeEncoder) and freeze.epochs == 2
    with pytest.raises(ConfigError, match="must be a whole number of epochs"):
        ResNetUNet(freeze_encoder_epochs=-1)


def test_freezing_refuses_several_processes() -> None:
    trainer = SimpleNamespace(world_size=2)
    with pytest.raises(
        ConfigError, match=re.escape("model.freeze_encoder_epochs=1 works on one device only")
    ):
        FreezeEncoder(1).setup(trainer, None, "fit")


class RecordWeights(L.Callback):
    """Copies of an encoder and a decoder weight, and whether the encoder trains, per epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, object]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        self.epochs.append(
            {
                "encoder": model.encoder.layer1[0].conv1.weight.detach().clone(),
                "decoder": model.decoder[0].conv[0][0].weight.detach().clone(),
                "trains": model.encoder.layer1[0].conv1.weight.requires_grad,
            }
        )


def test_encoder_is_frozen_for_the_first_epochs(synthetic_root: Path, tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path,
        [
            *tiny_run_overrides(synthetic_root),
            "model=resnet34_unet",
            f"model.decoder_channels={SMALL_DECODER}",
            "model.freeze_encoder_epochs=1",
            "optimizer.lr=0.01",
            "data.image_size=32",
            "data.batch_size=2",
        ],
    )
    module = build_module(cfg)
    encoder_before = module.model.encoder.layer1[0].conv1.weight.detach().clone()
    decoder_before = module.model.decoder[0].conv[0][0].weight.detach().clone()
    record = RecordWeights()
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[*encoder_callbacks(module.model), record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=build_datamodule(cfg))
    frozen, thawed = record.epochs
    assert not frozen["trains"] and thawed["trains"]
    assert torch.equal(frozen["encoder"], encoder_before)
    assert not torch.equal(frozen["decoder"], decoder_before)
    assert not torch.equal(thawed["encoder"], frozen["encoder"])
    assert not torch.equal(thawed["decoder"], frozen["decoder"])
