"""A dataset's fingerprint: what its files hold, measured once and written as plain JSON.

`python -m segpets.inspect` writes it as `fingerprint.json`; a planner reads it instead of
the files while its `manifest` still matches `root_manifest(data.root)`. Its keys:

- `format`: this layout's version (1). `source`: the data config's `_target_`, `root`
  (absolute) and the `data` option chosen, when known.
- `manifest`: sha256 of every file under `root` (path relative to it, size in bytes, mtime
  in ns; files named fingerprint.json left out), as `root_manifest` computes it: any file
  added, removed or rewritten changes it.
- `pairs`: usable image/mask pairs per split, e.g. {"train": 3312, "val": 368, "test": 3669}.
- `image_size`: `width`, `height` (pixels, EXIF orientation applied) and `aspect` (width /
  height), each {"min", "median", "max"}; `image_modes`: PIL mode -> images (e.g. {"RGB":
  7390, "L": 10}); `channels`: bands -> images.
- `foreground`: the share of each mask's pixels that are foreground, ignored (255) pixels
  left out: {"min", "median", "max", "mean", "empty"} (`empty`: masks without any).
- `regions`: connected foreground regions per mask (8-connectivity): {"min", "median",
  "max", "one_region": masks with exactly one, "one_region_share": that over all masks},
  i.e. how far "one object per image", which `postprocess=largest_region` assumes, holds.
- `mask_encodings`: how the mask files store their values (PIL mode and value set) ->
  masks, e.g. {"trimap {1,2,3}": 7349}, {"L {0,255}": 900, "L many values (JPEG-like)":
  100}, "L {0,1}", "P palette", "RGB {0,255}" (channels agree), "RGB colours".
- `near_duplicates`: images in different splits whose 64-bit difference hashes (dHash of
  a 9x8 greyscale thumbnail) differ in at most `threshold` bits, i.e. leakage between
  splits: {"hash": "dhash64", "threshold", "count", "pairs": [{"a": "train/<name>", "b":
  "test/<name>", "distance", "files": [the two image files]}, ...]} (at most `LISTED`
  pairs, closest first).
- `problems`: [{"split", "name", "kind", "problem" (the reason, with file names), "files"
  (image and mask, where known)}], one per problem found; kinds: "unpaired" (a file
  missing), "unreadable", "size mismatch" (mask and image sizes differ), "left out" (any
  other reason the dataset gave for leaving a sample out), "empty mask" (no foreground),
  "mask not decoded" (values its decoding rule cannot map), "name in two splits", and
  "source warning" (split and name null: what the source said when it was read, e.g.
  data=folder's files that are not image/mask pairs, named, or its JPEG masks).
  `problem_counts`: kind -> count.
- `montage`: the picture of sample images with their masks tinted (file name in the run
  dir). `seconds`: time per phase.
"""

import hashlib
import math
import multiprocessing
import os
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from segpets.data.oxford_pet import UNREADABLE
from segpets.errors import SegpetsError
from segpets.visual import overlay

FORMAT = 1
FINGERPRINT = "fingerprint.json"
HASH = "dhash64"
LISTED = 200
"""Near-duplicate pairs listed in the fingerprint (closest first); `count` has them all."""
MANY_VALUES = 8
"""A greyscale mask with more distinct values than this is "many values (JPEG-like)"."""
EXIF_ORIENTATION = 0x0112
TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
THUMBNAIL = (36, 32)
"""The least size JPEGs are decoded at (draft) before the 9x8 hash thumbnail."""
IGNORE = 255


def root_manifest(root: str | Path) -> str:
    """sha256 of the sorted (relative path, size, mtime in ns) of every file under `root`
    but fingerprints (`FINGERPRINT`), so that one written beside the data still matches."""
    root = Path(root)
    lines = []
    for folder, _, files in os.walk(root):
        for file in files:
            if file == FINGERPRINT:
                continue
            path = Path(folder) / file
            try:
                stat = path.stat()
            except OSError:
                continue
            lines.append(f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def difference_hash(image: Image.Image) -> int:
    """64-bit dHash: a 9x8 greyscale thumbnail, one bit per pair of horizontal neighbours."""
    pixels = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BOX), np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def mask_encoding(mask: Image.Image) -> str:
    """How a mask file stores its values: its PIL mode and value set (see the docstring)."""
    mode = mask.mode
    if mode == "P":
        return "P palette"
    if mode in ("RGB", "RGBA"):
        channels = np.asarray(mask.convert("RGB"))
        if (channels[..., 0] == channels[..., 1]).all() and (
            channels[..., 0] == channels[..., 2]
        ).all():
            return f"RGB {_value_set(np.flatnonzero(np.bincount(channels[..., 0].ravel())))}"
        return "RGB colours"
    # A histogram is much faster than np.unique, for the modes that have one of 256 bins.
    histogram = mode == "L"
    values = np.flatnonzero(mask.histogram()) if histogram else np.unique(np.asarray(mask))
    if set(values.tolist()) <= {1, 2, 3} and 2 in values:  # background is 2 in trimaps
        return "trimap {1,2,3}"
    if len(values) > MANY_VALUES:
        return f"{mode} many values (JPEG-like)"
    return f"{mode} {_value_set(values)}"


