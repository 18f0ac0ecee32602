"""scripts/gpu_check.py --dry-run: every step runs tiny on the CPU and lands in one JSON."""

import json
import math
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO_ROOT

# The dry run benches one model; on a GPU the script also benches "unet".
STEPS = ["machine", "pytest", "bench-resnet34_unet", "train"]
STATUSES = {"ok", "failed", "timeout", "skipped"}


def fraction(value: object) -> bool:
    return isinstance(value, int | float) and 0.0 <= value <= 1.0


@pytest.mark.slow
def test_dry_run_writes_every_step_and_the_training_figures(tmp_path):
    out = tmp_path / "tmp" / "x.json"
    process = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "gpu_check.py"),
            "--dry-run",
            "--out",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    # 0: every step ok; 1: some step failed, recorded in the JSON. Anything else is a crash.
    assert process.returncode in (0, 1), process.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True
    assert report["ok"] == (process.returncode == 0)

    machine = report["machine"]
    assert machine["torch"] == torch.__version__ and machine["cpu_count"] >= 1
    assert {"cpu", "cpu_isa", "gpu", "gpu_bf16", "cuda", "python"} <= set(machine)

    steps = {step["name"]: step for step in report["steps"]}
    assert [step["name"] for step in report["steps"]] == STEPS
    for step in steps.values():
        assert step["status"] in STATUSES, step
        assert step["command"].startswith(sys.executable), step
        assert isinstance(step["seconds"], int | float), step
        if step["status"] != "ok":
            assert step["error"], step
    for name in ("machine", "pytest", "bench-resnet34_unet", "train"):
        assert steps[name]["status"] == "ok", steps[name].get("output_tail")

    counts = steps["pytest"]["figures"]
    assert counts["failed"] == counts["errors"] == 0
    if not torch.cuda.is_available():
        # Every gpu test is skipped here, with the conftest's reason.
        assert counts["skipped"] > 0 and counts["passed"] == 0
        assert any("needs a CUDA GPU" in line for line in counts["details"])

    train = steps["train"]["figures"]
    assert isinstance(train["epochs"], int) and train["epochs"] >= 1
    assert train["global_step"] >= 1
    assert fraction(train["val_dice"]) and fraction(train["test_dice"])
    assert train["train_seconds"] > 0
    assert train["precision"] == "32-true"

    figures = steps["bench-resnet34_unet"]["figures"]
    assert figures["settings"]["image_size"] == 32
    assert math.isfinite(figures["plain"]["img_s"]) and figures["plain"]["img_s"] > 0
    assert figures["loader"]["status"] == "ok" and figures["loader"]["workers"]
    assert figures["raw"]["settings"]["device"] == "cpu"
    assert figures["data"]["status"] == "ok" and figures["data"]["basic"]["cached_img_s"] > 0
