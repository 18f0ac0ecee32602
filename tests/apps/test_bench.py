"""`python -m segpets.bench`: every section runs; its FLOPs and GFLOP/s agree with a count by
hand; no host syncs; the machine is named; without a dataset in data.root the data sections
say so."""

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
    bench,
    bench_device,
    checked_autocast_dtype,
    count_host_syncs,
    data_root,
    dataset_status,
    precision_section,
    samples_per_second,
)
from segpets.data.loading import MAX_WORKERS, available_cpus
from segpets.errors import ConfigError
from segpets.precision import auto_precision
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
MACHINE = ("cpu", "cpu_isa", "cpu_count", "torch_threads", "gpu", "torch")


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
        f"sections=[{','.join(SECTIONS)}]",  # precision runs only when listed
        f"data.root={synthetic_root}",
        f"hydra.run.dir={run_dir}",
    ]
    process = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "segpets.bench" in process.stdout and "plain PyTorch" in process.stdout
    assert "precision auto" in process.stdout

    results = json.loads((run_dir / "bench.json").read_text())
    assert set(SECTIONS) <= set(results)
    settings = results["settings"]
    assert settings["model"] == "UNet" and settings["image_size"] == 64
    assert settings["batch_size"] == 2 and settings["steps"] == 2 and settings["rounds"] == 2
    # Training's defaults, measured as training runs them (precision auto, resolved).
    assert settings["precision"] == auto_precision("auto") and settings["channels_last"]
    assert settings["fused_optimizer"] and settings["keep_host_memory"]
    assert positive(results["peak_rss_mb"])
    assert set(MACHINE) <= set(results["machine"])

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

    precision = results["precision"]
    assert precision["auto_picks"] == auto_precision("auto")
    for layouts in precision["variants"].values():
        for result in layouts.values():
            assert_timed(result)


