"""Datasets behind one DataModule: Oxford-IIIT Pet (real or synthetic) and a folder of
images and binary masks (data=folder)."""

from segpets.data.cache import CachedOxfordPetDataset, DecodedImageCache
from segpets.data.datamodule import FolderDataModule, OxfordPetDataModule, SegmentationDataModule
from segpets.data.dataset import SegmentationDataset, Source
from segpets.data.folder import FolderDataset, FolderSource
from segpets.data.oxford_pet import OxfordPetDataset, OxfordPetSource
from segpets.data.synthetic import SyntheticPets

__all__ = [
    "CachedOxfordPetDataset",
    "DecodedImageCache",
    "FolderDataModule",
    "FolderDataset",
    "FolderSource",
    "OxfordPetDataModule",
    "OxfordPetDataset",
    "OxfordPetSource",
    "SegmentationDataModule",
    "SegmentationDataset",
    "Source",
    "SyntheticPets",
]
