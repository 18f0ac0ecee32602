import math
import re
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from segpets.constants import IGNORE_INDEX
from segpets.errors import ConfigError
from segpets.losses import BCELoss, DiceLoss, FocalLoss, TverskyLoss, WeightedSum

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

LN3 = math.log(3.0)  # sigmoid(+-ln 3) = 0.75 / 0.25, sigmoid(0) = 0.5

# Two 2x2 images; one ignored pixel in the first.
LOGITS = torch.tensor([[[[LN3, -LN3], [0.0, LN3]]], [[[0.0, 0.0], [-LN3, LN3]]]])
TARGET = torch.tensor([[[[1, 0], [1, IGNORE_INDEX]]], [[[0, 1], [0, 0]]]], dtype=torch.uint8)
# The 7 valid pixels in order: probability of pet, and truth.
PROBS = [0.75, 0.25, 0.5, 0.5, 0.5, 0.25, 0.75]
TRUTH = [1, 0, 1, 0, 1, 0, 0]
IMAGE = [0, 0, 0, 1, 1, 1, 1]

ALL_LOSSES = {
    "bce": BCELoss(),
    "bce_pos_weight": BCELoss(pos_weight=3.0),
    "dice": DiceLoss(),
    "dice_per_image": DiceLoss(per_image=True),
    "tversky": TverskyLoss(alpha=0.3, beta=0.7),
    "focal": FocalLoss(),
    "focal_no_alpha": FocalLoss(alpha=None, gamma=0.5),
    "bce_dice": WeightedSum({"bce": BCELoss(), "dice": DiceLoss()}, {"bce": 1.0, "dice": 0.5}),
}
each_loss = pytest.mark.parametrize("loss", ALL_LOSSES.values(), ids=ALL_LOSSES.keys())


def p_true(p: float, t: int) -> float:
    return p if t else 1 - p


def tversky_score(probs, truth, alpha, beta, smooth=1.0) -> float:
    tp = sum(p * t for p, t in zip(probs, truth, strict=True))
    fp = sum(p * (1 - t) for p, t in zip(probs, truth, strict=True))
    fn = sum((1 - p) * t for p, t in zip(probs, truth, strict=True))
    return (2 * tp + smooth) / (2 * tp + 2 * alpha * fp + 2 * beta * fn + smooth)


def test_bce_by_hand() -> None:
    expected = -sum(math.log(p_true(p, t)) for p, t in zip(PROBS, TRUTH, strict=True)) / 7
    assert BCELoss()(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_bce_pos_weight_scales_pet_pixels() -> None:
    terms = [
        (3.0 if t else 1.0) * -math.log(p_true(p, t)) for p, t in zip(PROBS, TRUTH, strict=True)
    ]
    assert BCELoss(pos_weight=3.0)(LOGITS, TARGET).item() == pytest.approx(sum(terms) / 7, rel=1e-6)


def test_dice_pools_the_batch_by_hand() -> None:
    # TP = 0.75 + 0.5 + 0.5, sum(p) = 3.5, sum(t) = 3: Dice = (3.5 + 1) / (6.5 + 1) = 0.6.
    assert DiceLoss()(LOGITS, TARGET).item() == pytest.approx(0.4, rel=1e-6)


def test_dice_per_image_by_hand() -> None:
    # Image 0: (2 * 1.25 + 1) / (1.5 + 2 + 1) = 7/9; image 1: (2 * 0.5 + 1) / (2 + 1 + 1) = 1/2.
    assert DiceLoss(per_image=True)(LOGITS, TARGET).item() == pytest.approx(1 - (7 / 9 + 0.5) / 2)


def test_tversky_by_hand() -> None:
    # TP = 1.75, FP = 1.75, FN = 1.25: (3.5 + 1) / (3.5 + 0.6 * 1.75 + 1.4 * 1.25 + 1).
    expected = 1 - 4.5 / 7.3
    assert tversky_score(PROBS, TRUTH, 0.3, 0.7) == pytest.approx(4.5 / 7.3)
    assert TverskyLoss(alpha=0.3, beta=0.7)(LOGITS, TARGET).item() == pytest.approx(expected)
    per_image = [
        1 - tversky_score([p for p, i in zip(PROBS, IMAGE, strict=True) if i == n],
                          [t for t, i in zip(TRUTH, IMAGE, strict=True) if i == n], 0.3, 0.7)
        for n in (0, 1)
    ]  # fmt: skip
    loss = TverskyLoss(alpha=0.3, beta=0.7, per_image=True)(LOGITS, TARGET)
    assert loss.item() == pytest.approx(sum(per_image) / 2)


def test_focal_by_hand() -> None:
    alpha, gamma = 0.25, 2.0
    terms = [
        (alpha if t else 1 - alpha) * (1 - p_true(p, t)) ** gamma * -math.log(p_true(p, t))
        for p, t in zip(PROBS, TRUTH, strict=True)
    ]
    assert FocalLoss(alpha, gamma)(LOGITS, TARGET).item() == pytest.approx(sum(terms) / 7, rel=1e-6)


def test_focal_without_alpha_and_gamma_is_bce() -> None:
    torch.testing.assert_close(
        FocalLoss(alpha=None, gamma=0.0)(LOGITS, TARGET), BCELoss()(LOGITS, TARGET)
    )


@pytest.mark.parametrize("per_image", [False, True])
def test_tversky_with_equal_weights_is_dice(per_image: bool) -> None:
    logits = torch.randn(3, 1, 8, 8)
    target = torch.randint(0, 2, (3, 1, 8, 8), dtype=torch.uint8)
    tversky = TverskyLoss(alpha=0.5, beta=0.5, smooth=2.0, per_image=per_image)
    dice = DiceLoss(smooth=2.0, per_image=per_image)
    torch.testing.assert_close(tversky(logits, target), dice(logits, target))


@each_loss
def test_loss_shape_mismatch_is_an_error(loss: torch.nn.Module) -> None:
    # (B, H, W) masks would otherwise broadcast against (B, 1, H, W) logits.
    with pytest.raises(ValueError, match="differ in shape"):
        loss(LOGITS, TARGET[:, 0])


def test_weighted_sum_and_components() -> None:
    loss = WeightedSum({"bce": BCELoss(), "dice": DiceLoss()}, {"bce": 2.0, "dice": 0.5})
    parts = loss.components(LOGITS, TARGET)
    assert set(parts) == {"bce", "dice"}
    torch.testing.assert_close(parts["dice"], DiceLoss()(LOGITS, TARGET))
    torch.testing.assert_close(loss(LOGITS, TARGET), 2.0 * parts["bce"] + 0.5 * parts["dice"])


@each_loss
def test_ignored_pixels_have_no_effect(loss: torch.nn.Module) -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 2, (2, 1, 8, 8), dtype=torch.uint8)
    target[:, :, :3] = IGNORE_INDEX
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    changed = logits.detach().clone()
    changed[:, :, 0], changed[:, :, 1], changed[:, :, 2] = 1e4, -float("inf"), 7.0
    value = loss(logits, target)
    value.backward()
    assert loss(changed, target).item() == pytest.approx(value.item(), rel=1e-6)
    assert torch.all(logits.grad[:, :, :3] == 0)
    assert logits.grad[:, :, 3:].abs().sum() > 0


