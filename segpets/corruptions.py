"""Robustness: the eval split scored again under corrupted photos (`corruptions=standard`).

A `CorruptionSuite` holds named `Corruption`s, each an Albumentations transform whose
parameters take one fixed value per severity (1..5 in configs/corruptions/standard.yaml;
severity 0 is the photo unchanged). The corruption touches the image alone, on the photo
as the split's dataset decodes it (full size, or the cache's squares with `data.cache`),
before the eval transform resizes and normalises it: `CorruptedDataset` wraps the split
and puts the corruption in front of that transform. One loader serves every corruption
and severity in turn, at eval's batch size and worker settings.

Albumentations draws from its own generators, deaf to global seeds, so every image is
corrupted from a seed of its own, derived from the suite's `seed` (eval's `seed`), the
corruption's name and the image's name: the same seed gives the same corrupted photos
whatever the batch size, worker count or order, and the severities of one corruption
share their random draws (noise pattern, blur angle, hole position) and differ only in
strength.

eval writes, beside metrics.json:

- `robustness.csv`: one row per (corruption, severity) with columns `corruption`,
  `severity`, `dice`, `iou` (means of the per-image scores, as eval's `dice` and `iou`)
  and `images`; the first row is `clean`, severity 0, eval's own `dice` and `iou`.
- `robustness_per_image.csv`: the per-image scores behind it, long format, one row per
  (image, corruption, severity): `name`, `corruption`, `severity`, `dice`, `iou`. The
  `clean` rows (severity 0) are eval's per_image.csv scores. Rows of two runs on the same
  split pair by (`name`, `corruption`, `severity`); a run's mean corruption Dice per image
  is the mean of its non-clean rows for that image.
- `robustness.png`: Dice against severity, one line per corruption, clean as a dashed line.

and adds to metrics.json `mean_corruption_dice` (the mean of the corrupted rows' Dice over
every corruption and severity), `relative_robustness` (that over the clean Dice),
`corruption_dice` ({corruption: mean Dice over its severities}) and `corruptions` (the
names, severities and seed).
"""

import copy
import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from segpets.checkpointing import write_atomically
from segpets.errors import ConfigError, SegpetsError
from segpets.metrics import per_image_scores_from_probabilities

CLEAN = "clean"
TABLE = "robustness.csv"
PER_IMAGE = "robustness_per_image.csv"
PLOT = "robustness.png"
TABLE_FIELDS = ("corruption", "severity", "dice", "iou", "images")
PER_IMAGE_FIELDS = ("name", "corruption", "severity", "dice", "iou")

View = tuple[torch.Tensor, torch.Tensor, Sequence[str]]
"""Probabilities, masks and image names at the size eval scores them."""


