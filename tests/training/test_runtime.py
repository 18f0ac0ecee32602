"""Process settings: keep_host_memory stops glibc from unmapping and re-faulting big buffers."""

import platform
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from segpets import runtime
from tests.helpers import REPO_ROOT

# Allocates and fills a 64 MiB tensor 18 times; prints the mean page faults of the last ten
# (the heap takes a few rounds to settle around small allocations made in between).
FAULTS = """
import resource, sys, torch
from segpets.runtime import keep_host_memory
if sys.argv[1] == "keep":
    assert keep_host_memory()
def fill():
    torch.ones(16 * 2**20)
for _ in range(8):
    fill()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    fill()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="keep_host_memory tunes glibc's malloc; this system has another C library",
)
def test_kept_memory_is_reused_without_page_faults():
    def faults(mode: str) -> float:
        process = subprocess.run(
            [sys.executable, "-c", FAULTS, mode],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return float(process.stdout)

    pages = 64 * 2**20 / 4096
    # By default every 64 MiB buffer is a fresh mapping, faulted in page by page.
    assert faults("default") > 0.9 * pages
    # Kept: the freed buffer is handed out again with its pages already in place.
    assert faults("keep") < 0.25 * pages


@pytest.mark.parametrize("keep", [True, False])
def test_configure_runtime_follows_the_option(monkeypatch, keep):
    calls = []
    monkeypatch.setattr(runtime, "keep_host_memory", lambda: calls.append(True) or True)
    cfg = OmegaConf.create({"matmul_precision": "high", "keep_host_memory": keep})
    runtime.configure_runtime(cfg)
    assert calls == ([True] if keep else [])
