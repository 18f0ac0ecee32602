"""Everything segpets wants to know from a CUDA GPU, in one run of under 8 minutes, one JSON.

    python scripts/gpu_check.py --out gpu_check.json        # on the GPU machine (docs/gpu.md)
    python scripts/gpu_check.py --dry-run --out tmp/x.json  # tiny sizes on the CPU, 1-2 minutes

Steps, each a subprocess of this Python run from the repo root with its own timeout; a step
that fails or times out is recorded (status, return code, the end of its output) and the
next one runs:

1. machine: `segpets.precision.machine()` (CPU, GPU, bf16 support, versions).
2. pytest: `pytest -m gpu -q` (tests/reliability/test_gpu.py): passed / failed / skipped counts.
3. bench-resnet34_unet, bench-unet: `python -m segpets.bench` at 256 px, batch 16, sections
   plain, lightning, smp, inference, precision, loader and data (data only in the first:
   it times the data pipeline, which does not depend on the model), on synthetic data.
4. train: `python -m segpets.train experiment=quickstart` for 2 minutes (trainer.max_time).

The whole run keeps within `--budget-s` (default 450 s): each step's timeout is cut to
what is left, and training gets `min(2 minutes, what is left - its start-up and test)`.
The JSON is rewritten after every step, so a run killed midway leaves what it measured.
Scratch files (runs, checkpoints, the synthetic dataset, each step's log) go to
`--work-dir` (default logs/gpu_check/<time>). Exit status: 0 when every step is ok, else 1.
"""

import argparse
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["plain", "lightning", "smp", "inference", "precision", "loader", "data"]
BENCH_MODELS = ("resnet34_unet", "unet")
TAIL_CHARS = 4000
TRAIN_SECONDS = 120
# Training's start-up (CUDA, data generation), final validation and test, and its exit.
TRAIN_OVERHEAD_S = 60
MIN_TRAIN_SECONDS = 20
PYTEST_COUNTS = ("passed", "failed", "skipped", "errors", "deselected", "xfailed", "xpassed")


@dataclass
class Sizes:
    """What the steps run with: on the GPU, or tiny on the CPU for --dry-run."""

    accelerator: str
    bench: list[str]
    models: dict[str, list[str]]
    data: list[str]  # synthetic dataset options shared by the bench and training
    train: list[str]
    train_seconds: int
    budget_s: int
    timeouts: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # extra environment of every step


GPU_SIZES = Sizes(
    accelerator="gpu",
    bench=["data.image_size=256", "data.batch_size=16", "steps=10", "warmup=3", "rounds=2"],
    models={"resnet34_unet": ["model=resnet34_unet"], "unet": ["model=unet"]},
    data=[],
    train=[],
    train_seconds=TRAIN_SECONDS,
    budget_s=450,
    timeouts={"machine": 60, "pytest": 150, "bench": 110, "train": TRAIN_SECONDS + 90},
)
DRY_RUN_SIZES = Sizes(
    accelerator="cpu",
    bench=[
        "data.image_size=32",  # smp.Unet needs sides divisible by 32
        "data.batch_size=2",
        "steps=1",
        "warmup=0",
        "rounds=1",
        "data_images=4",
        "loader_workers=[0,auto]",
    ],
    models={
        "resnet34_unet": ["model=resnet34_unet", "model.decoder_channels=[16,16,16,16,16]"],
        "unet": ["model=unet", "model.widths=[4,8,16]"],
    },
    data=[
        "data.synthetic.num_trainval=20",
        "data.synthetic.num_test=4",
        "data.synthetic.min_size=64",
        "data.synthetic.max_size=80",
    ],
    train=[
        "model.widths=[4,8,16]",
        "data.image_size=64",
        "data.batch_size=2",
        "trainer.precision=32-true",
    ],
    train_seconds=5,
    budget_s=600,
    timeouts={"machine": 120, "pytest": 240, "bench": 240, "train": 240},
    # One compute thread: on a busy 2-core machine two threads wait on each other.
    env={"OMP_NUM_THREADS": "1"},
)


