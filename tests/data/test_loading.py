"""data.num_workers=auto and friends: DataLoader settings for where the batches go."""

import pytest
import torch

from segpets.data import loading
from segpets.data.loading import AUTO, loader_options
from segpets.errors import ConfigError


@pytest.fixture
def machine(monkeypatch):
    """A machine with `cpus` cores of which torch's compute threads use `threads`."""

    def configure(cpus: int, threads: int) -> None:
        monkeypatch.setattr(loading, "available_cpus", lambda: cpus)
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)

    return configure


def test_gpu_gets_the_spare_cores_pinned_memory_and_a_deep_queue(machine):
    machine(cpus=16, threads=8)
    options = loader_options(AUTO, None, AUTO, "cuda")
    # One core stays with the process that drives the GPU; at most 8 workers.
    assert options == {
        "num_workers": 8,
        "pin_memory": True,
        "persistent_workers": True,
        "prefetch_factor": 4,
    }
    # Four DDP processes on the node share its 16 cores: 4 each, one of them the trainer's.
    assert loader_options(AUTO, None, AUTO, "cuda", processes_per_node=4)["num_workers"] == 3
    machine(cpus=4, threads=4)
    assert loader_options(AUTO, None, AUTO, "cuda")["num_workers"] == 3


def test_cpu_workers_only_take_cores_the_compute_threads_leave(machine):
    machine(cpus=2, threads=2)
    # Every core computes: decoding happens in the training process, nothing is pinned.
    assert loader_options(AUTO, None, AUTO, "cpu") == {"num_workers": 0, "pin_memory": False}
    machine(cpus=16, threads=8)  # hyperthreads beside the physical cores torch uses
    options = loader_options(AUTO, None, AUTO, "cpu")
    assert options["num_workers"] == 8 and options["prefetch_factor"] == 2
    assert options["persistent_workers"] and not options["pin_memory"]
    # Two CPU processes with 8 threads each use all 16 cores: no workers.
    assert loader_options(AUTO, None, AUTO, "cpu", processes_per_node=2)["num_workers"] == 0
    # Two with 4 threads each on 12 cores leave 4: 2 workers each.
    machine(cpus=12, threads=4)
    assert loader_options(AUTO, None, AUTO, "cpu", processes_per_node=2)["num_workers"] == 2


def test_explicit_settings_are_kept(machine):
    machine(cpus=2, threads=2)
    options = loader_options(3, True, 5, "cpu")
    assert options == {
        "num_workers": 3,
        "pin_memory": True,
        "persistent_workers": True,
        "prefetch_factor": 5,
    }
    # No CUDA, no pinning: Apple's GPU (mps) gets workers but no pinned memory.
    machine(cpus=8, threads=8)
    mps = loader_options(AUTO, None, AUTO, "mps")
    assert mps["num_workers"] == 7 and mps["pin_memory"] is False
    assert loader_options(0, False, AUTO, "cuda") == {"num_workers": 0, "pin_memory": False}


@pytest.mark.parametrize(
    ("num_workers", "prefetch", "message"),
    [
        (-1, AUTO, "data.num_workers must be auto or an integer >= 0, got -1"),
        ("many", AUTO, "data.num_workers must be auto or an integer >= 0, got 'many'"),
        (True, AUTO, "data.num_workers must be auto or an integer >= 0, got True"),
        (2, 0, "data.prefetch_factor must be auto or an integer >= 1, got 0"),
    ],
)
def test_bad_settings_name_the_option(num_workers, prefetch, message):
    with pytest.raises(ConfigError, match=message):
        loader_options(num_workers, None, prefetch, "cpu")
