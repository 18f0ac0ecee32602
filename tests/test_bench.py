"""`python -m segpets.bench`: every section runs and reports finite numbers; no host syncs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segpets.bench import (
    SECTIONS,
    Workload,
    _samples_per_second,
    bench,
    checked_autocast_dtype,
    count_host_syncs,
    data_root,
)
from segpets.data.loading import MAX_WORKERS, available_cpus
from segpets.errors import ConfigError
from tests.helpers import REPO_ROOT, compose_train

TINY = [
    "model=unet",
    "model.widths=[4,8,16]",
    "data.image_size=64",
    "data.batch_size=2",
    "steps=2",
    "warmup=1",
    "data_images=8",
    "probe.batch=2",
    "probe.size=32",
    "loader_workers=[0,auto]",
]
TIMED = ("img_s", "ms_median", "ms_min", "ms_max", "gflops", "peak_rss_mb")


@pytest.fixture
def one_thread():
    """torch on one thread: on a busy test machine two threads can wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_bench(tmp_path: Path, overrides: list[str]):
    return compose_train(tmp_path, overrides, config_name="bench")


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def assert_timed(result: dict, peak: bool = True) -> None:
    for key in TIMED:
        assert positive(result[key]), (key, result)
    assert result["ms_min"] <= result["ms_median"] <= result["ms_max"]
    if peak:
        assert positive(result["fraction_of_peak"])


@pytest.mark.slow
def test_cli_writes_every_section(synthetic_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        # One thread: a busy test machine then slows the run down instead of stalling it.
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "segpets.bench",
        *TINY,
        f"data.root={synthetic_root}",
        f"hydra.run.dir={run_dir}",
    ]
    process = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "segpets.bench" in process.stdout and "plain PyTorch" in process.stdout

    results = json.loads((run_dir / "bench.json").read_text())
    assert set(SECTIONS) <= set(results)
    settings = results["settings"]
    assert settings["model"] == "UNet" and settings["image_size"] == 64
    assert settings["batch_size"] == 2 and settings["steps"] == 2 and settings["rounds"] == 2
    # Training's defaults, measured as training runs them.
    assert settings["precision"] == "bf16-mixed" and settings["channels_last"]
    assert settings["fused_optimizer"] and settings["keep_host_memory"]
    assert positive(results["peak_rss_mb"])

    peak = results["peak"]
    assert set(peak["variants"]) == {"fp32", "fp32_cl", "bf16", "bf16_cl"}
    for variant in peak["variants"].values():
        assert_timed(variant, peak=False)
    assert peak["gflops"] == max(v["gflops"] for v in peak["variants"].values())

    train = results["train"]
    for key in ("params_m", "gflop_per_step", "gflop_per_image_train", "gflop_per_image_inference"):
        assert positive(train[key]), key
    for section in ("plain", "lightning", "inference"):
        assert_timed(results[section])
    assert positive(results["lightning"]["ratio_to_plain"])
    assert results["lightning"]["host_syncs_per_step"] == {}

    smp = results["smp"]
    if smp["status"] == "ok":
        assert_timed(smp)
        assert positive(smp["gflop_per_step"])
    else:
        assert smp["status"].startswith("not installed")

    loader = results["loader"]
    assert loader["status"] == "ok" and loader["root"] == str(synthetic_root)
    assert loader["augment"] == "basic"
    assert loader["0"]["num_workers"] == 0
    # auto on a CPU: the cores left beside the one compute thread (OMP_NUM_THREADS=1).
    assert loader["auto"]["num_workers"] == min(MAX_WORKERS, available_cpus() - 1)
    for setting in ("0", "auto"):
        assert_timed(loader[setting])

    data = results["data"]
    assert data["status"] == "ok" and data["root"] == str(synthetic_root)
    for augment in ("none", "basic", "strong"):
        for key in ("decoded_img_s", "cached_img_s", "cache_speedup"):
            assert positive(data[augment][key]), (augment, key)
    # The cache went where data.cache_dir says: under the run's working directory.
    assert list((tmp_path / "data" / "cache").iterdir())


