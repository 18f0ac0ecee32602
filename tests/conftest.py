import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ROOT = REPO_ROOT.parent / "shared" / "data" / "oxford-iiit-pet-sample"
NO_GPU = (
    "needs a CUDA GPU (torch.cuda.is_available() is False); scripts/gpu_check.py runs them on one"
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker's compute threads (and those of the apps its tests
    start) get an equal share of the cores, not torch's default of one thread per core in
    every worker: two workers would otherwise run two threads on each core."""
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers <= 1:
        return
    import torch

    from segpets.data.loading import available_cpus

    threads = max(1, available_cpus() // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the apps' processes
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests, with the reason, where torch sees no CUDA GPU."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=NO_GPU))


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The real Oxford-IIIT Pet slice in ../shared/data (read-only, never copied)."""
    if not SAMPLE_ROOT.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must provide the real data sample at {SAMPLE_ROOT}")
        pytest.skip(f"real data sample not found at {SAMPLE_ROOT} (it lives in ../shared/data)")
    return SAMPLE_ROOT


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the official layout (30 trainval + 10 test, 64-96 px),
    written once per session; read it with `data.root=<it>` (and `data.synthetic=null`)."""
    from segpets.data import SyntheticPets

    generator = SyntheticPets(num_trainval=30, num_test=10, min_size=64, max_size=96, seed=0)
    return generator.write(tmp_path_factory.mktemp("synthetic") / "pets")


@pytest.fixture(scope="session")
def tiny_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run dir of a tiny UNet trained for two epochs on `synthetic_root` (64 px, fp32)."""
    from segpets.train import train
    from tests.helpers import TINY_UNET, compose_train, tiny_run_overrides

    tmp_path = tmp_path_factory.mktemp("tiny_run")
    cfg = compose_train(
        tmp_path,
        [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=2",
         "trainer.precision=32-true"],  # not auto: the same run on CPUs with and without bf16
    )  # fmt: skip
    train(cfg)
    return tmp_path / "run"
