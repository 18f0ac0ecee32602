"""Pictures of images and masks, for people: overlays, image | prediction | truth triptychs,
grids of them, sheets of errors coloured by kind, and the undoing of the data's normalisation.

Two kinds of input meet here. Tensors, as the model sees them: images (B, 3, H, W) float
in [0, 1], probabilities (B, 1, H, W), truth masks (B, 1, H, W) with 0, 1 and 255 = ignore
(the ValidationImages callback). And arrays, as files hold them: RGB uint8 (H, W, 3) photos
with uint8 masks (H, W), 0 = background and anything else = pet (`python -m segpets.predict`).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

OVERLAY_COLOR = np.array([255, 0, 160], np.float32)  # magenta: rare in pet photos
OVERLAY_ALPHA = 0.45
IGNORE_GREY = 0.5
"""Ignored truth pixels (255) are drawn grey, apart from pet (white) and background (black)."""
PANEL_PADDING = 2


def denormalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Undo the data module's Normalize: float images in [0, 1] for display."""
    mean_t = images.new_tensor(mean).view(1, -1, 1, 1)
    std_t = images.new_tensor(std).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def triptychs(
    images: torch.Tensor, probs: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """Rows of image | prediction | truth, each (3, H, W) in [0, 1]: (3 B, 3, H, W).

    Ignored truth pixels (255) are drawn grey so they stand out from pet and background.
    """
    prediction = (probs >= threshold).float().expand(-1, 3, -1, -1)
    truth = masks.float()
    truth = torch.where(truth > 1, torch.full_like(truth, IGNORE_GREY), truth)
    truth = truth.expand(-1, 3, -1, -1)
    rows = torch.stack([images, prediction, truth], dim=1)  # (B, 3 panels, 3, H, W)
    return rows.flatten(0, 1)


def triptych_grid(
    images: torch.Tensor,
    probs: torch.Tensor,
    masks: torch.Tensor,
    threshold: float = 0.5,
    pad_value: float = 0.0,
) -> torch.Tensor:
    """One picture (3, H', W') in [0, 1] on the CPU: a row of image | prediction | truth per
    image, `PANEL_PADDING` pixels of `pad_value` between the panels."""
    panels = triptychs(images, probs, masks, threshold).cpu()
    return make_grid(panels, nrow=3, padding=PANEL_PADDING, pad_value=pad_value)


def to_uint8(picture: torch.Tensor) -> np.ndarray:
    """A (3, H, W) float picture in [0, 1] as an RGB uint8 array (H, W, 3)."""
    return (picture.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The photo (H, W, 3) uint8 with its pet pixels (`mask > 0`) tinted, for judging a mask
    at a glance; background pixels are left exactly as they are."""
    tinted = image.astype(np.float32)
    pet = mask > 0
    tinted[pet] = (1 - OVERLAY_ALPHA) * tinted[pet] + OVERLAY_ALPHA * OVERLAY_COLOR
    return tinted.round().astype(np.uint8)


def triptych(image: np.ndarray, mask: np.ndarray, truth: np.ndarray, caption: str) -> Image.Image:
    """image | prediction | truth at the image's own size, the caption above them.

    `image` is RGB uint8 (H, W, 3), `mask` the written mask (0 / 255), `truth` 0, 1, 255.
    The panels are padded in grey, apart from the masks' black and white.
    """
    grid = triptych_grid(
        torch.tensor(image).permute(2, 0, 1)[None].float() / 255,  # a copy: PIL's are read-only
        torch.from_numpy(mask > 0)[None, None].float(),
        torch.tensor(truth)[None, None],
        pad_value=IGNORE_GREY,
    )
    pixels = to_uint8(grid)
    font_size = max(12, pixels.shape[0] // 20)
    font = ImageFont.load_default(size=font_size)
    strip = font_size + 8
    canvas = Image.new("RGB", (pixels.shape[1], pixels.shape[0] + strip), "white")
    canvas.paste(Image.fromarray(pixels), (0, strip))
    ImageDraw.Draw(canvas).text((4, 4), caption, fill="black", font=font)
    return canvas


# Errors by kind: a contact sheet of photos with TP, FP and FN pixels tinted -------------

ERROR_COLORS = {
    "true positive": (0, 200, 0),  # green
    "false positive": (230, 0, 0),  # red
    "false negative": (0, 90, 255),  # blue
}
ERROR_ALPHA = 0.5
SHEET_COLUMNS = 4
SHEET_PADDING = 4
MIN_PANEL_WIDTH = 176
"""Smaller photos are enlarged (by a whole factor, nearest neighbour) so captions fit."""
CAPTION_FONT_SIZE = 12
CAPTION_LINE = CAPTION_FONT_SIZE + 3
LEGEND_HEIGHT = CAPTION_FONT_SIZE + 12


@dataclass(frozen=True)
class SheetLayout:
    """Where `error_sheet` put its panels: `rows` x `columns` cells of `panel_size`
    (width, height; the caption strip included) with `padding` around them, the legend
    below; `size` is the whole picture's (width, height)."""

    panels: int
    rows: int
    columns: int
    panel_size: tuple[int, int]
    padding: int
    size: tuple[int, int]


def error_colors(photo: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The photo (H, W, 3) uint8 with true-positive, false-positive and false-negative
    pixels tinted in ERROR_COLORS; `pred` is bool (H, W), `truth` 0, 1 and 255 = ignore,
    whose pixels, and true negatives, are left as they are."""
    valid = truth != 255
    pet = truth == 1
    kinds = (pred & pet, pred & ~pet & valid, ~pred & pet)
    tinted = photo.astype(np.float32)
    for where, color in zip(kinds, ERROR_COLORS.values(), strict=True):
        tinted[where] = (1 - ERROR_ALPHA) * tinted[where] + ERROR_ALPHA * np.float32(color)
    return tinted.round().astype(np.uint8)


def error_sheet(
    photos: torch.Tensor,
    pred: torch.Tensor,
    truth: torch.Tensor,
    captions: Sequence[str],
    columns: int = SHEET_COLUMNS,
) -> tuple[Image.Image, SheetLayout]:
    """A contact sheet of `error_colors` panels, row by row, each under its caption (lines
    split at "\\n"), with a legend of the colours at the bottom.

    `photos` (B, 3, H, W) float in [0, 1], `pred` (B, 1, H, W) bool, `truth` (B, 1, H, W)
    with 0, 1 and 255. Returns the picture and its layout.
    """
    count, _, height, width = photos.shape
    if count == 0:
        raise ValueError("error_sheet needs at least one image")
    scale = max(1, math.ceil(MIN_PANEL_WIDTH / width))
    font = ImageFont.load_default(size=CAPTION_FONT_SIZE)
    lines = max(len(caption.split("\n")) for caption in captions)
    strip = lines * CAPTION_LINE + 4
    panel_size = (width * scale, height * scale + strip)
    columns = min(columns, count)
    rows = -(-count // columns)
    legend = _legend_width(font)
    grid_width = columns * (panel_size[0] + SHEET_PADDING) + SHEET_PADDING
    size = (
        max(grid_width, legend),
        rows * (panel_size[1] + SHEET_PADDING) + SHEET_PADDING + LEGEND_HEIGHT,
    )
    sheet = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(sheet)
    for index in range(count):
        row, column = divmod(index, columns)
        left = SHEET_PADDING + column * (panel_size[0] + SHEET_PADDING)
        top = SHEET_PADDING + row * (panel_size[1] + SHEET_PADDING)
        for number, line in enumerate(captions[index].split("\n")):
            draw.text((left, top + 2 + number * CAPTION_LINE), line, fill="black", font=font)
        panel = error_colors(
            to_uint8(photos[index]), pred[index, 0].numpy(), truth[index, 0].numpy()
        )
        picture = Image.fromarray(panel)
        if scale > 1:
            picture = picture.resize((width * scale, height * scale), Image.Resampling.NEAREST)
        sheet.paste(picture, (left, top + strip))
    _draw_legend(draw, font, size[1] - LEGEND_HEIGHT)
    layout = SheetLayout(count, rows, columns, panel_size, SHEET_PADDING, size)
    return sheet, layout


def _legend_entries(font: ImageFont.FreeTypeFont) -> list[tuple[str, tuple[int, int, int], int]]:
    """(label, colour, width of swatch and label) per error kind."""
    swatch = CAPTION_FONT_SIZE
    return [
        (label, color, swatch + 4 + math.ceil(font.getlength(label)) + 12)
        for label, color in ERROR_COLORS.items()
    ]


def _legend_width(font: ImageFont.FreeTypeFont) -> int:
    return SHEET_PADDING + sum(width for *_, width in _legend_entries(font))


def _draw_legend(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont, top: int) -> None:
    left = SHEET_PADDING
    swatch = CAPTION_FONT_SIZE
    for label, color, width in _legend_entries(font):
        draw.rectangle((left, top + 4, left + swatch, top + 4 + swatch), fill=color)
        draw.text((left + swatch + 4, top + 3), label, fill="black", font=font)
        left += width


# Rows of panels under captions: the label audit's photo | label | consensus --------------


def panel_rows(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]], titles: Sequence[str] = ()
) -> Image.Image:
    """One picture: per row a caption, then its panels (RGB uint8 (H, W, 3), one size for
    all) side by side; `titles` name the columns at the top. Small panels are enlarged (by a
    whole factor, nearest neighbour) so captions fit."""
    if not rows:
        raise ValueError("panel_rows needs at least one row")
    height, width = rows[0][1][0].shape[:2]
    columns = max(len(panels) for _, panels in rows)
    scale = max(1, math.ceil(MIN_PANEL_WIDTH / width))
    font = ImageFont.load_default(size=CAPTION_FONT_SIZE)
    cell = (width * scale, height * scale)
    top = CAPTION_LINE + SHEET_PADDING if titles else 0
    row_height = CAPTION_LINE + 4 + cell[1] + SHEET_PADDING
    size = (
        columns * (cell[0] + SHEET_PADDING) + SHEET_PADDING,
        top + len(rows) * row_height + SHEET_PADDING,
    )
    sheet = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(titles):
        draw.text((SHEET_PADDING + column * (cell[0] + SHEET_PADDING), 2), title, "black", font)
    for index, (caption, panels) in enumerate(rows):
        y = top + SHEET_PADDING + index * row_height
        draw.text((SHEET_PADDING, y), caption, fill="black", font=font)
        for column, panel in enumerate(panels):
            picture = Image.fromarray(panel)
            if scale > 1:
                picture = picture.resize(cell, Image.Resampling.NEAREST)
            sheet.paste(
                picture, (SHEET_PADDING + column * (cell[0] + SHEET_PADDING), y + CAPTION_LINE + 4)
            )
    return sheet