# ------------------------------------------------------------------------------ running


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: int
    status: str = "not run"  # ok | failed | timeout | skipped
    returncode: int | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None
    log: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    output_tail: str | None = None

    def record(self) -> dict[str, Any]:
        record = {
            "name": self.name,
            "command": shlex.join(self.command),
            "status": self.status,
            "returncode": self.returncode,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "timeout_s": self.timeout_s,
            "log": self.log,
            "figures": self.figures,
        }
        if self.error:
            record["error"] = self.error
        if self.output_tail:
            record["output_tail"] = self.output_tail
        return record


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def run_step(step: Step, log_dir: Path, extra_env: dict[str, str]) -> str:
    """Run `step.command` from the repo root, its output to <log_dir>/<name>.log; return it.

    On timeout the step's whole process group (loader workers, pytest's children) gets
    SIGTERM, then SIGKILL 15 s later.
    """
    log_path = log_dir / f"{step.name}.log"
    step.log = str(log_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "HYDRA_FULL_ERROR": "1",
        **extra_env,
    }
    started = time.perf_counter()
    cpu_before = _children_cpu_seconds()
    with open(log_path, "w") as log:
        log.write(f"$ {shlex.join(step.command)}\n")
        log.flush()
        process = subprocess.Popen(
            step.command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            step.returncode = process.wait(timeout=step.timeout_s)
            step.status = "ok" if step.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _stop(process)
            step.returncode = process.returncode
            step.status = "timeout"
            step.error = f"timed out after {step.timeout_s} s"
    step.seconds = round(time.perf_counter() - started, 1)
    step.cpu_seconds = round(_children_cpu_seconds() - cpu_before, 1)
    output = log_path.read_text(errors="replace")
    if step.status != "ok":
        step.output_tail = output[-TAIL_CHARS:]
        step.error = step.error or f"exit status {step.returncode}"
    return output


def _children_cpu_seconds() -> float:
    """User + system CPU time of the finished child processes (and their waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ------------------------------------------------------------------------------ figures


def pytest_figures(output: str) -> dict[str, Any]:
    """Counts from pytest's summary line ("3 passed, 1 skipped in 9.1s") and its short
    summary lines (FAILED / ERROR / SKIPPED with their reasons)."""
    counts = dict.fromkeys(PYTEST_COUNTS, 0)
    summary = None
    for line in reversed(output.splitlines()):
        if re.search(
            r"\b(passed|failed|skipped|errors?|deselected|no tests ran)\b.* in [\d.]+s", line
        ):
            summary = line.strip(" =")
            break
    if summary:
        for number, kind in re.findall(r"(\d+) (\w+)", summary):
            kind = "errors" if kind == "error" else kind
            if kind in counts:
                counts[kind] = int(number)
    details = [
        line
        for line in output.splitlines()
        if re.match(r"(FAILED|ERROR|SKIPPED|XPASS) ", line) and "short test summary" not in line
    ]
    return {**counts, "summary": summary, "details": details[:50]}


def _timed(result: Any) -> dict[str, Any] | None:
    if not isinstance(result, dict) or "img_s" not in result:
        return None
    keys = ("img_s", "ms_median", "ms_min", "ms_max", "gflops", "fraction_of_peak")
    return {key: result[key] for key in keys if key in result}


def bench_figures(results: dict[str, Any]) -> dict[str, Any]:
    """The figures of a segpets.bench JSON that the check reports (the whole JSON goes
    under "raw" beside them): img/s and ms per section and precision variant, what auto
    picks, smp's ratio, loader img/s per worker setting, data img/s with and without cache."""
    settings = results.get("settings", {})
    figures: dict[str, Any] = {
        "settings": {
            key: settings.get(key)
            for key in (
                "model",
                "image_size",
                "batch_size",
                "precision",
                "channels_last",
                "device",
                "device_name",
                "steps",
                "warmup",
                "rounds",
            )
        }
    }
    for section in ("plain", "lightning", "smp", "inference"):
        timed = _timed(results.get(section))
        if timed:
            figures[section] = timed
    if "ratio_to_plain" in results.get("lightning", {}):
        figures["lightning"]["ratio_to_plain"] = results["lightning"]["ratio_to_plain"]
    smp = results.get("smp")
    if isinstance(smp, dict):
        figures.setdefault("smp", {})
        figures["smp"]["status"] = smp.get("status")
        figures["smp"]["plain_gflops_ratio"] = smp.get("plain_gflops_ratio")
    precision = results.get("precision")
    if isinstance(precision, dict):
        variants: dict[str, Any] = {}
        for name, result in (precision.get("variants") or {}).items():
            if _timed(result):
                variants[name] = _timed(result)
            elif isinstance(result, dict):  # {precision: {layout: timed}}
                for layout, by_layout in result.items():
                    if _timed(by_layout):
                        variants[f"{name} {layout}"] = _timed(by_layout)
        figures["precision"] = {
            "variants": variants,
            **{
                key: precision[key]
                for key in ("auto_picks", "fastest", "auto_is_fastest", "skipped")
                if key in precision
            },
        }
    loader = results.get("loader")
    if isinstance(loader, dict):
        figures["loader"] = {
            "status": loader.get("status"),
            "workers": {
                setting: {"num_workers": result.get("num_workers"), **(_timed(result) or {})}
                for setting, result in loader.items()
                if isinstance(result, dict)
            },
        }
    data = results.get("data")
    if isinstance(data, dict):
        figures["data"] = {
            "status": data.get("status"),
            **{
                augment: {
                    key: result.get(key)
                    for key in ("decoded_img_s", "cached_img_s", "cache_speedup")
                }
                for augment, result in data.items()
                if isinstance(result, dict)
            },
        }
    return figures


def train_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "epochs": metrics.get("epochs_trained"),
        "global_step": metrics.get("global_step"),
        "best_epoch": metrics.get("best_epoch"),
        "val_dice": metrics.get("val", {}).get("val/dice"),
        "test_dice": metrics.get("test", {}).get("test/dice"),
        "train_seconds": metrics.get("train_seconds"),
        "precision": metrics.get("precision"),
        "parameters": metrics.get("parameters"),
    }


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------- checks


