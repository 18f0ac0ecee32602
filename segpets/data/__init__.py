"""Oxford-IIIT Pet (real or synthetic) as a Lightning DataModule."""

from segpets.data.cache import CachedOxfordPetDataset, DecodedImageCache
from segpets.data.datamodule import OxfordPetDataModule
from segpets.data.oxford_pet import OxfordPetDataset
from segpets.data.synthetic import SyntheticPets

__all__ = [
    "CachedOxfordPetDataset",
    "DecodedImageCache",
    "OxfordPetDataModule",
    "OxfordPetDataset",
    "SyntheticPets",
]