def test_training_step_does_not_wait_for_the_device(tmp_path: Path, one_thread):
    """segpets' training_step (forward, loss, metric update, log) calls no .item(), .cpu(),
    bool(tensor)...: on a GPU each would stall the queue once per step."""
    cfg = compose_bench(tmp_path, [*TINY, "steps=3"])
    result = Workload(cfg, torch.device("cpu")).loops(["lightning"], rounds=1, peak=None)
    assert result["lightning"]["host_syncs_per_step"] == {}


def test_sync_counter_counts_and_restores():
    names = {"item", "tolist", "cpu", "__bool__"}
    with count_host_syncs() as counts:
        t = torch.ones(2)
        t.sum().item()
        t.tolist()
        t.cpu()
        if (t > 0).all():
            pass
    assert counts == {name: 1 for name in names}
    assert not names & set(torch.Tensor.__dict__)
    assert torch.ones(1).item() == 1.0


def test_precisions_map_to_autocast():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert checked_autocast_dtype("32-true", cpu) is None
    assert checked_autocast_dtype("bf16-mixed", cpu) == torch.bfloat16
    assert checked_autocast_dtype(16, cpu) == torch.bfloat16  # as Lightning does on a CPU
    assert checked_autocast_dtype("16-mixed", cuda) == torch.float16
    with pytest.raises(ConfigError, match="precision"):
        checked_autocast_dtype("64-true", cpu)


@pytest.mark.parametrize(
    ("override", "message"),
    [("sections=[peak,warp]", "unknown"), ("steps=0", "steps"), ("warmup=-1", "warmup")],
)
def test_bad_options_fail_before_measuring(tmp_path: Path, override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        bench(compose_bench(tmp_path, [*TINY, override]))


def test_data_passes_draw_the_same_augmentations_for_both_datasets():
    """Every pass reseeds the augmentations and reads `count` samples in order, so the
    decoded and the cached dataset are timed on the same draws; throughput is samples
    over a pass's time."""

    class Recording:
        def __init__(self) -> None:
            self.seeds: list[int] = []
            self.indices: list[int] = []

        def __len__(self) -> int:
            return 3

        def seed_augmentations(self, seed: int) -> None:
            self.seeds.append(seed)

        def __getitem__(self, index: int) -> int:
            self.indices.append(index)
            return index

    datasets = {"decoded": Recording(), "cached": Recording()}
    rates = _samples_per_second(datasets, count=5, rounds=2, seed=7)
    for dataset in datasets.values():
        assert dataset.seeds == [7, 7, 7]  # one untimed pass, then two timed
        assert dataset.indices == [0, 1, 2, 0, 1] * 3
    assert set(rates) == {"decoded", "cached"} and all(rate > 0 for rate in rates.values())


def test_data_section_falls_back_to_the_real_sample(tmp_path: Path, monkeypatch, synthetic_root):
    # Any dataset in the official layout stands in for the sample.
    monkeypatch.setattr("segpets.bench.SAMPLE_ROOT", synthetic_root)
    missing = compose_bench(tmp_path, [f"data.root={tmp_path / 'nothing'}"])
    assert data_root(missing) == synthetic_root
    other = tmp_path / "other"
    other.symlink_to(synthetic_root)
    given = compose_bench(tmp_path, [f"data.root={other}"])
    assert data_root(given) == other


def test_sections_can_be_chosen(tmp_path: Path, one_thread):
    cfg = compose_bench(tmp_path, [*TINY, "sections=[train,inference]"])
    results = bench(cfg)
    assert set(results) == {"settings", "train", "inference", "peak_rss_mb"}
    assert results["inference"]["fraction_of_peak"] is None  # no peak measured
    written = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert written["inference"]["img_s"] == results["inference"]["img_s"]