class Check:
    """The steps in order, the budget they share, and the JSON they fill."""

    def __init__(self, sizes: Sizes, work_dir: Path, out: Path, dry_run: bool) -> None:
        self.sizes = sizes
        self.work_dir = work_dir
        self.out = out
        self.started = time.perf_counter()
        self.report: dict[str, Any] = {
            "check": "segpets GPU check (scripts/gpu_check.py)",
            "dry_run": dry_run,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "finished": None,
            "seconds": None,
            "budget_s": sizes.budget_s,
            "work_dir": str(work_dir),
            "repo": _repo_state(),
            "machine": None,
            "steps": [],
            "ok": None,
        }

    def remaining(self) -> float:
        return self.sizes.budget_s - (time.perf_counter() - self.started)

    def timeout(self, kind: str) -> int:
        return max(1, int(min(self.sizes.timeouts[kind], self.remaining())))

    def paths(self, name: str) -> list[str]:
        return [
            f"paths.data_dir={self.work_dir / 'data'}",
            f"paths.log_dir={self.work_dir / 'logs'}",
            f"hydra.run.dir={self.work_dir / name}",
        ]

    def run(self, step: Step, figures: Any = None, skip: str | None = None) -> Step:
        """Run `step` (or skip it, saying why), read its figures, save the JSON."""
        if skip is None and self.remaining() < 5:
            skip = "no time left in the budget"
        if skip is not None:
            step.status, step.error = "skipped", skip
        else:
            output = run_step(step, self.work_dir, self.sizes.env)
            if figures is not None:
                try:
                    step.figures = figures(output)
                except Exception as error:  # a step that ran but left no readable figures
                    if step.status == "ok":
                        step.status = "failed"
                    step.error = step.error or f"no figures: {type(error).__name__}: {error}"
        self.report["steps"].append(step.record())
        print(
            f"[gpu_check] {step.name}: {step.status} ({step.seconds} s)"
            + (f" - {step.error}" if step.error else ""),
            flush=True,
        )
        self.save()
        return step

    def save(self) -> None:
        self.report["seconds"] = round(time.perf_counter() - self.started, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.out.with_name(self.out.name + ".tmp")
        temporary.write_text(json.dumps(self.report, indent=2) + "\n")
        temporary.replace(self.out)

    # -- the steps

    def machine(self) -> None:
        code = "import json; from segpets.precision import machine; print(json.dumps(machine()))"
        step = Step("machine", python("-c", code), self.timeout("machine"))

        def figures(output: str) -> dict[str, Any]:
            line = next(line for line in reversed(output.splitlines()) if line.startswith("{"))
            return json.loads(line)

        self.run(step, figures)
        self.report["machine"] = step.figures or None

    def pytest(self) -> None:
        # A test module that fails to import elsewhere must not cost the GPU tests their run.
        command = python(
            "-m",
            "pytest",
            "tests/reliability/test_gpu.py",  # where the gpu-marked tests live
            "-m",
            "gpu",
            "-q",
            "-p",
            "no:cacheprovider",
            "--continue-on-collection-errors",
            # One process: the project's `-n auto` would start one per core, all on one GPU.
            "-n",
            "0",
        )
        self.run(Step("pytest", command, self.timeout("pytest")), pytest_figures)

    def bench(self, model: str, data_section: bool) -> None:
        name = f"bench-{model}"
        output = self.work_dir / f"{name}.json"
        sections = [s for s in SECTIONS if data_section or s != "data"]
        command = python(
            "-m",
            "segpets.bench",
            *self.sizes.models[model],
            "data=synthetic",
            *self.sizes.data,
            *self.sizes.bench,
            f"trainer.accelerator={self.sizes.accelerator}",
            f"sections=[{','.join(sections)}]",
            f"output={output}",
            *self.paths(name),
        )

        def figures(_: str) -> dict[str, Any]:
            if not output.is_file():
                return {}
            results = _read_json(output)
            return {**bench_figures(results), "json": str(output), "raw": results}

        self.run(Step(name, command, self.timeout("bench")), figures)

    def train(self) -> None:
        seconds = max(0, int(min(self.sizes.train_seconds, self.remaining() - TRAIN_OVERHEAD_S)))
        if self.sizes.accelerator == "cpu":  # the dry run: seconds, whatever the budget
            seconds = self.sizes.train_seconds
        max_time = f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"
        run_dir = self.work_dir / "train"
        command = python(
            "-m",
            "segpets.train",
            "experiment=quickstart",
            f"++trainer.max_time={max_time}",
            "trainer.max_epochs=1000",
            f"trainer.accelerator={self.sizes.accelerator}",
            *self.sizes.data,
            *self.sizes.train,
            *self.paths("train"),
        )
        step = Step("train", command, self.timeout("train"))
        skip = None
        if seconds < MIN_TRAIN_SECONDS and self.sizes.accelerator != "cpu":
            skip = f"{seconds} s left for training in the budget (at least {MIN_TRAIN_SECONDS})"

        def figures(_: str) -> dict[str, Any]:
            metrics = _read_json(run_dir / "metrics.json")
            return {
                **train_figures(metrics),
                "max_time": max_time,
                "metrics_json": str(run_dir / "metrics.json"),
            }

        self.run(step, figures, skip)

    def finish(self) -> bool:
        self.report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.report["ok"] = all(step["status"] == "ok" for step in self.report["steps"])
        self.save()
        return self.report["ok"]


def _repo_state() -> dict[str, Any] | None:
    """The commit and whether the tree differs from it, when the repo is a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "modified": bool(status.stdout.strip())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="every step with tiny sizes on the CPU (about 1-2 minutes): checks the script",
    )
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="scratch files and step logs (default logs/gpu_check/<time> in the repo)",
    )
    parser.add_argument(
        "--budget-s",
        type=int,
        default=None,
        help="seconds for all steps (default 450; dry run 600)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated steps to run: machine,pytest,bench,train (default: all)",
    )
    args = parser.parse_args(argv)

    sizes = DRY_RUN_SIZES if args.dry_run else GPU_SIZES
    if args.budget_s is not None:
        sizes = replace(sizes, budget_s=args.budget_s)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    work_dir = (args.work_dir or REPO_ROOT / "logs" / "gpu_check" / stamp).resolve()
    if work_dir.exists() and any(work_dir.iterdir()):
        parser.error(f"--work-dir {work_dir} is not empty: give a new or empty folder")
    work_dir.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else {"machine", "pytest", "bench", "train"}
    unknown = only - {"machine", "pytest", "bench", "train"}
    if unknown:
        parser.error(f"--only: unknown steps {sorted(unknown)}")

    check = Check(sizes, work_dir, args.out.resolve(), args.dry_run)
    print(
        f"[gpu_check] work dir {work_dir}; JSON {args.out}; budget {sizes.budget_s} s", flush=True
    )
    if "machine" in only:
        check.machine()
    if "pytest" in only:
        check.pytest()
    if "bench" in only:
        # The dry run benches one model: the second runs the same code with other sizes.
        for index, model in enumerate(BENCH_MODELS[:1] if args.dry_run else BENCH_MODELS):
            check.bench(model, data_section=index == 0)
    if "train" in only:
        check.train()
    ok = check.finish()
    print(f"[gpu_check] {'all steps ok' if ok else 'some steps failed'}: {args.out}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
