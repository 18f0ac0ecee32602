"""A folder of images and binary masks (`data=folder`), in the layouts users already have.

    root/images/12.jpg + root/masks/12.png           paired by file stem (extensions free)
    root/splits/{train,val,test}.txt                 optional: one stem a line
    root/{train,val,test}/{images,masks}/            split by folder (valid/validation = val)

Folder names are `images_dir` and `masks_dir`; `mask_suffix` pairs `ISIC_0001.jpg` with
`ISIC_0001_mask.png` (and lets images and masks share one folder). Without split files
or folders, a seeded split stratified by foreground share (`split_fractions`,
`split_seed`): the pairs are ordered by the share of foreground in their mask, the
splits interleaved along that order in proportion, and neighbours shuffled, so every split
sees small and large objects alike. A missing val split is carved from train the same way.
Masks decode by the rules of segpets/data/masks.py. Images read as predict reads them
(any PIL mode), and EXIF orientation is applied to image and mask alike.

Everything is checked when the source is first used (`FolderSource.scan`), before a
run writes anything: problems a user must fix are DataErrors that name the file or option
and the fix; what segpets can work around (JPEG masks, masks at another scale, files that
are not pairs) is collected into `FolderScan.warnings`, one line each.
"""

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from segpets.data.dataset import SegmentationDataset, Source, file_stat
from segpets.data.masks import (
    THRESHOLDED,
    MaskValueError,
    check_foreground_values,
    decode_mask,
    describe_values,
    fit_to_image,
    same_aspect,
)
from segpets.data.oxford_pet import SPLITS, UNREADABLE, image_to_rgb
from segpets.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
SPLIT_FILES = "splits"
SHOWN = 5  # how many files a warning or error names
FRACTION_TOLERANCE = 1e-6


