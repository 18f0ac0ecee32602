"""segpets.visual: what people look at, overlays and image | prediction | truth triptychs."""

import numpy as np
import torch

from segpets.constants import IMAGENET_MEAN, IMAGENET_STD
from segpets.visual import (
    OVERLAY_ALPHA,
    OVERLAY_COLOR,
    PANEL_PADDING,
    denormalize,
    overlay,
    triptych,
    triptych_grid,
    triptychs,
)


def test_denormalize_inverts_the_data_modules_normalize():
    images = torch.rand(2, 3, 8, 8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    restored = denormalize((images - mean) / std, IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(restored, images)


def test_triptychs_lay_out_image_prediction_truth():
    images = torch.rand(2, 3, 4, 4)
    probs = torch.zeros(2, 1, 4, 4)
    probs[:, :, :2] = 0.9
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    masks[:, :, :, :2] = 1
    masks[:, :, 3, 3] = 255
    panels = triptychs(images, probs, masks)
    assert panels.shape == (6, 3, 4, 4)
    torch.testing.assert_close(panels[0], images[0])
    assert panels[1, :, :2].eq(1).all() and panels[1, :, 2:].eq(0).all()
    assert panels[2, :, :3, :2].eq(1).all() and panels[2, :, :3, 2:].eq(0).all()
    assert panels[2, :, 3, 3].eq(0.5).all()  # ignored pixels are grey
    assert panels[5, :, 3, 3].eq(0.5).all()


def test_a_triptych_grid_has_a_row_of_three_panels_per_image():
    images, probs = torch.rand(2, 3, 16, 24), torch.rand(2, 1, 16, 24)
    masks = torch.zeros(2, 1, 16, 24, dtype=torch.uint8)
    grid = triptych_grid(images, probs, masks)
    pad = PANEL_PADDING
    assert grid.shape == (3, pad + 2 * (16 + pad), pad + 3 * (24 + pad))
    assert grid.device.type == "cpu" and grid.min() >= 0 and grid.max() <= 1


def test_the_overlay_tints_pet_pixels_only():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    mask = np.zeros((64, 48), np.uint8)
    mask[10:30, 5:20] = 255
    tinted = overlay(image, mask)
    assert tinted.shape == image.shape and tinted.dtype == np.uint8
    pet = mask > 0
    np.testing.assert_array_equal(tinted[~pet], image[~pet])  # background untouched
    expected = (1 - OVERLAY_ALPHA) * image[pet].astype(np.float32) + OVERLAY_ALPHA * OVERLAY_COLOR
    np.testing.assert_array_equal(tinted[pet], expected.round().astype(np.uint8))
    assert not np.array_equal(tinted[pet], image[pet])
    np.testing.assert_array_equal(overlay(image, np.zeros_like(mask)), image)


def test_the_triptych_is_three_panels_wide_under_a_caption():
    height, width = 64, 48
    image = np.full((height, width, 3), 200, np.uint8)
    image.setflags(write=False)  # as PIL's arrays are
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    truth = np.zeros((height, width), np.uint8)
    truth[:, : width // 2] = 1
    truth[0, 0] = 255
    picture = triptych(image, mask, truth, "cat   Dice 1.0000")
    pad = PANEL_PADDING
    assert picture.mode == "RGB"
    assert picture.width == pad + 3 * (width + pad)
    caption = picture.height - (pad + height + pad)
    assert 12 + 8 <= caption <= 40  # the strip above the panels holds the caption
    pixels = np.asarray(picture)[caption + pad :, pad:]  # the first panel's top-left corner
    np.testing.assert_array_equal(pixels[:height, :width], image)
    prediction = pixels[:height, width + pad : 2 * width + pad]
    assert (prediction[:, : width // 2] == 255).all() and (prediction[:, width // 2 :] == 0).all()
    truth_panel = pixels[:height, 2 * (width + pad) :][:, :width]
    assert (truth_panel[0, 0] == 128).all()  # ignored: grey
    assert (truth_panel[1:, : width // 2] == 255).all() and (
        truth_panel[:, width // 2 :] == 0
    ).all()