def _value_set(values: Iterable[Any]) -> str:
    values = [int(v) for v in values]
    if len(values) > MANY_VALUES:
        return "many values"
    return "{" + ",".join(str(v) for v in values) + "}"


def count_regions(foreground: np.ndarray) -> int:
    """Connected regions of a bool mask, 8-connected: what scipy.ndimage.label counts with
    a 3x3 structure, in a third of its time (OpenCV)."""
    return cv2.connectedComponents(foreground.view(np.uint8), connectivity=8)[0] - 1


def sample_facts(dataset: Any, name: str) -> dict[str, Any]:
    """What the fingerprint needs of one sample, read from its files.

    The photo is opened for its header (size, mode) and decoded at reduced size (JPEG
    draft) for its hash; the mask file is read for its encoding and decoded by the dataset
    (`native_mask`) for its foreground and regions.
    """
    image_path, mask_path = Path(dataset.image_path(name)), Path(dataset.mask_path(name))
    facts: dict[str, Any] = {"name": name, "files": [str(image_path), str(mask_path)]}
    try:
        with Image.open(image_path) as image:
            width, height = image.size
            facts["mode"], facts["channels"] = image.mode, len(image.getbands())
            if image.getexif().get(EXIF_ORIENTATION, 1) in TRANSPOSED:
                width, height = height, width
            # JPEGs decode at 1/2..1/8 scale, still a few times the thumbnail's size.
            image.draft("L", (max(THUMBNAIL[0], width // 8), max(THUMBNAIL[1], height // 8)))
            facts["hash"] = difference_hash(image)
        facts["width"], facts["height"] = width, height
    except UNREADABLE as error:
        return {
            **facts,
            "kind": "unreadable",
            "problem": f"image unreadable: {image_path} ({error})",
        }
    try:
        with Image.open(mask_path) as mask_file:
            mask_file.load()
            facts["mask_size"] = mask_file.size
            facts["encoding"] = mask_encoding(mask_file)
    except UNREADABLE as error:
        return {**facts, "kind": "unreadable", "problem": f"mask unreadable: {mask_path} ({error})"}
    try:
        mask = dataset.native_mask(name)
    except SegpetsError as error:  # values the decoding rule cannot map, for one
        return {**facts, "kind": "mask not decoded", "problem": str(error)}
    foreground = mask == 1
    pixels = foreground.sum()
    scored = mask.size - (mask == IGNORE).sum()
    facts["foreground"] = float(pixels / scored) if scored else 0.0
    facts["regions"] = count_regions(foreground) if pixels else 0
    return facts


def _chunk_facts(split: str, dataset: Any, names: list[str]) -> list[dict[str, Any]]:
    return [{"split": split, **sample_facts(dataset, name)} for name in names]


class SampleReader:
    """`sample_facts` of every sample in `workers` processes (0: this one), taking each
    split as soon as it is built, so that the files are read while the next split's are
    still being checked. Use it as a context manager; `facts()` waits for them all."""

    CHUNKS_PER_WORKER = 4
    """Each split goes out in this many chunks per worker (at least MIN_CHUNK samples
    each): every chunk carries a pickled copy of its dataset, which for data=folder
    includes the whole scan."""
    MIN_CHUNK = 32

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = multiprocessing.get_context().Pool(workers) if workers else None
        self.pending: list[Any] = []

    def __enter__(self) -> "SampleReader":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def submit(self, split: str, dataset: Any) -> None:
        names = list(dataset.names)
        size = max(self.MIN_CHUNK, -(-len(names) // (self.CHUNKS_PER_WORKER * self.workers or 1)))
        for start in range(0, len(names), size):
            chunk = (split, dataset, names[start : start + size])
            if self.pool is None:
                self.pending.append(chunk)
            else:
                self.pending.append(self.pool.apply_async(_chunk_facts, chunk))

    def facts(
        self, progress: Callable[[Iterable, int], Iterable] | None = None
    ) -> list[dict[str, Any]]:
        """Every submitted sample's facts, in the order submitted."""
        pending = progress(self.pending, len(self.pending)) if progress else self.pending
        read = [_chunk_facts(*job) if self.pool is None else job.get() for job in pending]
        return [facts for chunk in read for facts in chunk]


def _spread(values: Sequence[float], digits: int | None = None) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    spread = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    return {k: round(v, digits) if digits is not None else v for k, v in spread.items()}


def near_duplicates(
    hashes: dict[str, tuple[list[str], np.ndarray]], threshold: int
) -> list[tuple[str, int, str, int, int]]:
    """Pairs of images in different splits within `threshold` bits, closest first, as
    (split, index, other split, index there, distance).

    `hashes`: split -> (names, uint64 hashes); the indices are into those lists.
    """
    pairs = []
    splits = list(hashes)
    for first_index, first in enumerate(splits):
        hashes_a = hashes[first][1]
        for second in splits[first_index + 1 :]:
            hashes_b = hashes[second][1]
            if not len(hashes_a) or not len(hashes_b):
                continue
            for start in range(0, len(hashes_a), 512):
                block = hashes_a[start : start + 512, None] ^ hashes_b[None, :]
                distances = np.bitwise_count(block)
                for row, column in zip(*np.nonzero(distances <= threshold), strict=True):
                    distance = int(distances[row, column])
                    pairs.append((first, start + int(row), second, int(column), distance))
    return sorted(
        pairs,
        key=lambda pair: (pair[4], hashes[pair[0]][0][pair[1]], hashes[pair[2]][0][pair[3]]),
    )


def fingerprint(
    datasets: dict[str, Any],
    facts: list[dict[str, Any]],
    root: str | Path,
    threshold: int,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """The fingerprint (see the module docstring) of `datasets` (split -> dataset built
    from the files under `root`) from their samples' `facts` (`SampleReader`), without
    `source` and `montage`; `warnings`, what the source said about files it left out."""
    seconds = {}
    problems = [
        {"split": split, "name": name, "kind": _kind(reason), "problem": reason, "files": []}
        for split, dataset in datasets.items()
        for name, reason in dataset.skipped
    ]
    read = [item for item in facts if "problem" not in item]
    for item in facts:
        if "problem" in item:
            problems.append(_problem(item, item["kind"], item["problem"]))
            continue
        if item["foreground"] == 0:
            problems.append(_problem(item, "empty mask", "empty mask: no foreground pixel"))
        width, height = item["width"], item["height"]
        if tuple(item["mask_size"]) not in ((width, height), (height, width)):
            mask_width, mask_height = item["mask_size"]
            problems.append(
                _problem(
                    item,
                    "size mismatch",
                    f"mask is {mask_width}x{mask_height}, image {width}x{height}",
                )
            )
    problems += _names_in_two_splits(datasets)
    problems += [
        {"split": None, "name": None, "kind": "source warning", "problem": text, "files": []}
        for text in warnings
    ]

    started = time.perf_counter()
    by_split = {split: [item for item in read if item["split"] == split] for split in datasets}
    hashes = {
        split: (
            [item["name"] for item in items],
            np.array([item["hash"] for item in items], np.uint64),
        )
        for split, items in by_split.items()
    }
    duplicates = [
        {
            "a": f"{first}/{by_split[first][a]['name']}",
            "b": f"{second}/{by_split[second][b]['name']}",
            "distance": distance,
            "files": [by_split[first][a]["files"][0], by_split[second][b]["files"][0]],
        }
        for first, a, second, b, distance in near_duplicates(hashes, threshold)
    ]
    seconds["near_duplicates"] = time.perf_counter() - started

    foreground = [item["foreground"] for item in read]
    regions = [item["regions"] for item in read]
    one_region = sum(count == 1 for count in regions)
    return {
        "format": FORMAT,
        "manifest": root_manifest(root),
        "pairs": {split: len(dataset) for split, dataset in datasets.items()},
        "image_size": {
            "width": _spread([item["width"] for item in read]),
            "height": _spread([item["height"] for item in read]),
            "aspect": _spread([item["width"] / item["height"] for item in read], 4),
        },
        "image_modes": dict(Counter(item["mode"] for item in read).most_common()),
        "channels": {
            str(k): v for k, v in Counter(item["channels"] for item in read).most_common()
        },
        "foreground": {
            **_spread(foreground, 6),
            "mean": round(statistics.fmean(foreground), 6) if foreground else None,
            "empty": sum(share == 0 for share in foreground),
        },
        "regions": {
            **_spread(regions),
            "one_region": one_region,
            "one_region_share": round(one_region / len(regions), 6) if regions else None,
        },
        "mask_encodings": dict(Counter(item["encoding"] for item in read).most_common()),
        "near_duplicates": {
            "hash": HASH,
            "threshold": threshold,
            "count": len(duplicates),
            "pairs": duplicates[:LISTED],
        },
        "problems": problems,
        "problem_counts": dict(Counter(problem["kind"] for problem in problems).most_common()),
        "seconds": seconds,
    }


def _problem(item: dict[str, Any], kind: str, problem: str) -> dict[str, Any]:
    return {
        "split": item["split"],
        "name": item["name"],
        "kind": kind,
        "problem": problem,
        "files": item["files"],
    }


def _kind(reason: str) -> str:
    """The kind of a reason a dataset gave for leaving a sample out (see KINDS)."""
    text = reason.lower()
    if "unreadable" in text:
        return "unreadable"
    if "missing" in text or "unpaired" in text or "no image" in text or "no mask" in text:
        return "unpaired"
    if re.search(r"\d+x\d+.*\d+x\d+", text) or "size" in text:
        return "size mismatch"
    return "left out"


def _names_in_two_splits(datasets: dict[str, Any]) -> list[dict[str, Any]]:
    seen: dict[str, str] = {}
    problems = []
    for split, dataset in datasets.items():
        for name in dataset.names:
            if name in seen and seen[name] != split:
                problems.append(
                    {
                        "split": split,
                        "name": name,
                        "kind": "name in two splits",
                        "problem": f"name in two splits: {seen[name]} and {split}",
                        "files": [],
                    }
                )
            seen.setdefault(name, split)
    return problems


# The montage: sample photos with their masks tinted ----------------------------------

CELL = (192, 160)
"""The box (width, height) each photo is shrunk into, keeping its aspect ratio."""
COLUMNS = 4
PADDING = 4
CAPTION = 14


def montage_samples(datasets: dict[str, Any], count: int) -> list[tuple[str, int]]:
    """(split, index) of up to `count` samples, evenly spread over each split in turn."""
    per_split = math.ceil(count / max(1, len(datasets)))
    chosen = []
    for split, dataset in datasets.items():
        size = len(dataset)
        take = min(per_split, size)
        chosen += [(split, (i * size) // take) for i in range(take)] if take else []
    return chosen[:count]


def montage(datasets: dict[str, Any], count: int) -> Image.Image | None:
    """A grid of `count` sample photos, each with its foreground tinted (segpets.visual's
    overlay) and ignored pixels greyed, captioned split/name and foreground share; None
    for `count` 0 or no samples."""
    samples = montage_samples(datasets, count)
    if not samples:
        return None
    font = ImageFont.load_default(size=CAPTION - 3)
    columns = min(COLUMNS, len(samples))
    rows = -(-len(samples) // columns)
    cell_width, cell_height = CELL[0], CELL[1] + CAPTION
    size = (
        columns * (cell_width + PADDING) + PADDING,
        rows * (cell_height + PADDING) + PADDING,
    )
    sheet = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(sheet)
    for number, (split, index) in enumerate(samples):
        dataset = datasets[split]
        name = dataset.names[index]
        image, mask = dataset._decoded(index)
        tinted = overlay(image, mask == 1)
        tinted[mask == IGNORE] = (tinted[mask == IGNORE] // 2 + 64).astype(np.uint8)
        picture = ImageOps.contain(Image.fromarray(tinted), CELL, Image.Resampling.BILINEAR)
        row, column = divmod(number, columns)
        left = PADDING + column * (cell_width + PADDING)
        top = PADDING + row * (cell_height + PADDING)
        share = (mask == 1).mean()
        caption = f"{split}/{name}"[:28] + f" {share:.0%}"
        draw.text((left, top + 1), caption, fill="black", font=font)
        sheet.paste(picture, (left, top + CAPTION))
    return sheet