def load_photo(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image file, EXIF orientation applied, any PIL mode."""
    with Image.open(path) as image:
        return image_to_rgb(ImageOps.exif_transpose(image))


def load_mask_pixels(path: str | Path) -> np.ndarray:
    """A mask file's pixel array, EXIF orientation applied: palette masks give indices."""
    with Image.open(path) as mask:
        return np.asarray(ImageOps.exif_transpose(mask))


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of `image` once its EXIF orientation is applied."""
    orientation = image.getexif().get(0x0112, 1)
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """`data.split_fractions` as three positive floats summing to 1; a ConfigError otherwise."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) <= 0 or abs(sum(values) - 1) > FRACTION_TOLERANCE:
        total = f" (sum {sum(values):g})" if len(values) == 3 else ""
        raise ConfigError(
            "data.split_fractions must be 3 positive fractions (train, val, test) that sum to "
            f"1, e.g. [0.7, 0.15, 0.15]; got {list(fractions) if fractions else fractions}{total}"
        )
    return values  # type: ignore[return-value]


def split_counts(total: int, fractions: Sequence[float], names: Sequence[str]) -> list[int]:
    """How many of `total` items each split gets (rounded; the first takes the rest)."""
    counts = [round(f * total) for f in fractions[1:]]
    counts.insert(0, total - sum(counts))
    for count, name, fraction in zip(counts, names, fractions, strict=True):
        if count <= 0:
            raise ConfigError(
                f"data.split_fractions gives the {name} split {fraction:g} of {total} pairs, "
                "which leaves it empty: raise that fraction or add data"
            )
    return counts


def stratified_split(
    shares: dict[str, float],
    fractions: Sequence[float],
    seed: int,
    names: Sequence[str] = SPLITS,
    counts: Sequence[int] | None = None,
) -> dict[str, list[str]]:
    """{split: sorted names}: `fractions` of the items, stratified by their share value.

    Items ordered by share get split labels interleaved in proportion (each split spread
    evenly along the order); labels are then shuffled with `seed` inside blocks of about
    1 / min(fraction) neighbours, so the split is random but every range of shares is in
    every split. `counts` (items per split) replaces the rounding of `split_counts`, as
    k-fold's sizes that differ by at most one (segpets/data/folds.py).
    """
    order = sorted(shares, key=lambda name: (shares[name], name))
    counts = list(counts) if counts is not None else split_counts(len(order), fractions, names)
    labels, given = [], [0] * len(counts)
    for index in range(len(order)):
        due = [c * (index + 1) / len(order) - g for c, g in zip(counts, given, strict=True)]
        pick = max((i for i in range(len(counts)) if given[i] < counts[i]), key=lambda i: due[i])
        labels.append(pick)
        given[pick] += 1
    rng = np.random.default_rng(seed)
    block = max(2, math.ceil(1 / min(fractions)))
    labels_array = np.array(labels)
    for start in range(0, len(labels_array), block):
        rng.shuffle(labels_array[start : start + block])
    return {
        split: sorted(n for n, label in zip(order, labels_array, strict=True) if label == i)
        for i, split in enumerate(names)
    }


def read_groups(path: str | Path) -> dict[str, str]:
    """{stem: group} from `data.groups_csv`, a CSV whose header has `stem` and `group`."""
    import csv

    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if not {"stem", "group"} <= set(reader.fieldnames or ()):
                raise DataError(
                    f"data.groups_csv={path} has columns {reader.fieldnames}: it needs a header "
                    "with stem and group (one image a line: 12,polyp_small)"
                )
            return {row["stem"].strip(): row["group"].strip() for row in reader}
    except OSError as error:
        raise DataError(
            f"data.groups_csv={path} cannot be read ({error.strerror}): give a CSV of stem,group "
            "or null"
        ) from None


def split_hash(names: Sequence[str]) -> str:
    """A short hash of a split's names (order-free): runs with equal hashes test the same images."""
    return hashlib.sha1("\n".join(sorted(names)).encode()).hexdigest()[:12]


@dataclass
class FolderScan:
    """What `FolderSource.scan` found: pairs, splits, per-mask facts and the warnings."""

    layout: str
    pairs: dict[str, tuple[Path, Path]]
    splits: dict[str, list[str]] = field(default_factory=dict)
    split_origin: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    foreground: dict[str, float] = field(default_factory=dict)
    encodings: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def fingerprint(self) -> dict[str, Any]:
        """A few facts of the dataset for metrics.json and the model card: layout, pairs per
        split, mask encodings and the foreground share of the masks (median, and how many
        are empty). `python -m segpets.inspect` gives the whole fingerprint."""
        shares = sorted(self.foreground.values())
        return {
            "layout": self.layout,
            "pairs": {split: len(self.splits.get(split, ())) for split in SPLITS},
            "masks": dict(self.encodings.most_common()),
            "foreground_median": round(float(np.median(shares)), 4) if shares else None,
            "empty_masks": int(sum(share == 0 for share in shares)),
        }

    def summary(self, root: Path) -> str:
        """The one line setup states: layout, pairs, splits and mask encodings."""
        sizes = " / ".join(f"{split} {len(self.splits[split])}" for split in SPLITS)
        encodings = ", ".join(f"{name} ({count})" for name, count in self.encodings.most_common())
        return (
            f"data=folder: {root}: {self.layout}, {len(self.pairs)} pairs; splits from "
            f"{self.split_origin}: {sizes}; masks: {encodings}"
        )


class FolderSource(Source):
    """A folder of images and masks (module docstring) as a `Source`.

    Options as in configs/data/folder.yaml; `splits` ({split: [stems]}) replaces split
    detection, as a run's stored config does so that eval scores the same test set.
    Nothing is read until `scan()` (or a method that needs it) runs.
    """

    kind = "folder"

    def __init__(
        self,
        root: str | Path,
        images_dir: str = "images",
        masks_dir: str = "masks",
        mask_suffix: str = "",
        splits: dict[str, Sequence[str]] | None = None,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        split_seed: int = 0,
        foreground_values: Sequence[int] | str | None = None,
        ignore_value: int | None = None,
        strict: bool = False,
    ) -> None:
        if not root:
            raise ConfigError(f"data.root must be a folder path, got {root!r}")
        for option, value in (("data.images_dir", images_dir), ("data.masks_dir", masks_dir)):
            if not value or not isinstance(value, str):
                raise ConfigError(f"{option} must be a folder name under data.root, got {value!r}")
        if ignore_value is not None and (
            isinstance(ignore_value, bool) or not isinstance(ignore_value, int)
        ):
            raise ConfigError(
                f"data.ignore_value must be a mask value to leave out (e.g. 255) or null, "
                f"got {ignore_value!r}"
            )
        if isinstance(split_seed, bool) or not isinstance(split_seed, int):
            raise ConfigError(f"data.split_seed must be an integer, got {split_seed!r}")
        self.root = Path(root)
        self.images_dir, self.masks_dir = images_dir, masks_dir
        self.mask_suffix = mask_suffix or ""
        self.given_splits = _check_given_splits(splits)
        self.split_fractions = check_fractions(split_fractions)
        self.split_seed = split_seed
        self.foreground_values = check_foreground_values(foreground_values)
        self.ignore_value = ignore_value
        self.strict = bool(strict)
        self._scan: FolderScan | None = None

    # ---------------------------------------------------------------- Source methods

    def split_names(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return list(self.scan().splits[split])

    def split_origin(self, split: str) -> str:
        return f"{self.root} ({split} split from {self.scan().split_origin})"

    def check(self, name: str) -> str | None:
        scan = self.scan()
        if name in scan.skipped:
            return scan.skipped[name]
        return None if name in scan.pairs else f"no image/mask pair named {name}"

    def image_path(self, name: str) -> Path:
        return self.scan().pairs[name][0]

    def mask_path(self, name: str) -> Path:
        return self.scan().pairs[name][1]

    def load_image(self, name: str) -> np.ndarray:
        return load_photo(self.image_path(name))

    def raw_mask(self, name: str) -> np.ndarray:
        image_path, _ = self.scan().pairs[name]
        with Image.open(image_path) as image:  # the header only: its size
            return self._mask_at(name, oriented_size(image))

    def load_sample(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The photo, decoded once, and its mask at the photo's size."""
        image = self.load_image(name)
        return image, self._mask_at(name, (image.shape[1], image.shape[0]))

    def _mask_at(self, name: str, size: tuple[int, int]) -> np.ndarray:
        image_path, mask_path = self.scan().pairs[name]
        return self._decode(mask_path, load_mask_pixels(mask_path), image_path, size)[0]

    def foreground_shares(self, names: list[str]) -> dict[str, float]:
        """The scan's foreground shares (decoded masks, ignored pixels left out)."""
        foreground = self.scan().foreground
        return {name: foreground[name] for name in names if name in foreground}

    def cached_names(self) -> list[str]:
        return sorted(self.scan().pairs)

    def cache_key(self) -> dict[str, Any]:
        scan = self.scan()
        files = [path for name in sorted(scan.pairs) for path in scan.pairs[name]]
        files += sorted((self.root / SPLIT_FILES).glob("*.txt"))
        return {
            "sources": {str(path.relative_to(self.root)): file_stat(path) for path in files},
            "decoding": {
                "foreground_values": self.foreground_values,
                "ignore_value": self.ignore_value,
            },
        }

    # ---------------------------------------------------------------- what train records

    def split_record(self) -> dict[str, Any]:
        """The split as train stores it: names per split and the test split's hash."""
        scan = self.scan()
        return {
            "origin": scan.split_origin,
            **{split: list(scan.splits[split]) for split in SPLITS},
            "test_hash": split_hash(scan.splits["test"]),
        }

    def test_data(self) -> dict[str, Any]:
        """What metrics.json's `test_data` says about this source's test split."""
        test = self.scan().splits["test"]
        return {
            "dataset": "folder",
            "root": str(self.root.resolve()),
            "split": "test",
            "split_hash": split_hash(test),
            "ignore_value": self.ignore_value,
            "foreground_values": self.foreground_values,
        }

    # ---------------------------------------------------------------- the scan

    def scan(self) -> FolderScan:
        """Find, pair, check and split the files (once); DataError on what must be fixed."""
        if self._scan is None:
            self._scan = self._run_scan()
        return self._scan

    def _run_scan(self) -> FolderScan:
        root = self.root
        if not root.is_dir():
            raise DataError(
                f"data.root={root} is not a folder: point it at the folder that holds "
                f"{self.images_dir}/ and {self.masks_dir}/ (or train/, val/, test/ with those inside)"
            )
        if (root / "annotations" / "trimaps").is_dir():
            raise DataError(
                f"data.root={root} holds the Oxford-IIIT Pet layout (annotations/trimaps/): "
                "use data=oxford_pet, which reads its trimaps and official splits"
            )
        folders = self._split_folders()
        unpaired: list[str] = []
        if folders:
            layout = f"split folders {', '.join(f'{d.name}/' for d in folders.values())}"
            pairs, by_split = {}, {}
            for split, folder in folders.items():
                found = self._pair(folder, unpaired)
                for stem in found:
                    if stem in pairs:
                        raise DataError(
                            f"two images with stem {stem}: {pairs[stem][0]} and {found[stem][0]}: "
                            "rename one (names must be unique across splits)"
                        )
                pairs.update(found)
                by_split[split] = sorted(found)
        else:
            layout = f"{self.images_dir}/ + {self.masks_dir}/ paired by stem"
            pairs, by_split = self._pair(root, unpaired), None
        if self.mask_suffix:
            layout += f" (masks end in {self.mask_suffix})"
        scan = FolderScan(layout, pairs)
        self._check_pairs(scan)
        self._split(scan, by_split)
        listed = {name for names in scan.splits.values() for name in names}
        left_out = [f"{n}: {r}" for n, r in scan.skipped.items() if n not in listed]
        if left_out:
            scan.warnings.append(
                f"Left out {len(left_out)} unreadable pairs under {root}: "
                + "; ".join(left_out[:SHOWN])
                + (f"; and {len(left_out) - SHOWN} more" if len(left_out) > SHOWN else "")
            )
        if unpaired:
            message = (
                f"{len(unpaired)} files under {root} are not image/mask pairs and are left "
                f"out: {'; '.join(unpaired[:SHOWN])}"
                + (f"; and {len(unpaired) - SHOWN} more" if len(unpaired) > SHOWN else "")
            )
            if self.strict:
                raise DataError(
                    message + " (data.strict=true: remove them or set data.strict=false)"
                )
            scan.warnings.append(message + " (data.strict=true makes this an error)")
        return scan

    def _split_folders(self) -> dict[str, Path]:
        """{split: folder} of root/{train,val,test}/ layouts; {} when there are none."""
        found = {}
        for split, candidates in SPLIT_FOLDERS.items():
            for candidate in candidates:
                if (self.root / candidate / self.images_dir).is_dir():
                    found[split] = self.root / candidate
                    break
        if found and not {"train", "test"} <= set(found):
            missing = " and ".join(f"{s}/" for s in ("train", "test") if s not in found)
            raise DataError(
                f"{self.root} has split folders ({', '.join(f'{p.name}/' for p in found.values())}) "
                f"but no {missing} with {self.images_dir}/ and {self.masks_dir}/ inside: add it, "
                f"or put every pair in {self.images_dir}/ + {self.masks_dir}/ for a seeded split"
            )
        return found

    def _pair(self, folder: Path, unpaired: list[str]) -> dict[str, tuple[Path, Path]]:
        """{stem: (image, mask)} of folder/images_dir and folder/masks_dir; files that are
        not pairs are added to `unpaired`."""
        images_dir, masks_dir = folder / self.images_dir, folder / self.masks_dir
        if not images_dir.is_dir():
            if not any(folder.iterdir()):
                raise DataError(
                    f"data.root={folder} is empty: put the images in {self.images_dir}/ and the "
                    f"masks in {self.masks_dir}/ there"
                )
            raise DataError(
                f"no {self.images_dir}/ folder in {folder}: data=folder reads "
                f"{self.images_dir}/ + {self.masks_dir}/ or train/, val/, test/ holding them; "
                "set data.images_dir and data.masks_dir to your folder names"
            )
        if not masks_dir.is_dir():
            raise DataError(
                f"no masks folder {masks_dir}: put the masks there (paired with images by file "
                "stem), or set data.masks_dir to the folder that holds them"
            )
        shared = images_dir.resolve() == masks_dir.resolve()
        if shared and not self.mask_suffix:
            raise ConfigError(
                f"data.images_dir and data.masks_dir are one folder ({images_dir}): set "
                "data.mask_suffix (e.g. _mask) to tell masks from images"
            )
        images, masks = {}, {}
        for path in sorted(images_dir.iterdir()):
            is_mask = shared and path.stem.endswith(self.mask_suffix)
            if not is_mask and self._is_image(path, unpaired):
                _add_unique(images, path.stem, path, "images")
        for path in sorted(masks_dir.iterdir()):
            if shared and not path.stem.endswith(self.mask_suffix):
                continue
            if not self._is_image(path, unpaired):
                continue
            if self.mask_suffix and not path.stem.endswith(self.mask_suffix):
                unpaired.append(f"{path} (no {self.mask_suffix} suffix)")
                continue
            _add_unique(masks, path.stem[: len(path.stem) - len(self.mask_suffix)], path, "masks")
        unpaired += [f"{images[s]} (no mask)" for s in sorted(set(images) - set(masks))]
        unpaired += [f"{masks[s]} (no image)" for s in sorted(set(masks) - set(images))]
        pairs = {stem: (images[stem], masks[stem]) for stem in sorted(set(images) & set(masks))}
        if not pairs:
            what = (
                f"{len(images)} images and {len(masks)} masks" if images or masks else "no images"
            )
            raise DataError(
                f"no image/mask pairs in {images_dir} and {masks_dir} ({what}): an image "
                f"12.jpg pairs with a mask 12{self.mask_suffix or ''}.png; set data.mask_suffix "
                "if mask names end in a suffix such as _mask"
            )
        return pairs

    @staticmethod
    def _is_image(path: Path, unpaired: list[str]) -> bool:
        if (
            path.is_file()
            and path.suffix.lower() in IMAGE_SUFFIXES
            and not path.name.startswith(".")
        ):
            return True
        unpaired.append(f"{path} (not an image file)")
        return False

    def _check_pairs(self, scan: FolderScan) -> None:
        """Decode every mask: skip unreadable pairs, raise on what no rule maps, warn once
        per workaround (JPEG thresholding, resizing)."""
        bad_values: Counter = Counter()
        bad_files: list[str] = []
        thresholded, resized = [], []
        for name, (image_path, mask_path) in scan.pairs.items():
            try:
                with Image.open(image_path) as image:
                    size = oriented_size(image)
                    image.draft(image.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                    image.load()
            except UNREADABLE as error:
                scan.skipped[name] = f"image unreadable: {image_path} ({error})"
                continue
            try:
                pixels = load_mask_pixels(mask_path)
            except UNREADABLE as error:
                scan.skipped[name] = f"mask unreadable: {mask_path} ({error})"
                continue
            try:
                mask, encoding = self._decode(mask_path, pixels, image_path, size)
            except MaskValueError as error:
                pixels_count = max(pixels.shape[0] * pixels.shape[1], 1)
                bad_values.update({v: s * pixels_count for v, s in error.values.items()})
                bad_files.append(str(mask_path))
                continue
            if pixels.shape[:2] != (size[1], size[0]):
                resized.append(
                    f"{mask_path.name} {pixels.shape[1]}x{pixels.shape[0]} for {size[0]}x{size[1]}"
                )
            if encoding == THRESHOLDED:
                thresholded.append(mask_path.name)
            scan.encodings[encoding] += 1
            valid = np.count_nonzero(mask != 255)
            scan.foreground[name] = float(np.count_nonzero(mask == 1)) / max(valid, 1)
        if bad_files:
            total = sum(bad_values.values())
            shares = {v: c / total for v, c in sorted(bad_values.items())}
            raise DataError(
                f"{len(bad_files)} masks have values no rule maps ({', '.join(bad_files[:3])}"
                f"{' ...' if len(bad_files) > 3 else ''}): values found {describe_values(shares)}; "
                "set data.foreground_values to the values that mean foreground (e.g. "
                "data.foreground_values=[1,2]) or data.foreground_values=nonzero"
                + (
                    ""
                    if self.ignore_value is not None
                    else ", and data.ignore_value to a value to leave out"
                )
            )
        if scan.foreground and not any(scan.foreground.values()):
            raise DataError(
                f"every mask under {self.root} is empty (no foreground pixel once decoded as "
                f"{', '.join(scan.encodings)}): check that {self.masks_dir}/ holds the masks, "
                "and data.foreground_values / data.ignore_value"
            )
        if thresholded:
            scan.warnings.append(
                f"{len(thresholded)} masks are greyscale with values between 0 and 255 (JPEG "
                f"artefacts, e.g. {', '.join(thresholded[:3])}): thresholded at the midpoint, "
                "foreground >= 128; save masks as PNG to keep them exact"
            )
        if resized:
            scan.warnings.append(
                f"{len(resized)} masks differ in size from their images with the same aspect "
                f"ratio (e.g. {'; '.join(resized[:3])}): resized to the image nearest-neighbour"
            )

    def _decode(
        self, mask_path: Path, pixels: np.ndarray, image_path: Path, size: tuple[int, int]
    ) -> tuple[np.ndarray, str]:
        """0 / 1 / 255 mask of `pixels` at the image's (width, height) `size`, and its rule."""
        height, width = pixels.shape[:2]
        if (width, height) != size and not same_aspect((width, height), size):
            raise DataError(
                f"mask {mask_path} is {width}x{height} but its image {image_path} is "
                f"{size[0]}x{size[1]}: a different aspect ratio, so segpets cannot resize it to "
                "fit; fix the mask or remove the pair"
            )
        try:
            mask, encoding = decode_mask(pixels, self.foreground_values, self.ignore_value)
        except MaskValueError:
            raise  # the scan gathers these over every mask into one message
        except DataError as error:
            raise DataError(f"{mask_path}: {error}") from None
        return fit_to_image(mask, size), encoding

    def _split(self, scan: FolderScan, by_folder: dict[str, list[str]] | None) -> None:
        """Fill `scan.splits` from given splits, split folders, split files or a seeded split."""
        usable = dict(scan.foreground)
        if self.given_splits is not None:
            for names in self.given_splits.values():
                missing = [n for n in names if n not in scan.pairs]
                if missing:
                    raise DataError(
                        f"data.splits (the run's stored split) names {len(missing)} stems with no "
                        f"image/mask pair under {self.root} (e.g. {', '.join(missing[:3])}): point "
                        "data.root at the data the run was trained on"
                    )
            scan.splits = {split: list(self.given_splits[split]) for split in SPLITS}
            scan.split_origin = "data.splits (a run's stored split)"
            return
        if by_folder is not None:
            scan.splits = {split: by_folder.get(split, []) for split in SPLITS}
            scan.split_origin = "the split folders"
        elif (self.root / SPLIT_FILES).is_dir():
            scan.splits = self._read_split_files(scan)
            scan.split_origin = f"{self.root / SPLIT_FILES}/*.txt"
        else:
            scan.splits = stratified_split(usable, self.split_fractions, self.split_seed)
            scan.split_origin = (
                f"a seeded split stratified by foreground share (data.split_fractions="
                f"{list(self.split_fractions)}, data.split_seed={self.split_seed})"
            )
            return
        if not scan.splits["val"]:
            train = {n: usable[n] for n in scan.splits["train"] if n in usable}
            share = self.split_fractions[1] / (self.split_fractions[0] + self.split_fractions[1])
            carved = stratified_split(train, (1 - share, share), self.split_seed, ("train", "val"))
            skipped_train = [n for n in scan.splits["train"] if n not in usable]
            scan.splits["train"] = sorted(carved["train"] + skipped_train)
            scan.splits["val"] = carved["val"]
            scan.split_origin += f", val carved from train (data.split_seed={self.split_seed})"

    def _read_split_files(self, scan: FolderScan) -> dict[str, list[str]]:
        folder = self.root / SPLIT_FILES
        splits: dict[str, list[str]] = {}
        seen: dict[str, str] = {}
        for split in SPLITS:
            path = folder / f"{split}.txt"
            if not path.is_file():
                if split == "val":
                    splits[split] = []
                    continue
                raise DataError(
                    f"{folder} has no {split}.txt: add it (one stem a line), or remove "
                    f"{folder} for a seeded split by data.split_fractions"
                )
            names = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                stem = line.strip()
                if not stem or stem.startswith("#"):
                    continue
                stem = Path(stem).stem if Path(stem).suffix.lower() in IMAGE_SUFFIXES else stem
                if stem not in scan.pairs:
                    raise DataError(
                        f"{path} line {number}: {stem} has no image/mask pair in "
                        f"{self.images_dir}/ + {self.masks_dir}/: remove the line or add the files"
                    )
                if stem in seen:
                    raise DataError(
                        f"{path} line {number}: {stem} is also in {seen[stem]}: a stem belongs "
                        "to one split"
                    )
                seen[stem] = path.name
                names.append(stem)
            splits[split] = names
        left = len(scan.pairs) - len(seen)
        if left:
            scan.warnings.append(
                f"{left} pairs under {self.root} are in no file of {folder} and are not used"
            )
        return splits


def _check_given_splits(splits: Any) -> dict[str, list[str]] | None:
    if splits is None:
        return None
    try:
        given = {split: [str(n) for n in splits[split]] for split in SPLITS}
    except (KeyError, TypeError):
        raise ConfigError(
            "data.splits must be null (find the split) or {train: [stems], val: [stems], "
            f"test: [stems]}}, as train stores it; got {splits!r}"
        ) from None
    return given


def _add_unique(found: dict[str, Path], stem: str, path: Path, what: str) -> None:
    if stem in found:
        raise DataError(
            f"two {what} with stem {stem}: {found[stem]} and {path}: rename or remove one "
            "(images and masks pair by file stem)"
        )
    found[stem] = path


class FolderDataset(SegmentationDataset):
    """One split of a `FolderSource` as dicts {"image", "mask" (1, H, W) uint8, "name"}."""

    def __init__(
        self,
        source: FolderSource,
        split: str,
        transform: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(source, split, transform)
