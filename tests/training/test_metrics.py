import pytest
import torch
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)

from segpets.constants import IGNORE_INDEX
from segpets.metrics import BinarySegmentationMetrics, per_image_scores


def as_logits(pred: torch.Tensor) -> torch.Tensor:
    """Logits whose thresholded prediction is `pred` (bool)."""
    return torch.where(pred, 5.0, -5.0)


def masks(*rows: str) -> torch.Tensor:
    """A (1, 1, H, W) uint8 mask from strings of '0', '1' and 'x' (ignored)."""
    values = [[{"0": 0, "1": 1, "x": IGNORE_INDEX}[c] for c in row] for row in rows]
    return torch.tensor(values, dtype=torch.uint8)[None, None]


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        (["00", "00"], ["00", "00"], 1.0),  # empty truth, empty prediction
        (["00", "00"], ["01", "00"], 0.0),  # empty truth, some prediction
        (["10", "00"], ["00", "00"], 0.0),  # some truth, empty prediction
        (["11", "00"], ["11", "00"], 1.0),  # perfect
    ],
)
def test_edge_cases(truth: list[str], pred: list[str], expected: float) -> None:
    scores = per_image_scores(as_logits(masks(*pred) == 1), masks(*truth))
    assert scores["dice"].item() == expected
    assert scores["iou"].item() == expected


def test_half_overlap_and_fractions() -> None:
    # tp = 1, fp = 1, fn = 1 of 4 pixels: Dice 2/4, IoU 1/3.
    scores = per_image_scores(as_logits(masks("11", "00") == 1), masks("10", "10"))
    assert scores["dice"].item() == pytest.approx(0.5)
    assert scores["iou"].item() == pytest.approx(1 / 3)
    assert scores["true_fraction"].item() == pytest.approx(0.5)
    assert scores["pred_fraction"].item() == pytest.approx(0.5)


def test_metric_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        BinarySegmentationMetrics().update(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))


def test_threshold_is_inclusive_and_configurable() -> None:
    logits = torch.zeros(1, 1, 1, 2)  # probability exactly 0.5
    target = torch.tensor([[[[1, 1]]]], dtype=torch.uint8)
    assert per_image_scores(logits, target)["dice"].item() == 1.0
    assert per_image_scores(logits, target, threshold=0.6)["dice"].item() == 0.0


def test_ignored_pixels_count_for_nothing() -> None:
    target = masks("1x", "0x")
    # Wrong at both ignored pixels, right elsewhere.
    scores = per_image_scores(as_logits(masks("11", "01") == 1), target)
    assert scores["dice"].item() == 1.0
    assert scores["true_fraction"].item() == pytest.approx(0.5)  # of the 2 valid pixels
    assert scores["pred_fraction"].item() == pytest.approx(0.5)
    metric = BinarySegmentationMetrics()
    metric.update(as_logits(masks("11", "01") == 1), target)
    assert all(value.item() == 1.0 for value in metric.compute().values())


def test_per_image_mean_differs_from_dataset_level() -> None:
    # Image A: 2 pet pixels, both found. Image B: 8 pet pixels, 4 found, no false positive.
    truth = torch.cat([masks("1100", "0000"), masks("1111", "1111")])
    pred = torch.cat([masks("1100", "0000"), masks("1111", "0000")]) == 1
    metric = BinarySegmentationMetrics()
    metric.update(as_logits(pred), truth)
    result = {name: value.item() for name, value in metric.compute().items()}
    # Per image: Dice A 1, B 2*4/(8+4) = 2/3; IoU A 1, B 4/8.
    assert result["dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert result["iou"] == pytest.approx((1 + 0.5) / 2)
    # Pooled: tp 6, fp 0, fn 4.
    assert result["dice_dataset"] == pytest.approx(12 / 16)
    assert result["iou_dataset"] == pytest.approx(6 / 10)
    assert result["precision"] == pytest.approx(1.0)
    assert result["recall"] == pytest.approx(0.6)


def random_batch(seed: int, batch: int = 4, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 1, size, size, generator=generator)
    target = torch.randint(0, 2, (batch, 1, size, size), generator=generator, dtype=torch.uint8)
    ignored = torch.rand(batch, 1, size, size, generator=generator) < 0.2
    return logits, target.masked_fill(ignored, IGNORE_INDEX)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dataset_level_matches_torchmetrics(seed: int) -> None:
    logits, target = random_batch(seed)
    metric = BinarySegmentationMetrics()
    metric.update(logits, target)
    result = metric.compute()
    probs, labels = torch.sigmoid(logits), target.long()
    reference = {
        "dice_dataset": BinaryF1Score(ignore_index=IGNORE_INDEX),
        "iou_dataset": BinaryJaccardIndex(ignore_index=IGNORE_INDEX),
        "precision": BinaryPrecision(ignore_index=IGNORE_INDEX),
        "recall": BinaryRecall(ignore_index=IGNORE_INDEX),
    }
    for name, other in reference.items():
        torch.testing.assert_close(result[name], other(probs, labels), msg=name)


def test_two_updates_equal_one_on_the_concatenation() -> None:
    (logits_a, target_a), (logits_b, target_b) = random_batch(3, batch=3), random_batch(4, batch=5)
    twice, once = BinarySegmentationMetrics(), BinarySegmentationMetrics()
    twice.update(logits_a, target_a)
    twice.update(logits_b, target_b)
    once.update(torch.cat([logits_a, logits_b]), torch.cat([target_a, target_b]))
    for name, value in once.compute().items():
        torch.testing.assert_close(twice.compute()[name], value, msg=name)


def test_merging_states_as_ddp_would_is_exact() -> None:
    (logits_a, target_a), (logits_b, target_b) = random_batch(5, batch=2), random_batch(6, batch=6)
    rank0, rank1, single = (BinarySegmentationMetrics() for _ in range(3))
    rank0.update(logits_a, target_a)
    rank1.update(logits_b, target_b)
    rank0.merge_state(rank1)  # applies each state's dist_reduce_fx, here sums
    single.update(torch.cat([logits_a, logits_b]), torch.cat([target_a, target_b]))
    for name, value in single.compute().items():
        torch.testing.assert_close(rank0.compute()[name], value, msg=name)


def test_bf16_logits() -> None:
    logits, target = random_batch(7)
    expected = per_image_scores(logits, target)
    # Rounding to bf16 keeps the sign, so the 0.5 threshold decides the same way.
    for name, value in per_image_scores(logits.bfloat16(), target).items():
        torch.testing.assert_close(value, expected[name], msg=name)
