"""How long `python -m segpets.inspect` takes on a dataset the size of Oxford-IIIT Pet.

    python scripts/bench_inspect.py                      # 7,400 photos in /tmp, made once
    python scripts/bench_inspect.py --photos 740 --root /tmp/small

Writes `--photos` generated photos of about 500x375 px and 105 KB (the full dataset's:
colour fields with boxes and noise, an elliptic "pet" with its trimap) in the official layout
under `--root` unless they are there already, then runs the inspector on them as a user
types it and prints the wall time of the whole command (start-up included) and the
figures it reports. The photos are never written into the repository.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "segpets-inspect-bench"
MARKER = "bench-photos.json"
JPEG_QUALITY = 95  # about 105 KB a photo, as the real ones average (decoding time grows with it)


def photo(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An RGB photo about 500x375 px and its trimap (1 pet, 2 background, 3 border):
    a colour field with random boxes and noise for a background, an elliptic pet."""
    width, height = int(rng.integers(440, 501)), int(rng.integers(330, 376))
    if rng.random() < 0.25:  # some portrait photos, as in the real dataset
        width, height = height, width
    coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    background = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(background)
    for _ in range(6):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.05, 0.4) * width, rng.uniform(0.05, 0.4) * height
        draw.rectangle((x, y, x + w, y + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noise = rng.integers(-24, 25, (height, width, 3), dtype=np.int16)
    image = np.clip(np.asarray(background, np.int16) + noise, 0, 255).astype(np.uint8)
    trimap = Image.new("L", (width, height), 2)
    draw = ImageDraw.Draw(trimap)
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    rx, ry = rng.uniform(0.1, 0.3) * width, rng.uniform(0.1, 0.3) * height
    box = (cx - rx, cy - ry, cx + rx, cy + ry)
    draw.ellipse(box, fill=1, outline=3, width=4)
    trimap = np.asarray(trimap)
    pet = trimap != 2
    image[pet] = (image[pet] // 2 + rng.integers(0, 128, 3, dtype=np.uint8)).astype(np.uint8)
    return image, trimap


def write_photos(root: Path, count: int, seed: int = 0) -> None:
    """`count` photos in the Oxford layout under `root`, half trainval and half test."""
    params = {"photos": count, "seed": seed, "version": 3}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(count):
        name = f"photo_{index + 1}"
        image, trimap = photo(rng)
        Image.fromarray(image).save(root / "images" / f"{name}.jpg", quality=JPEG_QUALITY)
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
        lines.append(f"{name} 1 1 1\n")
    half = count // 2
    (root / "annotations" / "trainval.txt").write_text("".join(lines[:half]))
    (root / "annotations" / "test.txt").write_text("".join(lines[half:]))
    marker.write_text(json.dumps(params) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--photos", type=int, default=7400)
    parser.add_argument(
        "--output", type=Path, default=None, help="the run dir (default: a temp dir)"
    )
    parser.add_argument("overrides", nargs="*", help="more inspect options, e.g. workers=1")
    args = parser.parse_args()
    started = time.perf_counter()
    write_photos(args.root, args.photos)
    print(f"photos: {args.photos} in {args.root} (ready in {time.perf_counter() - started:.1f} s)")
    output = args.output or Path(tempfile.mkdtemp(prefix="segpets-inspect-bench-run-"))
    command = [
        sys.executable,
        "-m",
        "segpets.inspect",
        f"data.root={args.root}",
        f"hydra.run.dir={output}",
        *args.overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    fingerprint = json.loads((output / "fingerprint.json").read_text())
    pairs = sum(fingerprint["pairs"].values())
    print(f"command: {' '.join(command[1:])}")
    print(f"inspect: {seconds:.1f} s wall for {pairs} pairs ({pairs / seconds:.0f} pairs/s)")
    print(f"cpu time: {cpu:.1f} s (the command and its workers, user + system)")
    print(f"phases (s): {json.dumps(fingerprint['seconds'])}")
    print(f"cpus: {len(os.sched_getaffinity(0))}; load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
