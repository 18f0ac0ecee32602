"""Values shared by data, losses and metrics."""

IGNORE_INDEX = 255
"""Mask value for pixels excluded from losses and metrics (`data.boundary=ignore`)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
