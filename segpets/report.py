"""`python -m segpets.report DIR`: one table and one figure comparing the runs under DIR.

DIR is a multirun dir or any folder of runs (a run is a folder with `.hydra/` or
`metrics.json`). Writes `DIR/report.md`, `DIR/report.csv` (one row per run, sorted by
best val Dice, the best marked) and `DIR/curves.png` (loss and Dice per epoch, one line
per run). Curves come from the run's CSV log when it has one, else from its TensorBoard
events. A run without metrics.json is listed as unfinished, never dropped.
"""

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from segpets.cli import USER_ERROR
from segpets.runs import describe

CURVES = ("train/loss_epoch", "val/loss", "train/dice", "val/dice")
COLUMNS = (
    "run", "status", "model", "loss", "upsample", "augment", "precision", "epochs",
    "parameters", "best_val_dice", "best_epoch", "test_dice", "test_dice_dataset",
    "test_iou", "lowest_val_loss_epoch", "train_seconds", "overrides",
)  # fmt: skip


def find_runs(root: Path) -> list[Path]:
    """Every run folder under root (root itself if it is one)."""
    markers = [*root.glob("**/.hydra/config.yaml"), *root.glob("**/metrics.json")]
    runs = {m.parent.parent if m.parent.name == ".hydra" else m.parent for m in markers}
    return sorted(runs)


def read_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values of CURVES, from csv/metrics.csv or the TensorBoard events."""
    curves: dict[str, dict[int, float]] = {name: {} for name in CURVES}
    csv_file = run / "csv" / "metrics.csv"
    if csv_file.is_file():
        with open(csv_file) as f:
            for row in csv.DictReader(f):
                for name in CURVES:
                    if row.get(name) and row.get("epoch"):
                        curves[name][int(row["epoch"])] = float(row[name])
    elif any(run.glob("tensorboard/events.out.tfevents.*")):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        tags = set(events.Tags()["scalars"])
        epoch_at = (
            {e.step: int(e.value) for e in events.Scalars("epoch")} if "epoch" in tags else {}
        )
        for name in CURVES:
            for event in events.Scalars(name) if name in tags else []:
                if event.step in epoch_at:
                    curves[name][epoch_at[event.step]] = event.value
    # train.py validates the best checkpoint once more after fit, logged at epoch
    # max_epochs: that point is not part of the curve.
    trained = set(curves["train/loss_epoch"]) | set(curves["train/dice"])
    if trained:
        for name in ("val/loss", "val/dice"):
            curves[name] = {e: v for e, v in curves[name].items() if e <= max(trained)}
    return {name: sorted(values.items()) for name, values in curves.items()}


def read_run(run: Path, root: Path) -> dict[str, Any]:
    """One report row, from metrics.json if the run finished, else from its saved config."""
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    curves = read_curves(run)
    val_loss = curves["val/loss"]
    row: dict[str, Any] = {
        "run": str(run.relative_to(root)) if run != root else run.name,
        "status": "finished" if metrics else "unfinished or failed",
        "lowest_val_loss_epoch": min(val_loss, key=lambda p: p[1])[0] if val_loss else None,
        "curves": curves,
    }
    if metrics:
        config = OmegaConf.create({})
        hydra_config = run / ".hydra" / "config.yaml"
        if hydra_config.is_file():
            config = OmegaConf.load(hydra_config)
        row.update(describe(config, metrics.get("choices", {})))
        row.update(
            parameters=metrics.get("parameters"),
            best_val_dice=metrics.get("val", {}).get("val/dice"),
            best_epoch=metrics.get("best_epoch"),
            test_dice=metrics.get("test", {}).get("test/dice"),
            test_dice_dataset=metrics.get("test", {}).get("test/dice_dataset"),
            test_iou=metrics.get("test", {}).get("test/iou"),
            train_seconds=metrics.get("train_seconds"),
            overrides=" ".join(metrics.get("overrides", [])),
        )
    elif (run / ".hydra" / "config.yaml").is_file():
        hydra = (
            OmegaConf.load(run / ".hydra" / "hydra.yaml")
            if (run / ".hydra" / "hydra.yaml").is_file()
            else None
        )
        choices = dict(hydra.hydra.runtime.choices) if hydra is not None else {}
        row.update(describe(OmegaConf.load(run / ".hydra" / "config.yaml"), choices))
        overrides_file = run / ".hydra" / "overrides.yaml"
        if overrides_file.is_file():
            row["overrides"] = " ".join(OmegaConf.load(overrides_file))
    return row


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if value < 100 else f"{value:.0f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e6:.2f}M"
    return str(value)


def _varying_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """Each run's overrides minus those every run shares: the legend's labels."""
    sets = [set(str(row.get("overrides", "")).split()) for row in rows]
    common = set.intersection(*sets) if sets else set()
    return [" ".join(sorted(s - common)) or row["run"] for s, row in zip(sets, rows, strict=True)]


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for row, label in zip(rows, _varying_overrides(rows), strict=True):
        for ax, name in zip(axes.flat, CURVES, strict=True):
            points = row["curves"][name]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=label)
        if row["lowest_val_loss_epoch"] is not None:
            axes[0, 1].axvline(row["lowest_val_loss_epoch"], ls=":", lw=0.8, color="grey")
    for ax, name in zip(axes.flat, CURVES, strict=True):
        ax.set_title(name.replace("_epoch", ""))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    figure.suptitle("dotted: epoch of lowest val loss (where overfitting starts)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(root: str | Path) -> dict[str, Path]:
    """Write report.md, report.csv and curves.png into root; return their paths."""
    root = Path(root)
    runs = [run for run in find_runs(root) if run != root or (root / "metrics.json").exists()]
    if not runs:
        raise SystemExit(
            f"segpets.report: no runs under {root} (a run has .hydra/ or metrics.json)"
        )
    rows = [read_run(run, root) for run in runs]
    rows.sort(
        key=lambda row: -1.0 if row.get("best_val_dice") is None else row["best_val_dice"],
        reverse=True,
    )
    best = rows[0] if rows[0].get("best_val_dice") is not None else None

    paths = {"csv": root / "report.csv", "md": root / "report.md", "png": root / "curves.png"}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# segpets report: {root}",
        "",
        f"{len(rows)} runs, sorted by best val Dice (mean per image); ** marks the best.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = [_cell(row.get(column)) for column in COLUMNS]
        if row is best:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    paths["md"].write_text("\n".join(lines) + "\n")
    plot_curves(rows, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m segpets.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("dir", help="a multirun dir or any folder of runs")
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    if not folder.is_dir():
        what = " is a file, not a folder" if folder.exists() else ": no such folder"
        print(
            f"segpets: error: {folder}{what}. Give the folder of a multirun "
            "(logs/train/multiruns/<date>/<time>) or any folder that holds runs",
            file=sys.stderr,
        )
        raise SystemExit(USER_ERROR)
    paths = write_report(args.dir)
    print(Path(paths["md"]).read_text())
    print(f"written: {paths['md']}, {paths['csv']}, {paths['png']}")


if __name__ == "__main__":
    sys.exit(main())
