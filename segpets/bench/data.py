"""The `data` section: samples per second of the train dataset, decoded or cached, per
augmentation preset; and whether data.root holds a dataset to time at all."""

import statistics
from pathlib import Path
from time import perf_counter
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import Dataset

from segpets.data.augment import PRESETS, augment_preset
from segpets.data.oxford_pet import check_layout
from segpets.errors import DataError


def train_size(cfg: DictConfig) -> int:
    """The side of the training batches: data.train_size where the data config has one."""
    return cfg.data.get("train_size") or cfg.data.image_size


def data_root(cfg: DictConfig) -> Path:
    """The folder the loader and data sections read: data.root."""
    return Path(cfg.data.root)


def dataset_status(cfg: DictConfig) -> str | None:
    """Why the loader and data sections cannot read data.root, naming the option; None when
    it holds a dataset, or when prepare_data will make one (data=synthetic generates it,
    data.download=true fetches it)."""
    if cfg.data.get("synthetic") is not None or cfg.data.get("download"):
        return None
    try:
        check_layout(data_root(cfg))
    except DataError as error:
        return f"skipped: no dataset in data.root={cfg.data.root}. {error}"
    return None


def data_section(cfg: DictConfig) -> dict[str, Any]:
    """Samples per second of the train dataset in this process, i.e. per loader worker:
    decode (or cache read), augment, normalise, to tensor; no collation.

    Throughput is `data_images` samples over the time they take together, not a median
    of per-sample times: with transforms applied at p=0.5 (the strong preset's elastic
    warp) the sample times split into two groups and their median lands between them.
    Each pass reseeds the augmentations, so the decoded and the cached pass draw the same
    transforms; the passes alternate `rounds` times and the median pass counts.
    Without a dataset in data.root, only a "status" saying so.
    """
    root = data_root(cfg)
    size = train_size(cfg)  # the augment presets' output, as training loads it
    results: dict[str, Any] = {"root": str(root), "image_size": size}
    status = dataset_status(cfg)
    if status is not None:
        return {**results, "status": status}
    for augment in PRESETS:
        transforms = augment_preset(augment, size)
        datasets = {}
        for cache in (False, True):
            datamodule = instantiate(
                cfg.data, root=str(root), augment=transforms, num_workers=0, cache=cache
            )
            try:
                datamodule.prepare_data()
                datasets["cached" if cache else "decoded"] = datamodule.dataset("train")
            except DataError as error:
                return {**results, "status": f"no usable dataset in data.root: {error}"}
        rates = samples_per_second(datasets, cfg.data_images, cfg.rounds, cfg.seed)
        results[augment] = {
            "decoded_img_s": rates["decoded"],
            "cached_img_s": rates["cached"],
            "cache_speedup": rates["cached"] / rates["decoded"],
        }
    results["status"] = "ok"
    return results


def samples_per_second(
    datasets: dict[str, Dataset], count: int, rounds: int, seed: int
) -> dict[str, float]:
    """Each dataset's throughput: `count` samples over their total time, median of
    `rounds` alternating passes (after one untimed pass, so the files are in the page
    cache either way), each pass starting from the augmentations' `seed`."""
    times: dict[str, list[float]] = {name: [] for name in datasets}
    for timed in [False] + [True] * rounds:
        for name, dataset in datasets.items():
            dataset.seed_augmentations(seed)
            start = perf_counter()
            for index in range(count):
                dataset[index % len(dataset)]
            if timed:
                times[name].append(perf_counter() - start)
    return {name: count / statistics.median(passes) for name, passes in times.items()}
