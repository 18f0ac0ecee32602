"""Attention U-Net, DeepLabV3, the smp adapter and checkpoint ensembles."""

import importlib.util
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.export import Dim

from segpets.checkpointing import model_from_checkpoint
from segpets.errors import ConfigError, SegpetsError
from segpets.eval import evaluate
from segpets.models import AttentionUNet, DeepLabV3, EnsembleModel, SegmentationModel, UNet
from segpets.models.blocks import AttentionGate
from segpets.train import train
from tests.helpers import (
    CONFIG_DIR,
    EVERY_PIXEL_PET,
    REPO_ROOT,
    check_test_scores,
    compose_train,
    tiny_run_overrides,
)

HAS_SMP = importlib.util.find_spec("segmentation_models_pytorch") is not None
needs_smp = pytest.mark.skipif(
    not HAS_SMP,
    reason="segmentation-models-pytorch is not installed (the dev and smp extras install it)",
)

TINY_WIDTHS = (4, 8, 16)
SIZES = [(64, 64), (100, 76)]  # a multiple of every stride, and sides that divide by none


def build(name: str) -> SegmentationModel:
    """Each model at its smallest useful size."""
    if name == "attention_unet":
        return AttentionUNet(widths=TINY_WIDTHS)
    if name == "deeplabv3":
        return DeepLabV3("resnet50")
    from segpets.models import SMPModel

    return SMPModel("Unet", "resnet34", decoder_channels=(32, 16, 16, 8, 8))


MODELS = [
    "attention_unet",
    "deeplabv3",
    pytest.param("smp", marks=needs_smp),
]


@pytest.mark.parametrize("name", MODELS)
def test_other_models_return_logits_at_the_input_size(name: str) -> None:
    torch.manual_seed(0)
    model = build(name).eval()
    head = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        head.bias.fill_(-3.0)  # logits well below 0: a sigmoid or clamp would show
        for height, width in SIZES:
            logits = model(torch.randn(1, 3, height, width))
            assert logits.shape == (1, 1, height, width)
            assert logits.max() < 0


# Attention U-Net


def test_attention_unet_gates_every_skip_and_shares_unets_weights() -> None:
    model = AttentionUNet(widths=TINY_WIDTHS, upsample="bilinear")
    assert isinstance(model, UNet) and model.output_stride == 4
    assert all(isinstance(block.gate, AttentionGate) for block in model.decoder)
    plain = UNet(widths=TINY_WIDTHS, upsample="bilinear")
    assert all(block.gate is None for block in plain.decoder)
    gate_keys = {key for key in model.state_dict() if ".gate." in key}
    assert set(model.state_dict()) - gate_keys == set(plain.state_dict())


def test_an_open_gate_makes_attention_unet_a_unet() -> None:
    torch.manual_seed(0)
    plain = UNet(widths=TINY_WIDTHS).eval()
    model = AttentionUNet(widths=TINY_WIDTHS).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        for block in model.decoder:
            block.gate.psi.weight.zero_()
            block.gate.psi.bias.fill_(30.0)  # psi = sigmoid(30) = 1: every skip passes whole
        torch.testing.assert_close(model(x), plain(x))
        for block in model.decoder:
            block.gate.psi.bias.fill_(-30.0)  # psi = 0: no skip reaches the decoder
        assert not torch.allclose(model(x), plain(x), atol=1e-3)


def test_attention_gate_computes_the_paper_formula() -> None:
    torch.manual_seed(0)
    gate = AttentionGate(gate_channels=8, skip_channels=4)
    g, x = torch.randn(2, 8, 5, 6), torch.randn(2, 4, 10, 12)
    psi = gate.attention(g, x)
    assert psi.shape == (2, 1, 10, 12)
    assert psi.min() > 0 and psi.max() < 1
    coarse = torch.sigmoid(gate.psi(torch.relu(gate.gate_proj(g) + gate.skip_proj(x))))
    torch.testing.assert_close(psi[..., ::2, ::2].mean(), coarse.mean(), atol=0.05, rtol=0)
    torch.testing.assert_close(gate(g, x), x * psi)


