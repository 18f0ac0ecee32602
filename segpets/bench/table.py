"""The bench's results as a table on the terminal."""

import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from segpets.data.augment import PRESETS

COLUMNS = ("section", "img/s", "ms/step: median (min-max)", "GFLOP/s", "of peak", "note")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def _timed_row(table: Table, name: str, result: dict[str, Any], note: str = "") -> None:
    spread = f"{_fmt(result['ms_median'])} ({_fmt(result['ms_min'])}-{_fmt(result['ms_max'])})"
    fraction = result.get("fraction_of_peak")
    table.add_row(
        name,
        _fmt(result["img_s"]),
        spread,
        _fmt(result.get("gflops")),
        f"{100 * fraction:.0f} %" if fraction else "-",
        note,
    )


def _note_row(table: Table, name: str, note: str) -> None:
    table.add_row(name, "", "", "", "", note)


def machine_line(machine: dict[str, Any]) -> str:
    """ "AMD EPYC 7B13 (AVX2), 2 threads of 2 CPUs, no GPU, torch 2.x": what the figures
    were measured on."""
    threads = machine["torch_threads"]
    gpu = f"GPU {machine['gpu']}" if machine.get("gpu") else "no GPU"
    return (
        f"{machine['cpu']} ({machine['cpu_isa']}), {threads} thread{'s' if threads != 1 else ''} "
        f"of {machine['cpu_count']} CPUs, {gpu}, torch {machine['torch']}"
    )


def _sizes(settings: dict[str, Any]) -> str:
    """The batches' side, as "128 px", or "96 px (eval 128 px)" where training crops are
    smaller than what validation and inference see."""
    train, size = settings.get("train_size", settings["image_size"]), settings["image_size"]
    return f"{train} px" if train == size else f"{train} px (eval {size} px)"


def _title(settings: dict[str, Any], machine: dict[str, Any] | None) -> str:
    threads = settings["torch_threads"]
    title = (
        f"segpets.bench: {settings['model']}, batch {settings['batch_size']} at "
        f"{_sizes(settings)}, {settings['precision']}"
        f"{', channels_last' if settings['channels_last'] else ''}, {settings['device']} "
        f"({threads} thread{'s' if threads != 1 else ''}), "
        f"median of {settings['steps']} steps"
        f"{' x ' + str(settings['rounds']) + ' rounds' if settings['rounds'] > 1 else ''}"
    )
    return f"{title}\n{machine_line(machine)}" if machine else title


def _precision_rows(table: Table, section: dict[str, Any], settings: dict[str, Any]) -> None:
    fastest = section["fastest"]
    for precision, by_layout in section["variants"].items():
        for layout, result in by_layout.items():
            channels_last = layout == "channels_last"
            notes = [f"{result['speedup_vs_32_true']:.2f} x 32-true"]
            if precision == fastest["precision"] and channels_last == fastest["channels_last"]:
                notes.append("fastest")
            if precision == settings["precision"] and channels_last == settings["channels_last"]:
                notes.append("configured")
            if precision == section["auto_picks"]:
                notes.append("auto picks")
            name = f"precision {precision}{' cl' if channels_last else ''}"
            _timed_row(table, name, result, ", ".join(notes))
    for precision, why in section["skipped"].items():
        _note_row(table, f"precision {precision}", f"skipped: {why}")
    verdict = "the fastest" if section["auto_is_fastest"] else f"not {fastest['precision']}"
    _note_row(
        table,
        "precision auto",
        f"trainer.precision=auto picks {section['auto_picks']} here ({verdict})",
    )


def print_table(results: dict[str, Any], output: Path) -> None:
    """Print `results` (what `bench` returns) as a table, then where the JSON went."""
    settings = results["settings"]
    table = Table(title=_title(settings, results.get("machine")))
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in {"section", "note"} else "right")
    peak = results.get("peak")
    if peak:
        for name, variant in peak["variants"].items():
            note = "peak" if name == peak["best"] else ""
            _timed_row(table, f"conv {name.replace('_cl', ' cl')}", variant, note)
    train = results.get("train")
    if train:
        _note_row(
            table,
            "train cost",
            f"{train['params_m']:.1f} M params, {train['gflop_per_step']:.2f} GFLOP/step (fwd+bwd)",
        )
    for section, name in (("plain", "plain PyTorch"), ("lightning", "segpets Lightning")):
        if section in results:
            result = results[section]
            notes = []
            if "ratio_to_plain" in result:
                notes.append(f"{result['ratio_to_plain']:.2f} x plain time")
            if section == "lightning":
                syncs = sum(result["host_syncs_per_step"].values())
                notes.append(f"{syncs:g} host syncs/step")
            _timed_row(table, name, result, ", ".join(notes))
    smp = results.get("smp")
    if smp:
        if smp["status"] == "ok":
            note = f"{smp['params_m']:.1f} M params, {smp['gflop_per_step']:.2f} GFLOP/step"
            if "plain_gflops_ratio" in smp:
                note += f"; plain reaches {smp['plain_gflops_ratio']:.2f} x its GFLOP/s"
            _timed_row(table, "smp Unet-resnet34", smp, note)
        else:
            _note_row(table, "smp Unet-resnet34", smp["status"])
    if "inference" in results:
        _timed_row(table, "inference", results["inference"])
    if "precision" in results:
        _precision_rows(table, results["precision"], settings)
    loader = results.get("loader")
    if loader:
        if loader["status"] != "ok":
            _note_row(table, "loader", loader["status"])
        for setting, result in loader.items():
            if isinstance(result, dict):
                note = f"augment={loader['augment']}, num_workers={result['num_workers']}"
                _timed_row(table, f"loader workers={setting}", result, note)
    data = results.get("data")
    if data:
        if data["status"] != "ok":
            _note_row(table, "data", data["status"])
        for augment in PRESETS:
            if augment in data:
                row = data[augment]
                table.add_row(f"data {augment}", _fmt(row["decoded_img_s"]), "", "", "", "decoded")
                table.add_row(
                    f"data {augment} cached",
                    _fmt(row["cached_img_s"]),
                    "",
                    "",
                    "",
                    f"{row['cache_speedup']:.1f} x decoded",
                )
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    if data and data["status"] == "ok":
        console.print(f"data: {data['root']} at {data['image_size']} px, one process")
    load = settings["load_average_before"], settings["load_average_after"]
    console.print(
        f"load average before/after: {load[0][0]:.2f} / {load[1][0]:.2f} on "
        f"{settings['cpu_count']} CPUs; peak RSS {results['peak_rss_mb']:.0f} MB; JSON: {output}"
    )
