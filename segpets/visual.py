"""Pictures of images and masks, for people: overlays, image | prediction | truth triptychs,
grids of them, and the undoing of the data's normalisation.

Two kinds of input meet here. Tensors, as the model sees them: images (B, 3, H, W) float
in [0, 1], probabilities (B, 1, H, W), truth masks (B, 1, H, W) with 0, 1 and 255 = ignore
(the ValidationImages callback). And arrays, as files hold them: RGB uint8 (H, W, 3) photos
with uint8 masks (H, W), 0 = background and anything else = pet (`python -m segpets.predict`).
"""

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