def test_attention_unet_exports_with_dynamic_height_and_width() -> None:
    model = AttentionUNet(widths=TINY_WIDTHS).eval()
    dynamic = ({2: Dim.DYNAMIC, 3: Dim.DYNAMIC},)
    program = torch.export.export(model, (torch.randn(1, 3, 64, 64),), dynamic_shapes=dynamic)
    x = torch.randn(1, 3, 37, 91)
    torch.testing.assert_close(program.module()(x), model(x))


# DeepLabV3


def test_deeplab_backbone_is_a_lookup_with_a_clear_error() -> None:
    message = "model.backbone must be one of ['resnet101', 'resnet50'], got 'resnet18'"
    with pytest.raises(ConfigError, match=re.escape(message)):
        DeepLabV3("resnet18")


def test_deeplab_wraps_torchvision_without_aux_head() -> None:
    model = DeepLabV3("resnet50", in_channels=4, classes=2)
    assert model.output_stride == 8
    assert model.net.aux_classifier is None
    assert model.encoder is model.net.backbone
    assert model.net.classifier[-1].out_channels == 2
    assert not any(key.startswith("encoder.") for key in model.state_dict())  # no duplicates
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 4, 40, 36)).shape == (1, 2, 40, 36)


# smp adapter


def test_missing_smp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from segpets.models import SMPModel

    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # import fails
    with pytest.raises(ConfigError, match=re.escape('pip install -e ".[smp]"')):
        SMPModel()


@needs_smp
def test_smp_bad_arch_and_encoder_are_config_errors() -> None:
    from segpets.models import SMPModel

    with pytest.raises(ConfigError, match=r"model.arch must be one of \[.*'FPN'.*got 'Unet3'"):
        SMPModel(arch="Unet3")
    with pytest.raises(
        ConfigError, match=re.escape("model.encoder='resnet35' is not an smp encoder")
    ):
        SMPModel(encoder="resnet35")


@needs_smp
def test_smp_adapter_with_smps_weights_gives_smps_logits() -> None:
    """model=smp is smp.Unet("resnet34") itself: its state dict loads as it is, and the logits
    match smp's at a multiple of the stride, and smp's on the padded image cropped elsewhere."""
    import segmentation_models_pytorch as smp

    from segpets.models import SMPModel

    torch.manual_seed(0)
    theirs = smp.Unet("resnet34", encoder_weights=None, classes=1).eval()
    ours = SMPModel().eval()  # a different random initialisation until the weights load
    ours.net.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 64, 96)
    odd = torch.randn(1, 3, 50, 70)
    padded = F.pad(odd, (0, 26, 0, 14), mode="replicate")  # 64 x 96
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
        torch.testing.assert_close(ours(odd), theirs(padded)[..., :50, :70])


@needs_smp
def test_smp_other_architectures_pad_to_their_stride() -> None:
    from segpets.models import SMPModel

    model = SMPModel(arch="fpn", encoder="resnet18").eval()  # case-insensitive, as smp
    assert model.output_stride == 32
    assert model.encoder is model.net.encoder
    with torch.no_grad():
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 1, 50, 70)


# Ensemble


def test_ensemble_averages_probabilities_and_returns_logits(tiny_run) -> None:
    best, last = (tiny_run / "checkpoints" / f"{name}.ckpt" for name in ("best", "last"))
    single, _ = model_from_checkpoint(best)
    ensemble = EnsembleModel([best, last]).eval()
    assert ensemble.output_stride == 1 and ensemble.checkpoints == [str(best), str(last)]
    x = torch.randn(2, 3, 50, 70)
    with torch.no_grad():
        ensemble.members[1].head.bias.add_(1.0)  # members that surely disagree
        probs = [member(x).sigmoid() for member in ensemble.members]
        torch.testing.assert_close(ensemble(x).sigmoid(), (probs[0] + probs[1]) / 2)
        twice = EnsembleModel([best, best]).eval()
        torch.testing.assert_close(twice(x), single(x), atol=1e-5, rtol=0)


def test_ensemble_logit_is_finite_where_probabilities_saturate(tiny_run) -> None:
    best = tiny_run / "checkpoints" / "best.ckpt"
    ensemble = EnsembleModel([best, best]).eval()
    with torch.no_grad():
        for member in ensemble.members:
            member.head.bias.fill_(200.0)  # sigmoid(logits) == 1.0 exactly in float32
        logits = ensemble(torch.randn(1, 3, 32, 32))
    assert torch.isfinite(logits).all() and logits.min() > 100