def conv_flops_by_hand(model: torch.nn.Module, images: torch.Tensor) -> list[int]:
    """Each convolution's forward FLOPs, in call order: 2 per multiply-add, counted over
    the output pixels of a Conv2d and over the input pixels of a ConvTranspose2d (each meets
    the whole kernel once). The U-Net's other operations (norms, activations, resizing,
    pooling) are not multiply-adds, nor counted by torch's FlopCounterMode."""
    flops: list[int] = []

    def count(module, inputs, output) -> None:
        kernel = math.prod(module.kernel_size)
        if isinstance(module, torch.nn.ConvTranspose2d):
            flops.append(2 * inputs[0].numel() * module.out_channels // module.groups * kernel)
        else:
            flops.append(2 * output.numel() * module.in_channels // module.groups * kernel)

    convs = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    hooks = [conv.register_forward_hook(count) for conv in convs]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return flops


def test_figures_agree_with_a_flop_count_by_hand(tmp_path: Path, one_thread):
    """GFLOPs per image and per second, fractions of the peak and the ratio to the plain loop,
    from a FLOP count by hand and bench.json's own step times."""
    overrides = [*TINY, "model.upsample=deconv", "sections=[peak,train,plain,lightning,inference]"]
    cfg = compose_bench(tmp_path, overrides)
    results = bench(cfg)
    workload = Workload(cfg, torch.device("cpu"))
    model = workload.segpets_model()
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    forward = conv_flops_by_hand(model, workload.images)
    # Backward: the input's and the weights' gradients, each as much as the forward, except
    # the first convolution's input gradient (the images need none).
    train = 3 * sum(forward) - forward[0]
    inference = sum(conv_flops_by_hand(model, workload.eval_images))
    cost = results["train"]
    assert cost["gflop_per_step"] == pytest.approx(train / 1e9, rel=1e-9)
    assert cost["gflop_per_image_train"] == pytest.approx(train / 1e9 / 2, rel=1e-9)
    assert cost["gflop_per_image_inference"] == pytest.approx(inference / 1e9 / 2, rel=1e-9)
    assert cost["params_m"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)

    # The peak probe: a 64 -> 64 3x3 convolution, batch 2 at 32 px, forward and backward.
    probe = 3 * 2 * (2 * 32 * 32) * 64 * 64 * 9
    peak = results["peak"]
    for variant in peak["variants"].values():
        assert variant["gflops"] == pytest.approx(probe / variant["ms_median"] / 1e6, rel=1e-9)
    assert peak["gflops"] == max(v["gflops"] for v in peak["variants"].values())
    for section, flops in [("plain", train), ("lightning", train), ("inference", inference)]:
        timed = results[section]
        seconds = timed["ms_median"] / 1e3
        assert timed["img_s"] == pytest.approx(2 / seconds, rel=1e-9)
        assert timed["gflops"] == pytest.approx(flops / seconds / 1e9, rel=1e-9), section
        assert timed["fraction_of_peak"] == pytest.approx(timed["gflops"] / peak["gflops"])
    ratio = results["lightning"]["ms_median"] / results["plain"]["ms_median"]
    assert results["lightning"]["ratio_to_plain"] == pytest.approx(ratio, rel=1e-9)


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
    rates = samples_per_second(datasets, count=5, rounds=2, seed=7)
    for dataset in datasets.values():
        assert dataset.seeds == [7, 7, 7]  # one untimed pass, then two timed
        assert dataset.indices == [0, 1, 2, 0, 1] * 3
    assert set(rates) == {"decoded", "cached"} and all(rate > 0 for rate in rates.values())


def test_data_sections_read_data_root(tmp_path: Path, synthetic_root: Path):
    """data.root and nothing else: a dataset there, or one data=synthetic will generate."""
    other = tmp_path / "other"
    other.symlink_to(synthetic_root)
    given = compose_bench(tmp_path, [f"data.root={other}"])
    assert data_root(given) == other and dataset_status(given) is None
    generated = compose_bench(tmp_path, ["data=synthetic", f"data.root={tmp_path / 'new'}"])
    assert dataset_status(generated) is None


def test_data_sections_say_when_data_root_holds_no_dataset(tmp_path: Path, capsys):
    missing = tmp_path / "nothing"
    cfg = compose_bench(tmp_path, [*TINY, f"data.root={missing}", "sections=[loader,data]"])
    results = bench(cfg)
    for section in ("loader", "data"):
        result = results[section]
        assert result["root"] == str(missing), section
        assert result["status"].startswith("skipped: no dataset in data.root="), section
        assert str(missing) in result["status"] and "data=synthetic" in result["status"]
        assert not [value for value in result.values() if isinstance(value, dict)], section
    assert "skipped: no dataset in" in capsys.readouterr().out  # the status, wrapped


def test_sections_can_be_chosen(tmp_path: Path, one_thread):
    cfg = compose_bench(tmp_path, [*TINY, "sections=[train,inference]"])
    results = bench(cfg)
    assert set(results) == {"settings", "machine", "train", "inference", "peak_rss_mb"}
    assert results["inference"]["fraction_of_peak"] is None  # no peak measured
    written = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert written["inference"]["img_s"] == results["inference"]["img_s"]


def test_training_is_timed_at_train_size_and_inference_at_image_size(
    tmp_path: Path, synthetic_root: Path, capsys
):
    cpu = torch.device("cpu")
    full = Workload(compose_bench(tmp_path, TINY), cpu).cost()
    cropped = Workload(compose_bench(tmp_path, [*TINY, "data.train_size=32"]), cpu).cost()
    assert cropped["gflop_per_image_inference"] == full["gflop_per_image_inference"]
    assert cropped["gflop_per_image_train"] == pytest.approx(
        full["gflop_per_image_train"] / 4, rel=0.01
    )
    overrides = [
        *TINY,
        "data.train_size=32",
        "sections=[train,data]",
        f"data.root={synthetic_root}",
    ]
    results = bench(compose_bench(tmp_path, overrides))
    assert (results["settings"]["train_size"], results["settings"]["image_size"]) == (32, 64)
    assert (results["data"]["image_size"], results["data"]["status"]) == (32, "ok")
    assert "32 px (eval 64 px)" in capsys.readouterr().out


def test_bench_names_the_machine(tmp_path: Path, capsys):
    results = bench(compose_bench(tmp_path, [*TINY, "sections=[train]"]))
    machine = json.loads((tmp_path / "run" / "bench.json").read_text())["machine"]
    assert machine == results["machine"]
    assert set(MACHINE) <= set(machine)
    assert machine["cpu_isa"] in {"DEFAULT", "AVX2", "AVX512", "AVX512-BF16", "AMX"}
    assert machine["torch"] == torch.__version__
    assert (machine["gpu"] is None) == (not torch.cuda.is_available())
    printed = capsys.readouterr().out
    for word in (machine["cpu"], f"({machine['cpu_isa']})", f"torch {torch.__version__}"):
        assert word in printed, word
    assert (f"GPU {machine['gpu']}" if machine["gpu"] else "no GPU") in printed


PRECISION_TINY = [
    "model=unet",
    "model.widths=[4,8,16]",
    "data.image_size=32",
    "data.batch_size=2",
    "steps=1",
    "warmup=0",
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
    "sections=[precision]",
]


def test_precision_section_times_each_precision_and_layout(tmp_path: Path, one_thread, monkeypatch):
    cfg = compose_bench(tmp_path, PRECISION_TINY)
    results = bench(cfg)
    precision = results["precision"]
    assert set(precision["variants"]) == {"32-true", "bf16-mixed"}  # 16-mixed: CUDA only
    for layouts in precision["variants"].values():
        assert set(layouts) == {"contiguous", "channels_last"}
        for result in layouts.values():
            assert_timed(result, peak=False)
            assert positive(result["speedup_vs_32_true"])
    fastest = precision["fastest"]
    best = precision["variants"][fastest["precision"]][
        "channels_last" if fastest["channels_last"] else "contiguous"
    ]["img_s"]
    assert best == max(r["img_s"] for v in precision["variants"].values() for r in v.values())
    assert precision["auto_picks"] == auto_precision("cpu")
    assert precision["auto_is_fastest"] == (precision["auto_picks"] == fastest["precision"])
    written = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert written["precision"]["auto_picks"] == precision["auto_picks"]

    # On a CPU with bfloat16 instructions, auto picks bf16-mixed, and the section says so.
    native = {"isa": "AVX512", "avx512_bf16": True, "amx": False, "native_bf16": True}
    monkeypatch.setattr("segpets.precision.cpu_capability", lambda: native)
    workload = Workload(cfg, bench_device(cfg))
    assert precision_section(workload, "cpu")["auto_picks"] == "bf16-mixed"
