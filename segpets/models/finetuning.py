"""Moved: the encoder callbacks live in `segpets.callbacks` with segpets' other callbacks.

This module keeps the old import path working (`from segpets.models.finetuning import
FreezeEncoder`).
"""

from segpets.callbacks import CheckInputNormalization, FreezeEncoder, encoder_callbacks

__all__ = ["CheckInputNormalization", "FreezeEncoder", "encoder_callbacks"]