def test_ensemble_errors_name_the_option(tmp_path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("model.checkpoints must list at least one checkpoint")
    ):
        EnsembleModel([])
    with pytest.raises(SegpetsError, match=r"model.checkpoints=.*missing.ckpt: no such file"):
        EnsembleModel([tmp_path / "missing.ckpt"])


def test_eval_of_an_ensemble_of_one_checkpoint_twice_scores_as_the_checkpoint(
    tiny_run, tmp_path
) -> None:
    best = tiny_run / "checkpoints" / "best.ckpt"
    single = [f"ckpt_path={best}"]
    report = evaluate(compose_train(tmp_path / "single", single, config_name="eval"), single)
    ensemble = ["model=ensemble", f"model.checkpoints=[{best},{best}]"]
    cfg = compose_train(tmp_path / "ensemble", ensemble, config_name="eval")
    averaged = evaluate(cfg, ensemble)
    for key in ("dice", "iou", "dice_dataset", "precision", "recall"):
        assert averaged[key] == pytest.approx(report[key], abs=1e-6), key
    assert averaged["images"] == report["images"] == 10
    assert averaged["checkpoint"] == [str(best), str(best)]


def test_eval_without_checkpoint_or_ensemble_says_what_to_pass(tmp_path) -> None:
    cfg = compose_train(tmp_path, [], config_name="eval")
    with pytest.raises(SegpetsError, match=r"ckpt_path is missing.*model=ensemble"):
        evaluate(cfg, [])


# Configs and training


@pytest.mark.parametrize(
    ("config", "model_class"),
    [
        ("attention_unet", "AttentionUNet"),
        ("deeplabv3", "DeepLabV3"),
        pytest.param("smp", "SMPModel", marks=needs_smp),
    ],
)
def test_other_model_configs_instantiate_their_class(config: str, model_class: str) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "model" / f"{config}.yaml")
    if config == "attention_unet":
        cfg.widths = list(TINY_WIDTHS)
    model = instantiate(cfg)
    assert type(model).__name__ == model_class
    assert getattr(model, "freeze_encoder_epochs", 0) == 0
    assert getattr(model, "input_normalization", None) is None  # pretrained: none


FAST_DEV_RUNS = {
    "attention_unet": ["model=attention_unet", "model.widths=[4,8,16]", "model.upsample=bilinear"],
    "deeplabv3": ["model=deeplabv3", "model.backbone=resnet50", "data.batch_size=2"],
    "smp": ["model=smp", "model.arch=FPN", "model.encoder=resnet18"],
}


@pytest.mark.parametrize(
    "name", ["attention_unet", "deeplabv3", pytest.param("smp", marks=needs_smp)]
)
def test_fast_dev_run(name: str, synthetic_root, tmp_path) -> None:
    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *FAST_DEV_RUNS[name], "debug=fdr", EVERY_PIXEL_PET],
    )
    metrics = train(cfg)
    images = 2 if name == "deeplabv3" else 4  # fast_dev_run: one test batch
    check_test_scores(tmp_path / "run", metrics, images=images, every_pixel_pet=True)
    assert torch.isfinite(torch.tensor(metrics["val"]["val/loss"]))


def test_fast_dev_run_of_an_ensemble(tiny_run, synthetic_root, tmp_path) -> None:
    best = tiny_run / "checkpoints" / "best.ckpt"
    cfg = compose_train(
        tmp_path,
        [
            *tiny_run_overrides(synthetic_root),
            "model=ensemble",
            f"model.checkpoints=[{best},{best}]",
            "debug=fdr",
            EVERY_PIXEL_PET,
        ],
    )
    metrics = train(cfg)
    check_test_scores(tmp_path / "run", metrics, images=4, every_pixel_pet=True)


def test_model_table_counts_parameters_and_flops() -> None:
    path = REPO_ROOT / "scripts" / "model_table.py"
    spec = importlib.util.spec_from_file_location("model_table", path)
    model_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model_table)
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, device="meta")
    parameters, flops = model_table.measure(conv, size=16)
    assert parameters == 8 * 3 * 9 + 8
    assert flops == 2 * (8 * 3 * 9) * 16 * 16  # a multiply-add is 2 FLOPs
    assert {row.config for row in model_table.ROWS} == {
        path.stem for path in (CONFIG_DIR / "model").glob("*.yaml")
    } - {"ensemble"}
