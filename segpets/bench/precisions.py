"""The `precision` section: the plain training step in each precision and memory layout,
and which precision `trainer.precision=auto` picks on this machine."""

from typing import Any

import torch

from segpets.bench.timing import collect, summarize, time_alternating
from segpets.bench.workload import Workload
from segpets.precision import auto_precision

LAYOUTS = {"contiguous": False, "channels_last": True}
BASELINE = "32-true"


def timed_precisions(device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The precisions the section times on `device`, and those it skips with the reason."""
    precisions, skipped = [BASELINE], {}
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            precisions.append("bf16-mixed")
        else:
            skipped["bf16-mixed"] = f"{torch.cuda.get_device_name()} computes no bfloat16"
        precisions.append("16-mixed")
    else:
        precisions.append("bf16-mixed")
    return precisions, skipped


def precision_section(
    workload: Workload, accelerator: Any, peak: float | None = None
) -> dict[str, Any]:
    """img/s, ms and GFLOP/s of the plain PyTorch training step (the configured model,
    loss, optimizer and batch) for each precision, contiguous and channels_last; the
    fastest variant; and what `auto_precision(accelerator)` picks here.

    All variants start from the same weights and take turns step by step, so a busy spell
    of the machine slows them alike. A precision the machine emulates (bfloat16 on a CPU
    without AVX512-BF16 or AMX) is timed too: that is what the comparison is for.
    """
    precisions, skipped = timed_precisions(workload.device)
    steps = {
        (precision, layout): workload.variant(precision, channels_last).train_step(
            workload.segpets_model()
        )[0]
        for precision in precisions
        for layout, channels_last in LAYOUTS.items()
    }
    timed = time_alternating(
        {f"{precision} {layout}": step for (precision, layout), step in steps.items()},
        workload.steps,
        workload.warmup,
        workload.device,
    )
    del steps
    collect()
    flops = workload.flops("train")
    variants: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        variants[precision] = {
            layout: summarize(timed[f"{precision} {layout}"], workload.batch_size, flops, peak)
            for layout in LAYOUTS
        }
    baseline = variants[BASELINE]["contiguous"]["img_s"]
    for by_layout in variants.values():
        for result in by_layout.values():
            result["speedup_vs_32_true"] = result["img_s"] / baseline
    fastest = max(
        ((precision, layout) for precision in precisions for layout in LAYOUTS),
        key=lambda pair: variants[pair[0]][pair[1]]["img_s"],
    )
    auto = auto_precision(accelerator)
    return {
        "accelerator": str(accelerator),
        "device": str(workload.device),
        "variants": variants,
        "skipped": skipped,
        "fastest": {"precision": fastest[0], "channels_last": LAYOUTS[fastest[1]]},
        "auto_picks": auto,
        "auto_is_fastest": auto == fastest[0],
    }
