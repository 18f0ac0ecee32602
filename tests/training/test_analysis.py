"""segpets.analysis: calibration, threshold sweep, outline vs interior, groups, worst sheet."""

import pytest
import torch
from PIL import Image

from segpets.analysis import (
    CalibrationHistogram,
    ThresholdSweep,
    border_band,
    boundary_scores,
    breed_of,
    check_worst,
    expected_calibration_error,
    read_species,
    scores_by_group,
    worst_sheet,
    write_worst_sheet,
)
from segpets.constants import IGNORE_INDEX
from segpets.errors import ConfigError, DataError
from segpets.metrics import per_image_scores_from_probabilities
from segpets.visual import ERROR_COLORS, error_colors


def test_ece_of_four_pixels_by_hand():
    probs = torch.tensor([0.1, 0.2, 0.8, 0.9]).view(1, 1, 2, 2)
    target = torch.tensor([0, 1, 1, 1]).view(1, 1, 2, 2)
    # Bins of 1/15: 0.1 -> bin 1, 0.2 -> bin 3, 0.8 -> bin 12, 0.9 -> bin 13, one pixel each.
    expected = (abs(0 - 0.1) + abs(1 - 0.2) + abs(1 - 0.8) + abs(1 - 0.9)) / 4
    assert expected_calibration_error(probs, target) == pytest.approx(expected)
    # Two pixels in one bin: |mean truth - mean probability|, weighted by the bin's share.
    probs = torch.tensor([0.70, 0.72, 0.0, 0.0]).view(1, 1, 2, 2)
    target = torch.tensor([1, 0, 0, IGNORE_INDEX]).view(1, 1, 2, 2)
    expected = (2 * abs(0.5 - 0.71) + 0) / 3  # the ignored pixel counts for nothing
    assert expected_calibration_error(probs, target) == pytest.approx(expected)


def test_ece_is_zero_for_right_and_certain_probabilities_and_adds_up_over_batches():
    target = torch.randint(0, 2, (2, 1, 8, 8))
    assert expected_calibration_error(target.float(), target) == 0.0
    probs = torch.rand(2, 1, 8, 8)
    histogram = CalibrationHistogram()
    histogram.update(probs[:1], target[:1])
    histogram.update(probs[1:], target[1:])
    assert histogram.compute() == pytest.approx(expected_calibration_error(probs, target))


def test_threshold_sweep_finds_the_threshold_that_separates_the_pixels():
    # Pet pixels at 0.4, background at 0.2: every threshold in (0.2, 0.4] is perfect.
    target = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    target[:, :, :2] = 1
    probs = torch.where(target == 1, 0.4, 0.2)
    sweep = ThresholdSweep()
    sweep.update(probs, target)
    dice = sweep.dice()
    assert dice[0.5] == 0.0 and dice[0.15] == pytest.approx(2 / 3)
    assert all(dice[t] == 1.0 for t in (0.25, 0.3, 0.35, 0.4))
    assert sweep.best(prefer=0.5) == (0.4, 1.0)  # of the perfect ones, the nearest 0.5
    assert sweep.best(prefer=0.0)[0] == 0.25


def test_threshold_sweep_matches_the_metric_at_each_grid_threshold():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 1, 16, 16, generator=generator)
    target = (torch.rand(3, 1, 16, 16, generator=generator) < probs).long()
    target[0, 0, :2] = IGNORE_INDEX
    sweep = ThresholdSweep()
    sweep.update(probs, target)
    for threshold, dice in sweep.dice().items():
        expected = per_image_scores_from_probabilities(probs, target, threshold)["dice"].mean()
        assert dice == pytest.approx(float(expected), abs=1e-6)


def constructed_trimap() -> torch.Tensor:
    """12 x 12: a pet square (1) in background (2), its outline (3) in between."""
    trimap = torch.full((1, 1, 12, 12), 2, dtype=torch.uint8)
    trimap[..., 3:9, 3:9] = 3
    trimap[..., 4:8, 4:8] = 1
    return trimap


def test_a_prediction_wrong_only_at_the_outline_scores_interior_one():
    trimap = constructed_trimap()
    band = border_band(trimap, radius=0)
    assert band.sum() == 36 - 16
    truth = (trimap != 2).long()  # data.boundary=foreground: the outline is pet
    probs = (trimap == 1).float()  # the pet's inside found, its outline missed
    scores = boundary_scores(probs, truth, band)
    assert scores["interior_dice"].tolist() == [1.0]
    assert scores["boundary_dice"].item() < 1.0
    # A prediction that misses the pet altogether is poor inside too.
    missed = boundary_scores(torch.zeros_like(probs), truth, band)
    assert missed["interior_dice"].item() == 0.0


