"""Reading Oxford-IIIT Pet in its official layout.

    root/images/<name>.jpg                 photos (a few are GIF or PNG under a .jpg name)
    root/annotations/trimaps/<name>.png    1 = pet, 2 = background, 3 = border
    root/annotations/trainval.txt          "<name> <class-id> <species> <breed-id>" per line
    root/annotations/test.txt              same format

Splits are fixed, so every run and every process sees the same ones: test is test.txt;
trainval.txt lines (0-based, after skipping comments and blank lines) with
`index % val_every == 0` are validation, the others train. With `val_every=10` that is
"every 10th line", as segmentation_models.pytorch splits it. Names on disk that are in no
list (and the .mat files beside the photos) are never used.

A sample whose files are missing or unreadable is left out when the dataset is built and
reported in `OxfordPetDataset.skipped`, so that a bad file never stops training mid-epoch.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segpets.constants import IGNORE_INDEX
from segpets.data.dataset import SegmentationDataset, Source, file_stat, scan_names
from segpets.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
LIST_FORMAT = "<name> <class-id> <species> <breed-id>"
TRIMAP_VALUES = (1, 2, 3)
LIST_FILES = ("annotations/trainval.txt", "annotations/test.txt")

# Trimap value -> mask value (index 0 is never looked up: trimaps hold only 1, 2, 3).
_PET, _BACKGROUND = 1, 0
BOUNDARY_LUTS = {
    "foreground": np.array([0, _PET, _BACKGROUND, _PET], np.uint8),
    "background": np.array([0, _PET, _BACKGROUND, _BACKGROUND], np.uint8),
    "ignore": np.array([0, _PET, _BACKGROUND, IGNORE_INDEX], np.uint8),
}
BOUNDARIES = tuple(BOUNDARY_LUTS)

# PIL's ways of saying "this file is not a (complete) image".
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def parse_list_rows(path: str | Path) -> list[list[str]]:
    """The 4 fields of each line of an official list file, in file order; `#` and blank
    lines skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f'{path} is not a text list file ({error}); expected lines "{LIST_FORMAT}"'
        ) from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 4:
            raise DataError(
                f'{path} line {number}: expected 4 fields "{LIST_FORMAT}", '
                f"got {len(fields)}: {line!r}"
            )
        rows.append(fields)
    return rows


def parse_list_file(path: str | Path) -> list[str]:
    """Sample names of an official list file, in file order; `#` and blank lines skipped."""
    return [fields[0] for fields in parse_list_rows(path)]


def split_names(root: str | Path, split: str, val_every: int = 10) -> list[str]:
    """Names in `split`; see the module docstring for the rule."""
    annotations = Path(root) / "annotations"
    if split == "test":
        return parse_list_file(annotations / "test.txt")
    names = parse_list_file(annotations / "trainval.txt")
    if split == "val":
        return names[::val_every]
    if split == "train":
        return [name for index, name in enumerate(names) if index % val_every]
    raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def list_file(split: str) -> str:
    """The list file a split comes from, relative to root."""
    return "annotations/test.txt" if split == "test" else "annotations/trainval.txt"


def check_boundary(boundary: str) -> None:
    if boundary not in BOUNDARY_LUTS:
        raise ConfigError(
            f"data.boundary must be one of {', '.join(BOUNDARIES)} "
            f"(what the trimap border becomes), got {boundary!r}"
        )


def trimap_to_mask(trimap: np.ndarray, boundary: str) -> np.ndarray:
    """Binary mask (uint8: 0 background, 1 pet, 255 ignore) from an official trimap."""
    check_boundary(boundary)
    if trimap.size and (trimap.min() < 1 or trimap.max() > 3):
        present = np.unique(trimap)
        unexpected = present[~np.isin(present, TRIMAP_VALUES)]
        raise DataError(
            f"trimap has values {unexpected.tolist()}; expected only 1 (pet), "
            "2 (background), 3 (border)"
        )
    return BOUNDARY_LUTS[boundary][trimap]


def load_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3), whatever the format behind the file name (GIF, RGBA PNG...)."""
    with Image.open(path) as image:
        return image_to_rgb(image)


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a PIL image of any mode, as PIL converts it: grayscale is
    repeated, alpha dropped, a palette looked up, 16-bit values above 255 clipped to 255."""
    return np.asarray(image.convert("RGB"))


def load_trimap(path: str | Path) -> np.ndarray:
    with Image.open(path) as trimap:
        return np.asarray(trimap)


def looks_like_folder(root: Path) -> bool:
    """Whether `root` holds one of data=folder's layouts (masks/ beside images, or split
    folders) rather than Oxford's annotations/."""
    if not root.is_dir() or (root / "annotations").exists():
        return False
    return (root / "masks").is_dir() or any(
        (root / split / "masks").is_dir() for split in ("train", "val", "valid", "test")
    )


def check_layout(root: str | Path) -> None:
    """Raise a DataError that says what is missing under `root` and how to get it."""
    root = Path(root)
    needed = ["images/", "annotations/trimaps/", "annotations/trainval.txt", "annotations/test.txt"]
    missing = needed if not root.is_dir() else [p for p in needed if not (root / p).exists()]
    if root.exists() and not root.is_dir():
        raise DataError(
            f"data.root={root} is a file, not a folder: point data.root at the folder that "
            "holds images/ and annotations/ (the official Oxford-IIIT Pet layout), or use "
            "data=synthetic, which generates pet-like scenes and needs no download."
        )
    if missing and looks_like_folder(root):
        raise DataError(
            f"data.root={root} holds images and masks, not the Oxford-IIIT Pet layout (missing "
            f"{', '.join(missing)}): use data=folder, which reads a folder of images and binary "
            'masks (docs/data.md, "Your own data")'
        )
    if missing:
        what = "the folder does not exist" if not root.is_dir() else "missing " + ", ".join(missing)
        raise DataError(
            f"Oxford-IIIT Pet not found in {root}: {what}. Set data.download=true to fetch "
            "the official archives (about 800 MB) into that folder, point data.root at an "
            "existing copy, or use data=synthetic, which generates pet-like scenes and needs "
            "no download."
        )


