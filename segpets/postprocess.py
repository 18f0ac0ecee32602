"""What prediction does to a thresholded mask before it is scored or written: the
`postprocess` config group (configs/postprocess/).

The test after training, `segpets.eval`, `segpets.predict` and `segpets.load` apply the
run's `postprocess` (none unless its config names one) through
`segpets.inference.predict_probabilities`. A post-processing is a callable on boolean
masks (..., H, W) that returns masks of the same shape and device.
"""

import numpy as np
import torch
from scipy import ndimage

EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


class LargestRegion:
    """Keeps each mask's largest connected pet region and fills the holes inside it.

    An Oxford-IIIT Pet photo shows one pet, so pet pixels apart from its largest region
    are false positives, and background enclosed by it is a false negative. Regions are
    8-connected (pixels touching at a corner are one region); a mask without pet pixels
    stays empty. Computed on the CPU with scipy.ndimage, one mask at a time. Not for
    photos of several pets: all but the largest would be erased.
    """

    def __init__(self, fill_holes: bool = True) -> None:
        self.fill_holes = fill_holes

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        flat = masks.detach().to("cpu", torch.bool).reshape(-1, *masks.shape[-2:]).numpy()
        kept = np.stack([self._one(mask) for mask in flat]) if len(flat) else flat
        return torch.from_numpy(kept).reshape(masks.shape).to(masks.device)

    def _one(self, mask: np.ndarray) -> np.ndarray:
        labels, count = ndimage.label(mask, structure=EIGHT_NEIGHBOURS)
        if count > 1:
            sizes = np.bincount(labels.ravel())[1:]
            mask = labels == 1 + int(np.argmax(sizes))
        return ndimage.binary_fill_holes(mask) if self.fill_holes else mask

    def __repr__(self) -> str:
        return f"LargestRegion(fill_holes={self.fill_holes})"