def test_the_band_widens_by_its_radius():
    trimap = constructed_trimap()
    assert border_band(trimap, radius=1).sum() == 64 - 4  # 8 x 8 ring around a 2 x 2 hole


def test_species_and_breeds_of_the_real_lists(sample_root):
    species = read_species(sample_root)
    assert species["Abyssinian_201"] == "cat"
    assert species["american_bulldog_10"] == "dog"
    assert breed_of("Abyssinian_201") == "Abyssinian"
    assert breed_of("american_bulldog_10") == "american_bulldog"
    rows = [{"species": species[n], "dice": d} for n, d in [("Abyssinian_201", 0.5)] * 2]
    rows.append({"species": "dog", "dice": 1.0})
    assert scores_by_group(rows, "species") == {
        "cat": {"images": 2, "dice": 0.5},
        "dog": {"images": 1, "dice": 1.0},
    }


def test_an_unknown_species_id_gives_unknown_and_a_short_line_names_the_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    list_file = tmp_path / "annotations" / "test.txt"
    list_file.write_text("# header\n\nBeagle_1 3 7 2\nBoxer_1 4 2 3\n")
    assert read_species(tmp_path) == {"Beagle_1": "unknown", "Boxer_1": "dog"}
    list_file.write_text("x_2 1\n")
    with pytest.raises(DataError, match=r"test\.txt line 1: expected 4 fields"):
        read_species(tmp_path)


def sheet_inputs(count: int):
    images = torch.zeros(count, 3, 8, 8)
    masks = torch.zeros(count, 1, 8, 8, dtype=torch.uint8)
    masks[..., :4, :] = 1
    probs = torch.zeros(count, 1, 8, 8)
    probs[..., :, :4] = 1.0
    names = [f"cat_{i}" for i in range(count)]
    dice = torch.linspace(0.9, 0.1, count)
    return images, masks, probs, names, dice


@pytest.mark.parametrize(("count", "k", "panels", "rows"), [(6, 5, 5, 2), (3, 8, 3, 1)])
def test_worst_sheet_has_one_panel_per_image_up_to_k(tmp_path, count, k, panels, rows):
    path = tmp_path / "sheet" / "worst.png"
    layout = worst_sheet(*sheet_inputs(count), path, k=k)
    assert (layout.panels, layout.rows) == (panels, rows)
    assert layout.rows * layout.columns >= panels > (layout.rows - 1) * layout.columns
    width, height = layout.panel_size
    with Image.open(path) as sheet:
        assert sheet.size == layout.size
        assert sheet.width >= layout.columns * (width + layout.padding)
        assert sheet.height > layout.rows * (height + layout.padding)


def test_error_colors_tint_each_kind_of_pixel():
    photo = torch.zeros(2, 2, 3, dtype=torch.uint8).numpy()
    pred = torch.tensor([[True, True], [False, False]]).numpy()
    truth = torch.tensor([[1, 0], [1, IGNORE_INDEX]]).numpy()
    tinted = error_colors(photo, pred, truth)
    tp, fp, fn = (tuple(round(c / 2) for c in color) for color in ERROR_COLORS.values())
    assert tuple(tinted[0, 0]) == tp and tuple(tinted[0, 1]) == fp
    assert tuple(tinted[1, 0]) == fn and tuple(tinted[1, 1]) == (0, 0, 0)


class ListedSamples:
    """What write_worst_sheet needs of a dataset: `names` and samples by index."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, names: list[str]) -> None:
        self.images, self.masks, self.names = images, masks, names

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "mask": self.masks[index], "name": self.names[index]}


def test_write_worst_sheet_predicts_only_the_worst_of_a_dataset(tmp_path):
    images, masks, _, names, _ = sheet_inputs(5)
    dataset = ListedSamples(images, masks, names)
    seen = []

    def predict(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.shape[0])
        return torch.zeros(batch.shape[0], 1, 8, 8)

    dice = {"cat_0": 0.9, "cat_1": 0.2, "cat_2": 0.5, "cat_3": 0.1, "cat_4": 0.8}
    layout = write_worst_sheet(dataset, predict, dice, tmp_path / "worst.png", 2)
    assert layout is not None and layout.panels == 2 and seen == [2]
    assert write_worst_sheet(dataset, predict, dice, tmp_path / "none.png", 0) is None
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("worst", [-1, 2.5, "8", True])
def test_worst_must_be_a_whole_number(worst):
    with pytest.raises(ConfigError, match="worst must be a whole number >= 0"):
        check_worst(worst)