def _check_sample(root: Path, name: str) -> str | None:
    """Why the sample cannot be used, or None if it can.

    JPEGs are decoded at 1/8 scale (libjpeg still reads every byte, so truncation shows),
    trimaps in full (small PNGs); the trimap's extrema catch values outside 1..3.
    """
    image_path = root / "images" / f"{name}.jpg"
    trimap_path = root / "annotations" / "trimaps" / f"{name}.png"
    if not image_path.is_file():
        return f"image missing: {image_path}"
    if not trimap_path.is_file():
        return f"trimap missing: {trimap_path}"
    try:
        with Image.open(image_path) as image:
            size = image.size
            image.draft(image.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            image.load()
    except UNREADABLE as error:
        return f"image unreadable: {image_path} ({error})"
    try:
        with Image.open(trimap_path) as trimap:
            trimap.load()
            bands, trimap_size = trimap.getbands(), trimap.size
            extrema = trimap.getextrema() if len(bands) == 1 else None
    except UNREADABLE as error:
        return f"trimap unreadable: {trimap_path} ({error})"
    if trimap_size != size:
        return f"trimap is {trimap_size[0]}x{trimap_size[1]}, image {size[0]}x{size[1]}"
    if extrema is None:
        return f"trimap has {len(bands)} channels, expected 1: {trimap_path}"
    if extrema[0] < 1 or extrema[1] > 3:
        return f"trimap values outside 1..3 (min {extrema[0]}, max {extrema[1]}): {trimap_path}"
    return None


def scan(root: str | Path, names: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split `names` into usable ones and (name, reason) pairs for the rest."""
    return scan_names(OxfordPetSource(root), names)


class OxfordPetSource(Source):
    """The official layout (module docstring) as a `Source`: raw masks are the trimaps, and
    `boundary` is applied by `to_mask`, so the decoded-image cache serves every boundary."""

    kind = "oxford_pet"

    def __init__(self, root: str | Path, boundary: str = "foreground", val_every: int = 10):
        check_boundary(boundary)
        self.root = Path(root)
        self.boundary = boundary
        self.val_every = val_every

    def split_names(self, split: str) -> list[str]:
        check_layout(self.root)
        return split_names(self.root, split, self.val_every)

    def split_origin(self, split: str) -> str:
        return str(self.root / list_file(split))

    def check(self, name: str) -> str | None:
        return _check_sample(self.root, name)

    def image_path(self, name: str) -> Path:
        return self.root / "images" / f"{name}.jpg"

    def mask_path(self, name: str) -> Path:
        return self.root / "annotations" / "trimaps" / f"{name}.png"

    def load_image(self, name: str) -> np.ndarray:
        return load_image(self.image_path(name))

    def raw_mask(self, name: str) -> np.ndarray:
        return load_trimap(self.mask_path(name))

    def to_mask(self, raw: np.ndarray) -> np.ndarray:
        return BOUNDARY_LUTS[self.boundary][raw]

    def native_mask(self, name: str) -> np.ndarray:
        trimap_path = self.mask_path(name)
        try:
            return trimap_to_mask(load_trimap(trimap_path), self.boundary)
        except DataError as error:
            raise DataError(f"{trimap_path}: {error}") from None

    def foreground_shares(self, names: list[str]) -> dict[str, float]:
        """{name: share of pet and border pixels in its trimap}, whatever data.boundary, so
        that k-fold's folds are the same for every boundary; unreadable trimaps left out.
        One pass over the trimaps (no photo is read)."""
        shares = {}
        for name in names:
            try:
                trimap = load_trimap(self.mask_path(name))
            except UNREADABLE:
                continue
            if trimap.ndim == 2 and trimap.size:
                shares[name] = float(np.count_nonzero(trimap != 2)) / trimap.size
        return shares

    def cached_names(self) -> list[str]:
        """Every sample name of trainval.txt and test.txt, once, in file order."""
        names = [name for path in LIST_FILES for name in parse_list_file(self.root / path)]
        return list(dict.fromkeys(names))

    def cache_key(self) -> dict[str, Any]:
        check_layout(self.root)
        paths = [*LIST_FILES]
        for name in self.cached_names():
            paths += [f"images/{name}.jpg", f"annotations/trimaps/{name}.png"]
        return {"sources": {path: file_stat(self.root / path) for path in paths}}


class OxfordPetDataset(SegmentationDataset):
    """One split of Oxford-IIIT Pet as dicts {"image", "mask" (1, H, W) uint8, "name"}.

    Without a transform, images keep their size and are only normalised with ImageNet
    statistics; `OxfordPetDataModule` passes the resize / augmentation pipeline, and its
    source when data.folds or data.train_fraction re-draw the splits (`source`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        boundary: str = "foreground",
        transform: Callable[..., dict[str, Any]] | None = None,
        val_every: int = 10,
        source: Source | None = None,
    ) -> None:
        check_boundary(boundary)
        check_layout(root)
        self.boundary = boundary
        source = source if source is not None else OxfordPetSource(root, boundary, val_every)
        super().__init__(source, split, transform)
