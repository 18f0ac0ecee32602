"""Procedural pet-like scenes in the official Oxford-IIIT Pet layout.

For runs and tests without the 800 MB download: a textured animal (noisy-outlined body,
head, ears, legs, tail) on a textured background (gradient, blotches, stripes, flat
decoy shapes). Texture alone does not give the pet away, so a model has to learn shape
and context; a small UNet still gets to Dice 0.8-0.9 in minutes. The files go through the
same reader, splits and checks as the real dataset.
"""

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from segpets.errors import ConfigError, DataError

MARKER = "synthetic-pets.json"
VERSION = 1  # bump when scenes change, so existing folders are regenerated

# (name prefix, class-id, species, breed-id): cats capitalised, dogs not, as officially.
BREEDS = (("Stripy", 1, 1, 1), ("spotty", 2, 2, 1))


@dataclass(frozen=True)
class SyntheticPets:
    """Seeded generator: the same parameters always give the same bytes on disk."""

    num_trainval: int = 120
    num_test: int = 40
    min_size: int = 96
    max_size: int = 160
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_trainval < 2 or self.num_test < 1:
            raise ConfigError(
                "data.synthetic.num_trainval must be >= 2 and data.synthetic.num_test >= 1, "
                f"got {self.num_trainval} and {self.num_test}"
            )
        if not 32 <= self.min_size <= self.max_size:
            raise ConfigError(
                "data.synthetic needs 32 <= min_size <= max_size, "
                f"got min_size={self.min_size}, max_size={self.max_size}"
            )

    def names(self) -> list[str]:
        """`<Breed>_<n>` for every sample, trainval ones first."""
        count = self.num_trainval + self.num_test
        return [f"{BREEDS[i % 2][0]}_{i // 2 + 1}" for i in range(count)]

    def scene(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and trimap (H, W) uint8 of sample `index`."""
        rng = np.random.default_rng([self.seed, index])
        height, width = (int(v) for v in rng.integers(self.min_size, self.max_size + 1, 2))
        pet = _pet_mask(rng, height, width, cat=index % 2 == 0)
        inside = np.asarray(pet) > 0
        background = _background(rng, height, width)
        fur = _fur(rng, height, width, striped=index % 2 == 0)
        # Lit from the middle, darker at the outline, as round bodies are.
        shade = np.asarray(pet.filter(ImageFilter.GaussianBlur(min(height, width) / 12)))
        fur *= (0.65 + 0.35 * shade / 255.0)[..., None]
        alpha = np.asarray(pet.filter(ImageFilter.GaussianBlur(0.7)), np.float32)[..., None] / 255
        image = alpha * fur + (1 - alpha) * background
        image += rng.normal(0, rng.uniform(2, 8), image.shape)
        # Border: the pixels within one pixel of the outline, on either side.
        ring = np.asarray(pet.filter(ImageFilter.MaxFilter(3))) != np.asarray(
            pet.filter(ImageFilter.MinFilter(3))
        )
        trimap = np.where(inside, 1, 2).astype(np.uint8)
        trimap[ring] = 3
        return np.clip(image, 0, 255).astype(np.uint8), trimap

    def write(self, root: str | Path) -> Path:
        """Write the dataset to `root` unless it already holds these parameters.

        The files are written to a temporary sibling folder that is then renamed, so other
        processes (DDP ranks) see either no dataset or a complete one.
        """
        root = Path(root)
        params = {"version": VERSION, **asdict(self)}
        if _marker(root) == params:
            return root
        if root.exists() and _marker(root) is None and any(root.iterdir()):
            raise DataError(
                f"{root} exists and holds no synthetic dataset (no {MARKER}); refusing to "
                "overwrite it. Point data.root at a new folder for data=synthetic."
            )
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = root.parent / f".{root.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self._write_files(staging)
            (staging / MARKER).write_text(json.dumps(params, indent=2) + "\n")
            _replace(staging, root, params)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return root

    def _write_files(self, root: Path) -> None:
        (root / "images").mkdir(parents=True)
        (root / "annotations" / "trimaps").mkdir(parents=True)
        lines = []
        for index, name in enumerate(self.names()):
            image, trimap = self.scene(index)
            Image.fromarray(image).save(root / "images" / f"{name}.jpg", quality=90)
            Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
            lines.append(" ".join([name, *(str(v) for v in BREEDS[index % 2][1:])]) + "\n")
        trainval, test = lines[: self.num_trainval], lines[self.num_trainval :]
        annotations = root / "annotations"
        (annotations / "trainval.txt").write_text("".join(trainval))
        (annotations / "test.txt").write_text("".join(test))
        header = f"#Image CLASS-ID SPECIES BREED ID\n#SyntheticPets {asdict(self)}\n"
        (annotations / "list.txt").write_text(header + "".join(lines))


def _marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _replace(staging: Path, root: Path, params: dict) -> None:
    """Move `staging` to `root`; a finished copy from another process wins the race."""
    old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
    if root.exists():
        if _marker(root) == params:
            return
        with contextlib.suppress(FileNotFoundError):  # another process moved it first
            root.rename(old)  # an outdated synthetic dataset (or an empty folder)
    try:
        staging.rename(root)
    except OSError:
        if _marker(root) != params:
            raise
    shutil.rmtree(old, ignore_errors=True)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Colour blotches: a cells x cells random grid upsampled bicubically, float (H, W, 3)."""
    grid = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float32)


