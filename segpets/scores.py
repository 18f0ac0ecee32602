"""Per-image scores on disk: the CSV that training and eval write and the report pairs by image.

One row per image: `name`, `dice`, `iou`, `true_fraction` and `pred_fraction` (the pet's
share of the valid pixels in the truth and in the prediction). Training writes the test
split's rows to `test_per_image.csv` beside metrics.json (with data.folds, the val fold's
to `val_per_image.csv`, with a `fold` column); eval writes `per_image.csv`.
"""

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segpets.checkpointing import write_atomically

FIELDS = ("name", "dice", "iou", "true_fraction", "pred_fraction")
TEST_SCORES = "test_per_image.csv"
VAL_SCORES = "val_per_image.csv"  # with data.folds: the val fold's, with a `fold` column


def write_scores(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write `rows` (dicts with FIELDS; other keys are kept as extra columns) atomically."""
    rows = list(rows)
    extra = sorted({key for row in rows for key in row} - set(FIELDS))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[*FIELDS, *extra], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue().encode())


def _numeric(value: str | None) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def read_scores(path: str | Path) -> dict[str, dict[str, float]]:
    """{image name: {score: value}} from a per-image CSV; non-numeric columns are dropped."""
    scores: dict[str, dict[str, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            scores[row["name"]] = {
                key: float(value) for key, value in row.items() if key != "name" and _numeric(value)
            }
    return scores


def scored_data(data: Any, split: str, images: int, datamodule: Any = None) -> dict[str, Any]:
    """What per-image scores were measured on (metrics.json's `test_data`): runs pair by
    image only on the same set. `data` is the run's data config; the datamodule's own
    description where it has one (a folder's test split with its hash)."""
    if split == "test" and hasattr(datamodule, "test_data"):
        return {**datamodule.test_data(), "images": images}
    return {
        "dataset": str(data.get("_target_")),
        "root": os.path.abspath(str(data.get("root"))),
        "split": split,
        "boundary": str(data.get("boundary")),
        "images": images,
    }
