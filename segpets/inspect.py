"""`python -m segpets.inspect data=folder data.root=DIR`: what a dataset holds, before training.

Builds the data config's DataModule as training does (prepare_data, then each split
through `dm.dataset(split)`) and fingerprints the samples it would use: pairs per split,
image sizes and modes, foreground shares, connected regions per mask, mask encodings,
near-duplicate images across splits and every problem found, with file names. Prints them
as a table and writes into its run dir:

- `fingerprint.json`: keys documented in segpets/data/fingerprint.py (also written to
  `output=PATH` when given);
- `montage.png`: sample photos with their foreground tinted, to see that masks line up
  and are not inverted.
"""

import json
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import track
from rich.table import Table

from segpets.checkpointing import write_atomically
from segpets.cli import CONFIG_PATH, exit_on_user_error, run
from segpets.data.fingerprint import FINGERPRINT, SampleReader, fingerprint, montage
from segpets.data.loading import AUTO, available_cpus
from segpets.data.oxford_pet import SPLITS
from segpets.errors import ConfigError

MONTAGE = "montage.png"


def _check_options(cfg: DictConfig) -> int:
    """The worker count; ConfigErrors for options out of range."""
    for option, minimum in (("duplicate_bits", 0), ("montage", 0), ("shown", 0)):
        value = cfg[option]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{option} must be an integer >= {minimum}, got {value!r}")
    if cfg.duplicate_bits > 64:
        raise ConfigError(
            f"duplicate_bits must be at most 64 (the hash's bits), got {cfg.duplicate_bits}"
        )
    workers = cfg.workers
    if workers == AUTO:
        return available_cpus()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers must be auto or an integer >= 0, got {workers!r}")
    return workers


def _datamodule(cfg: DictConfig) -> Any:
    """The data config's DataModule, reading the files themselves (no decoded-image cache)."""
    options: dict[str, Any] = {"augment": None}
    if "cache" in cfg.data:
        options["cache"] = False
    return instantiate(cfg.data, **options)


def inspect_dataset(cfg: DictConfig) -> dict[str, Any]:
    """Fingerprint `cfg.data`'s dataset; write fingerprint.json and montage.png; return it."""
    workers = _check_options(cfg)
    output_dir = Path(cfg.paths.output_dir)
    started = time.perf_counter()
    datamodule = _datamodule(cfg)
    datamodule.prepare_data()
    datasets = {}
    with SampleReader(workers) as reader:
        for split in SPLITS:
            datasets[split] = datamodule.dataset(split)
            reader.submit(split, datasets[split])
        built = time.perf_counter()
        facts = reader.facts(
            lambda jobs, total: track(jobs, "reading samples", total, transient=True)
        )
    read = time.perf_counter()
    root = Path(datamodule.root)
    result = fingerprint(datasets, facts, root, cfg.duplicate_bits, _source_warnings(datamodule))
    seconds = {"datasets": built - started, "samples": read - built, **result.pop("seconds")}
    result = {"format": result.pop("format"), "source": _source(cfg, root), **result}
    started = time.perf_counter()
    sheet = montage(datasets, cfg.montage)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / FINGERPRINT]
    if sheet is not None:
        write_atomically(output_dir / MONTAGE, lambda file: sheet.save(file, format="PNG"))
        written.append(output_dir / MONTAGE)
    result["montage"] = MONTAGE if sheet is not None else None
    seconds["montage"] = time.perf_counter() - started
    result["seconds"] = {key: round(value, 3) for key, value in seconds.items()}
    text = (json.dumps(result, indent=2) + "\n").encode()
    write_atomically(output_dir / FINGERPRINT, text)
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cfg.output, text)
        written.append(Path(cfg.output))
    _print(result, cfg.shown, written)
    return result


def _source_warnings(datamodule: Any) -> list[str]:
    """What the data source said about the files when it read them (data=folder's scan:
    files that are not pairs, JPEG masks, masks at another scale); none for Oxford."""
    scan = getattr(getattr(datamodule, "source", None), "scan", None)
    return [str(text) for text in getattr(scan(), "warnings", ())] if callable(scan) else []


def _source(cfg: DictConfig, root: Path) -> dict[str, Any]:
    choice = None
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("data")
    return {"data": choice, "target": cfg.data.get("_target_"), "root": str(root.resolve())}


def _spread(values: dict[str, Any], form: str = "{}") -> str:
    if values["min"] is None:
        return "-"
    return " / ".join(form.format(values[key]) for key in ("min", "median", "max"))


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "-"


def _print(result: dict[str, Any], shown: int, written: list[Path]) -> None:
    console = Console()
    size, regions, foreground = result["image_size"], result["regions"], result["foreground"]
    duplicates = result["near_duplicates"]
    table = Table(title=f"{result['source']['root']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("pairs", _counts(result["pairs"])),
        ("width px (min/median/max)", _spread(size["width"], "{:g}")),
        ("height px (min/median/max)", _spread(size["height"], "{:g}")),
        ("aspect w/h (min/median/max)", _spread(size["aspect"], "{:.2f}")),
        ("image modes", _counts(result["image_modes"])),
        ("foreground share (min/median/max)", _spread(foreground, "{:.1%}")),
        ("empty masks", str(foreground["empty"])),
        ("regions per mask (min/median/max)", _spread(regions, "{:g}")),
        (
            "masks with one region",
            "-"
            if regions["one_region_share"] is None
            else f"{regions['one_region']} ({regions['one_region_share']:.1%})",
        ),
        ("mask encodings", _counts(result["mask_encodings"])),
        (
            f"near-duplicates across splits (<= {duplicates['threshold']} bits)",
            str(duplicates["count"]),
        ),
        ("problems", _counts(result["problem_counts"])),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for pair in duplicates["pairs"][:shown]:
        console.print(
            f"near-duplicate: {pair['a']} ~ {pair['b']} ({pair['distance']} of 64 bits differ)"
        )
    for problem in result["problems"][:shown]:
        where = f"{problem['split']}/{problem['name']}: " if problem["name"] is not None else ""
        console.print(f"problem: {where}{problem['problem']}")
    more = len(result["problems"]) - shown
    if more > 0:
        console.print(f"... and {more} more problems in {FINGERPRINT}")
    print("written: " + ", ".join(str(path) for path in written))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="inspect")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    inspect_dataset(cfg)


if __name__ == "__main__":
    run(main)