def _stripes(rng: np.random.Generator, height: int, width: int, period: float) -> np.ndarray:
    """Waves in [0, 1] (H, W) at a random angle, slightly wobbly."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    phase = x * np.cos(angle) + y * np.sin(angle) + 3 * np.sin(y / rng.uniform(6, 20))
    return 0.5 + 0.5 * np.sin(2 * np.pi * phase / period)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient + blotches + optional stripes + flat decoy shapes (rooms, sofas, lawns)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (x * np.cos(angle) + y * np.sin(angle)) / max(height, width)
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    start, end = rng.uniform(0, 255, (2, 3))
    image = start + (end - start) * t[..., None]
    blotch = _smooth_noise(rng, height, width, int(rng.integers(3, 8)))
    image = (1 - (mix := rng.uniform(0.2, 0.6))) * image + mix * blotch
    if rng.random() < 0.5:
        colour = rng.uniform(0, 255, 3)
        amount = rng.uniform(0.2, 0.5) * _stripes(rng, height, width, rng.uniform(5, 25))[..., None]
        image = (1 - amount) * image + amount * colour
    decoys = Image.new("L", (width, height))
    draw = ImageDraw.Draw(decoys)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * (width, height)
        x1, y1 = (x0, y0) + rng.uniform(0.1, 0.5, 2) * (width, height)
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape([x0, y0, x1, y1], fill=int(rng.integers(1, 256)))
    decoy = np.asarray(decoys)[..., None]
    colours = rng.uniform(0, 255, (256, 3))
    image = np.where(decoy > 0, 0.3 * image + 0.7 * colours[decoy[..., 0]], image)
    return image + rng.normal(0, 4, image.shape)


def _fur(rng: np.random.Generator, height: int, width: int, striped: bool) -> np.ndarray:
    """Base coat with fine fur noise and a breed pattern: stripes (cats) or spots (dogs)."""
    coat, pattern = rng.uniform(0, 255, (2, 3))
    image = coat + 0.25 * (_smooth_noise(rng, height, width, 12) - 128)
    if striped:
        amount = _stripes(rng, height, width, rng.uniform(4, 10)) ** 3
    else:
        spots = _smooth_noise(rng, height, width, int(rng.integers(6, 12)))[..., 0]
        amount = (spots > rng.uniform(150, 200)).astype(np.float32)
    amount *= rng.uniform(0.4, 0.9)
    image = (1 - amount[..., None]) * image + amount[..., None] * pattern
    return image + rng.normal(0, 10, image.shape)  # hair-level grain


def _pet_mask(rng: np.random.Generator, height: int, width: int, cat: bool) -> Image.Image:
    """Silhouette ("L", 255 = pet) of an animal seen from the side, in a random pose."""
    side = min(height, width)
    centre = np.array([rng.uniform(0.35, 0.65) * width, rng.uniform(0.4, 0.65) * height])
    a = side * rng.uniform(0.22, 0.34)  # half length of the body
    b = a * rng.uniform(0.45, 0.7)  # half height
    tilt = rng.uniform(-0.35, 0.35)
    facing = 1 if rng.random() < 0.5 else -1
    along = np.array([np.cos(tilt), np.sin(tilt)]) * facing  # towards the head
    up = np.array([np.sin(tilt), -np.cos(tilt)])

    def at(u: float, v: float) -> tuple[float, float]:
        """A point `u` half-lengths along the body and `v` half-heights up from its centre."""
        x, y = centre + u * a * along + v * b * up
        return float(x), float(y)

    mask = Image.new("L", (width, height))
    draw = ImageDraw.Draw(mask)
    # Body: an ellipse whose radius wobbles with a few low harmonics.
    phi = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    radius = 1 + sum(
        rng.uniform(0, 0.07) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) for k in range(2, 6)
    )
    draw.polygon([at(r * np.cos(p), r * np.sin(p)) for r, p in zip(radius, phi, strict=True)], 255)
    # Legs: four thick strokes down from the belly, feet a little apart.
    leg = max(2, int(b * rng.uniform(0.3, 0.45)))
    length = rng.uniform(1.3, 2.0)
    for u in (-0.7, -0.45, 0.45, 0.7):
        splay = rng.uniform(-0.15, 0.15)
        draw.line([at(u, -0.3), at(u + splay, -length)], fill=255, width=leg)
    # Tail: a curve from the back end.
    lift = rng.uniform(-1, 2)
    tail = [at(-0.9 - 0.5 * s, 0.3 + lift * s * s) for s in np.linspace(0, 1, 8)]
    draw.line(tail, fill=255, width=max(2, int(leg * rng.uniform(0.5, 0.9))), joint="curve")
    # Head on a short neck, with pointed (cat) or floppy (dog) ears.
    r = b * rng.uniform(0.65, 0.9)
    hx, hy = at(1.0 + r / a * 0.6, 0.8)
    draw.line([at(0.7, 0.3), (hx, hy)], fill=255, width=int(r * 1.2))
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=255)
    for side_sign in (-1, 1):
        base = np.array([hx, hy]) + r * np.array([0.55 * side_sign, -0.75])
        if cat:
            tip = base + r * np.array([0.25 * side_sign, -rng.uniform(0.7, 1.1)])
            half_width = np.array([0.45 * r, 0.0])
            points = [base - half_width, base + half_width, tip]
            draw.polygon([(float(px), float(py)) for px, py in points], 255)
        else:
            ear = base + r * np.array([0.5 * side_sign, 0.5])
            w, h = 0.3 * r, 0.6 * r
            draw.ellipse([ear[0] - w, ear[1] - h, ear[0] + w, ear[1] + h], fill=255)
    return mask
