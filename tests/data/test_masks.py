"""The mask decoding rules of data=folder (segpets/data/masks.py), one array per rule."""

import numpy as np
import pytest

from segpets.constants import IGNORE_INDEX
from segpets.data.masks import (
    THRESHOLDED,
    ZERO_255,
    ZERO_MAX,
    ZERO_ONE,
    MaskValueError,
    check_foreground_values,
    decode_mask,
    fit_to_image,
    same_aspect,
)
from segpets.errors import ConfigError, DataError

TRUTH = np.zeros((8, 10), np.uint8)
TRUTH[2:6, 3:8] = 1


@pytest.mark.parametrize(
    ("stored", "encoding"),
    [
        (TRUTH, ZERO_ONE),
        (TRUTH * 255, ZERO_255),
        (TRUTH.astype(np.uint16) * 65535, ZERO_MAX),
        (TRUTH.astype(bool), ZERO_ONE),
        (np.repeat((TRUTH * 255)[..., None], 3, axis=2), ZERO_255),  # RGB, channels agree
        (np.dstack([TRUTH * 255] * 3 + [np.full_like(TRUTH, 255)]), ZERO_255),  # RGBA
    ],
)
def test_two_valued_masks_decode_as_stored(stored, encoding):
    mask, found = decode_mask(stored)
    assert found == encoding
    np.testing.assert_array_equal(mask, TRUTH)
    assert mask.dtype == np.uint8


def test_jpeg_like_masks_are_thresholded_at_the_midpoint():
    rng = np.random.default_rng(0)
    noisy = (TRUTH * 255).astype(np.int16) + rng.integers(-40, 41, TRUTH.shape)
    noisy[0, 0] = 130  # one pixel in the middle, as at a JPEG edge
    mask, encoding = decode_mask(np.clip(noisy, 0, 255).astype(np.uint8))
    assert encoding == THRESHOLDED
    expected = TRUTH.copy()
    expected[0, 0] = 1  # 130 >= 128
    np.testing.assert_array_equal(mask, expected)


def test_more_values_need_foreground_values_and_the_error_lists_them():
    labels = TRUTH.copy()
    labels[2:4, 3:5] = 2
    with pytest.raises(
        MaskValueError, match=r"values 0 \(75\.0 %\), 1 \(20\.0 %\), 2 \(5\.0 %\)"
    ) as error:
        decode_mask(labels)
    assert "data.foreground_values" in str(error.value)
    assert error.value.values == {0: 0.75, 1: 0.2, 2: 0.05}
    np.testing.assert_array_equal(decode_mask(labels, [1, 2])[0], TRUTH)
    np.testing.assert_array_equal(decode_mask(labels, "nonzero")[0], TRUTH)
    np.testing.assert_array_equal(decode_mask(labels, [2])[0], labels == 2)


def test_ignore_value_becomes_ignore_index_before_the_other_rules():
    voc = TRUTH.copy()
    voc[0, :] = 255  # a VOC-style border: 0 / 1 / 255 is three values without ignore_value
    with pytest.raises(MaskValueError):
        decode_mask(voc)
    mask, encoding = decode_mask(voc, ignore_value=255)
    assert encoding == ZERO_ONE
    expected = TRUTH.copy()
    expected[0, :] = IGNORE_INDEX
    np.testing.assert_array_equal(mask, expected)


def test_colour_masks_are_an_error_that_says_what_to_do():
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[1, 1] = (255, 0, 0)
    with pytest.raises(DataError, match=r"channels differ.*palette PNG"):
        decode_mask(colour)


@pytest.mark.parametrize("bad", ["all", [], [1, "x"], 3])
def test_foreground_values_option_is_checked(bad):
    with pytest.raises(ConfigError, match=r"data\.foreground_values"):
        check_foreground_values(bad)


def test_masks_of_the_same_shape_are_resized_nearest_neighbour():
    assert same_aspect((50, 40), (100, 80))
    assert same_aspect((33, 25), (100, 75))  # 33 x 25 is 1/3 of 100 x 75, rounded
    assert not same_aspect((50, 50), (100, 80))
    small = TRUTH[::2, ::2]
    resized = fit_to_image(small, (10, 8))
    assert resized.shape == (8, 10)
    assert set(np.unique(resized)) <= {0, 1}
    assert fit_to_image(TRUTH, (10, 8)) is TRUTH