@each_loss
def test_all_ignored_batch_gives_zero(loss: torch.nn.Module) -> None:
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    target = torch.full((2, 1, 4, 4), IGNORE_INDEX, dtype=torch.uint8)
    value = loss(logits, target)
    value.backward()
    assert value.item() == 0.0
    assert torch.all(logits.grad == 0)


@each_loss
def test_finite_in_fp32_under_bf16_autocast_on_extreme_logits(loss: torch.nn.Module) -> None:
    target = torch.tensor([1, 0, 1, 0, IGNORE_INDEX, 1], dtype=torch.uint8).view(1, 1, 2, 3)
    for dtype in (torch.float32, torch.bfloat16):
        extreme = torch.tensor([1e4, -1e4, -1e4, 1e4, 1e4, 0.0], dtype=dtype, requires_grad=True)
        logits = extreme.view(1, 1, 2, 3)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            value = loss(logits, target)
        value.backward()
        assert value.dtype == torch.float32
        assert torch.isfinite(value)
        assert torch.isfinite(extreme.grad).all()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TverskyLoss(alpha=2), "loss.alpha must be in [0, 1], got 2"),
        (lambda: TverskyLoss(beta=-0.1), "loss.beta must be in [0, 1], got -0.1"),
        (lambda: FocalLoss(alpha=1.5), "loss.alpha must be in [0, 1], got 1.5"),
        (lambda: FocalLoss(gamma=-1), "loss.gamma must be >= 0, got -1"),
        (lambda: DiceLoss(smooth=0), "loss.smooth must be > 0, got 0"),
        (lambda: BCELoss(pos_weight=0), "loss.pos_weight must be > 0, got 0"),
        (
            lambda: WeightedSum({"bce": BCELoss()}, {"dice": 1.0}),
            "loss.weights must name the same terms as loss.terms: terms ['bce'], weights ['dice']",
        ),
        (
            lambda: WeightedSum({"bce": BCELoss()}, {"bce": -1.0}),
            "loss.weights.bce must be >= 0, got -1.0",
        ),
    ],
)
def test_bad_parameters_are_config_errors(build, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        ("bce", [], BCELoss),
        ("dice", ["per_image=true"], DiceLoss),
        ("bce_dice", ["weights.dice=0.5"], WeightedSum),
        ("tversky", ["alpha=0.7"], TverskyLoss),
        ("bce_tversky", ["terms.tversky.alpha=0.7"], WeightedSum),
        ("focal", ["alpha=null"], FocalLoss),
    ],
)
def test_loss_configs_instantiate(name: str, overrides: list[str], expected: type) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "loss" / f"{name}.yaml")
    loss = hydra.utils.instantiate(OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides)))
    assert type(loss) is expected
    assert torch.isfinite(loss(LOGITS, TARGET))
    if name == "tversky":
        assert loss.alpha == 0.7
    if name == "bce_tversky":
        assert loss.terms["tversky"].alpha == 0.7
    if name == "bce_dice":
        assert set(loss.terms) == {"bce", "dice"}
        assert loss.weights == {"bce": 1.0, "dice": 0.5}