def _plain(value: Any) -> Any:
    """Hydra's containers as lists and dicts; lists as tuples (Albumentations' ranges)."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list):
        return tuple(_plain(item) for item in value)
    return value


class Corruption:
    """An Albumentations transform whose parameters take one fixed value per severity.

    `transform` builds the transform from keyword arguments (a `_partial_` config, e.g.
    albumentations.GaussNoise); `levels` maps each varied parameter to its values at
    severities 1, 2, ...; a range parameter gets a range of one value, e.g. `std_range:
    [[0.08, 0.08], [0.12, 0.12], ...]`, so that each severity is one strength.
    """

    def __init__(
        self,
        transform: Callable[..., A.BasicTransform],
        levels: Mapping[str, Sequence[Any]],
    ) -> None:
        if not callable(transform):
            raise ConfigError(
                "a corruption's transform must build an Albumentations transform (a config "
                f"with _target_ and _partial_: true), got {transform!r}"
            )
        levels = {str(name): _plain(values) for name, values in dict(levels).items()}
        counts = {len(values) if isinstance(values, tuple) else 0 for values in levels.values()}
        if not levels or len(counts) != 1 or 0 in counts:
            raise ConfigError(
                "a corruption's levels must map each parameter to a list with one value per "
                f"severity, all lists of the same length, got {levels!r}"
            )
        self.build = transform
        self.levels = levels
        self.severities = counts.pop()
        for severity in range(1, self.severities + 1):
            self.transform(severity)  # a bad parameter fails now, not in a loader

    def transform(self, severity: int) -> A.BasicTransform:
        """The transform at `severity` (0: the identity), always applied."""
        if severity == 0:
            return A.NoOp(p=1.0)
        if not 1 <= severity <= self.severities:
            raise ConfigError(f"severity must be 0..{self.severities}, got {severity!r}")
        params = {name: values[severity - 1] for name, values in self.levels.items()}
        try:
            built = self.build(**params, p=1.0)
        except (TypeError, ValueError) as error:
            build = getattr(self.build, "func", self.build)
            name = getattr(build, "__name__", build)
            why = " ".join(str(error).split())  # pydantic's message spans lines
            raise ConfigError(f"corruption {name} at severity {severity}: {why}") from None
        if not isinstance(built, A.BasicTransform):
            raise ConfigError(f"a corruption must be an Albumentations transform, got {built!r}")
        return built

    def __repr__(self) -> str:
        build = self.build.func if isinstance(self.build, partial) else self.build
        return f"Corruption({getattr(build, '__name__', build)}, {self.levels})"


class CorruptionSuite:
    """The named corruptions eval scores, each at severities 1..N, seeded by `seed`.

    `select` keeps some of them by name (null: all), in the suite's order; a name the suite
    does not hold is a ConfigError that lists the valid ones.
    """

    def __init__(
        self,
        corruptions: Mapping[str, Corruption],
        seed: int = 0,
        select: Sequence[str] | None = None,
    ) -> None:
        corruptions = dict(corruptions)
        for name, corruption in corruptions.items():
            if not isinstance(corruption, Corruption):
                raise ConfigError(
                    f"corruptions.corruptions.{name} must be a Corruption (give it _target_: "
                    f"segpets.corruptions.Corruption), got {corruption!r}"
                )
        if not corruptions:
            raise ConfigError("corruptions.corruptions must name at least one corruption")
        if isinstance(select, str):
            select = [select]
        if select is not None:
            unknown = [str(name) for name in select if name not in corruptions]
            if unknown:
                raise ConfigError(
                    f"unknown corruption {', '.join(map(repr, unknown))} in corruptions.select; "
                    f"valid names: {', '.join(corruptions)}"
                )
            corruptions = {name: corruptions[name] for name in corruptions if name in select}
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"corruptions.seed must be an integer, got {seed!r}")
        self.corruptions = corruptions
        self.seed = seed

    @property
    def names(self) -> list[str]:
        return list(self.corruptions)

    def conditions(self) -> list[tuple[str, int]]:
        """Every (corruption, severity) scored, severities 1..N of each in turn."""
        return [
            (name, severity)
            for name, corruption in self.corruptions.items()
            for severity in range(1, corruption.severities + 1)
        ]

    def pipeline(self, name: str, severity: int) -> A.Compose:
        """The corruption `name` at `severity` as a pipeline seeded per image by the dataset."""
        return A.Compose([self.corruptions[name].transform(severity)])

    def image_seed(self, name: str, image: str) -> int:
        """The seed of corruption `name` on image `image`: the same for every severity."""
        key = f"{self.seed}/{name}/{image}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")

    def corrupt(self, image: np.ndarray, name: str, severity: int, image_name: str) -> np.ndarray:
        """`image` (H, W, 3 uint8) under corruption `name` at `severity`, seeded for it."""
        pipeline = self.pipeline(name, severity)
        pipeline.set_random_seed(self.image_seed(name, image_name))
        return pipeline(image=image)["image"]

    def describe(self) -> dict[str, Any]:
        return {
            "names": self.names,
            "severities": {name: c.severities for name, c in self.corruptions.items()},
            "seed": self.seed,
        }


class _CorruptThenTransform:
    """The corruption on the image alone, then the split's own transform on image and mask."""

    def __init__(self, corruption: A.Compose, transform: Callable[..., dict[str, Any]]) -> None:
        self.corruption = corruption
        self.transform = transform

    def __call__(self, image: np.ndarray, mask: np.ndarray, **targets: Any) -> dict[str, Any]:
        image = self.corruption(image=image)["image"]
        return self.transform(image=image, mask=mask, **targets)


class CorruptedDataset(Dataset):
    """A split's dataset (a copy; the original is untouched) whose photos go through one
    corruption at one severity before its transform, each seeded by its image's name."""

    def __init__(self, dataset: Any, suite: CorruptionSuite, name: str, severity: int) -> None:
        self.suite = suite
        self.name = name
        self.corruption = suite.pipeline(name, severity)
        self.dataset = copy.copy(dataset)
        self.dataset.transform = _CorruptThenTransform(self.corruption, dataset.transform)
        self.names = dataset.names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.corruption.set_random_seed(self.suite.image_seed(self.name, self.names[index]))
        return self.dataset[index]


class _Conditions(Dataset):
    """Several CorruptedDatasets end to end, so that one loader (one set of worker
    processes) serves every condition: item k is image k % n of condition k // n."""

    def __init__(self, datasets: Sequence[CorruptedDataset]) -> None:
        self.datasets = list(datasets)
        self.images = len(self.datasets[0])

    def __len__(self) -> int:
        return self.images * len(self.datasets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.datasets[index // self.images][index % self.images]

    def batches(self, batch_size: int) -> list[list[int]]:
        """Batches of at most `batch_size` that never mix two conditions, in order."""
        return [
            list(range(start, min(start + batch_size, first + self.images)))
            for first in range(0, len(self), self.images)
            for start in range(first, first + self.images, batch_size)
        ]


def build_corruptions(config: Any) -> CorruptionSuite | None:
    """The suite the `corruptions` config group names (None for corruptions=none)."""
    if config is None:
        return None
    try:
        suite = instantiate(config, _convert_="all") if isinstance(config, DictConfig) else config
    except InstantiationException as error:  # Hydra wraps what the constructors raise
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, SegpetsError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise ConfigError(f"corruptions: {' '.join(str(error).split())}") from error
    if not isinstance(suite, CorruptionSuite):
        raise ConfigError(
            "corruptions must be a CorruptionSuite (configs/corruptions/: none | standard), "
            f"got {suite!r}"
        )
    return suite


@dataclass
class Robustness:
    """What the corruption benchmark measured: the table, the per-image rows, the summary."""

    table: list[dict[str, Any]]
    per_image: list[dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """Two lines for eval's printout: the means, then each corruption's mean Dice."""
        metrics = self.metrics
        clean = self.table[0]["dice"]
        worst = sorted(metrics["corruption_dice"].items(), key=lambda item: item[1])
        return (
            f"robustness: mean corruption Dice {metrics['mean_corruption_dice']:.4f} vs clean "
            f"{clean:.4f} (relative {metrics['relative_robustness']:.3f}) over "
            f"{len(self.table) - 1} corruption x severity conditions\n"
            "  by corruption (mean over severities, worst first): "
            + ", ".join(f"{name} {dice:.4f}" for name, dice in worst)
        )


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def score_corruptions(
    suite: CorruptionSuite,
    dataset: Any,
    batch_size: int,
    loader_options: Mapping[str, Any],
    views_of: Callable[[dict[str, Any]], Iterable[View]],
    threshold: float,
    clean: Mapping[str, Any],
    clean_rows: Iterable[Mapping[str, Any]],
) -> Robustness:
    """Score `dataset` under every condition of `suite`.

    The batches are eval's size and `loader_options` (workers, pinning), from one loader
    over all conditions, so that worker processes start once; `views_of` turns a batch into the
    (probabilities, masks, names) eval scores (at the input size or the photos'); `clean`
    is eval's report (its `dice`, `iou`, `images` make the clean row) and `clean_rows` its
    per-image rows.
    """
    per_image = [
        {"name": row["name"], "corruption": CLEAN, "severity": 0, "dice": row["dice"],
         "iou": row["iou"]}
        for row in clean_rows
    ]  # fmt: skip
    table = [
        {"corruption": CLEAN, "severity": 0, "dice": float(clean["dice"]),
         "iou": float(clean["iou"]), "images": int(clean["images"])}
    ]  # fmt: skip
    conditions = suite.conditions()
    data = _Conditions([CorruptedDataset(dataset, suite, *each) for each in conditions])
    batches = data.batches(batch_size)
    loader = DataLoader(data, batch_sampler=batches, **loader_options)
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {each: [] for each in conditions}
    for indices, batch in track(
        zip(batches, loader, strict=True),
        total=len(batches),
        description="corruptions",
        transient=True,
    ):
        name, severity = conditions[indices[0] // data.images]
        for probs, masks, names in views_of(batch):
            scores = per_image_scores_from_probabilities(probs, masks, threshold)
            dice, iou = scores["dice"].tolist(), scores["iou"].tolist()
            for index, image in enumerate(names):
                rows[name, severity].append(
                    {"name": image, "corruption": name, "severity": severity,
                     "dice": dice[index], "iou": iou[index]}
                )  # fmt: skip
    for (name, severity), scored in rows.items():
        per_image += scored
        table.append(
            {"corruption": name, "severity": severity,
             "dice": _mean(row["dice"] for row in scored),
             "iou": _mean(row["iou"] for row in scored), "images": len(scored)}
        )  # fmt: skip
    corrupted = table[1:]
    mean_dice = _mean(row["dice"] for row in corrupted)
    metrics = {
        "mean_corruption_dice": mean_dice,
        "relative_robustness": mean_dice / table[0]["dice"] if table[0]["dice"] else float("nan"),
        "corruption_dice": {
            name: _mean(row["dice"] for row in corrupted if row["corruption"] == name)
            for name in suite.names
        },
        "corruptions": suite.describe(),
    }
    return Robustness(table, per_image, metrics)


def _write_csv(path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue().encode())


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """robustness.csv's rows with numbers as numbers."""
    with open(path, newline="") as f:
        return [
            {"corruption": row["corruption"], "severity": int(row["severity"]),
             "dice": float(row["dice"]), "iou": float(row["iou"]), "images": int(row["images"])}
            for row in csv.DictReader(f)
        ]  # fmt: skip


def plot_robustness(table: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Dice against severity, one line per corruption; the clean Dice as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    clean = table[0]["dice"]
    names = list(dict.fromkeys(row["corruption"] for row in table[1:]))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.axhline(clean, color="black", linestyle="--", linewidth=1.2, label=f"clean ({clean:.3f})")
    markers = "osD^v<>pPX*h"
    colors = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for index, name in enumerate(names):
        rows = [row for row in table[1:] if row["corruption"] == name]
        ax.plot(
            [row["severity"] for row in rows],
            [row["dice"] for row in rows],
            marker=markers[index % len(markers)],
            color=colors(index),
            label=name,
        )
    ax.set_xlabel("severity")
    ax.set_ylabel("mean per-image Dice")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Dice under corruptions")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_robustness(robustness: Robustness, output_dir: Path) -> list[str]:
    """robustness.csv, robustness_per_image.csv and robustness.png in `output_dir`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(output_dir / TABLE, TABLE_FIELDS, robustness.table)
    _write_csv(output_dir / PER_IMAGE, PER_IMAGE_FIELDS, robustness.per_image)
    plot_robustness(robustness.table, output_dir / PLOT)
    return [TABLE, PER_IMAGE, PLOT]
