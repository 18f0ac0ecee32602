"""A regular (wheel) install runs from any folder: the configs ship inside the package."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from segpets.cli import run
from tests.helpers import REPO_ROOT, tiny_run_overrides

# Top-level folders that are not sources (build output, runs, downloaded data) and caches.
TOP_LEVEL_OUTPUTS = {".git", "build", "dist", "logs", "data", "outputs", "multirun"}


def not_sources(folder: str, names: list[str]) -> set[str]:
    """shutil.copytree's ignore: outputs at the repo's top, caches and egg-info anywhere."""
    top = Path(folder) == REPO_ROOT
    return {
        name
        for name in names
        if (top and name in TOP_LEVEL_OUTPUTS)
        or name == "__pycache__"
        or name.endswith((".egg-info", "_cache"))
    }


GROUPS = (
    "augment",
    "data",
    "debug",
    "experiment",
    "logger",
    "loss",
    "model",
    "postprocess",
    "trainer",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """segpets built as a wheel and installed, without its dependencies, into a fresh folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    # A copy of the sources: setuptools builds inside the tree, and a stale build/ could leak in.
    source = tmp / "source"
    shutil.copytree(REPO_ROOT, source, ignore=not_sources)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")]
    subprocess.run([*build, str(source)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("segpets-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "segpets/configs/train.yaml" in names
    assert "segpets/configs/experiment/quickstart.yaml" in names
    assert "segpets/configs/hydra/launcher/slurm.yaml" in names
    assert not any(name.startswith("configs/") for name in names)
    packages = {
        p.parent.relative_to(REPO_ROOT) for p in (REPO_ROOT / "segpets").rglob("__init__.py")
    }
    assert all(f"{package.as_posix()}/__init__.py" in names for package in packages), packages
    target = tmp / "site"
    install = [*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    return target


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m ...` from `cwd` (outside the repo), seeing the installed copy, not the repo."""
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_the_wheel_composes_and_trains_from_another_folder(installed, synthetic_root, tmp_path):
    where = run_installed(installed, tmp_path, "-c", "import segpets; print(segpets.__file__)")
    assert where.stdout.strip() == str(installed / "segpets" / "__init__.py")

    job = run_installed(
        installed, tmp_path, "-m", "segpets.train", "experiment=quickstart", "--cfg", "job"
    )
    assert job.returncode == 0, job.stderr
    assert "task_name: quickstart" in job.stdout and "image_size: 96" in job.stdout

    # A config dir of one's own adds options to the packaged ones (Hydra's --config-dir).
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "tiny.yaml").write_text(
        "# @package _global_\nmodel:\n  widths: [4, 8, 16]\n"
    )
    run = run_installed(
        installed,
        tmp_path,
        "-m",
        "segpets.train",
        "--config-dir",
        "mine",
        "experiment=tiny",
        *tiny_run_overrides(synthetic_root),
        "debug=fdr",
        "logger=csv",
    )
    assert run.returncode == 0, run.stderr
    assert "test Dice (mean per image)" in run.stdout
    (config,) = (tmp_path / "logs" / "train" / "runs").glob("*/*/.hydra/config.yaml")
    assert list(OmegaConf.load(config).model.widths) == [4, 8, 16]
    assert list((tmp_path / "logs" / "train" / "runs").glob("*/*/metrics.json"))


@pytest.mark.slow
def test_help_lists_every_config_group_and_its_options(installed, tmp_path):
    result = run_installed(installed, tmp_path, "-m", "segpets.train", "--help")
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    for group in GROUPS:
        assert f"\n{group}: " in groups
    assert "resnet34_unet" in groups and "quickstart" in groups and "bce_tversky" in groups


def test_a_missing_config_dir_is_exit_2_naming_it(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["segpets.train", "--config-dir", "nowhere", "--cfg", "job"])
    with pytest.raises(SystemExit) as exit_:
        run(lambda: pytest.fail("the app ran with a missing --config-dir"))
    assert exit_.value.code == 2
    assert "--config-dir nowhere: no such folder" in capsys.readouterr().err


def test_ci_installs_every_optional_model_and_logger_the_tests_cover():
    """.ci/run installs the dev extra: without smp there, the smp tests would skip in CI."""
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    dev = project["optional-dependencies"]["dev"]
    assert '".[dev,export,sweep]"' in (REPO_ROOT / ".ci" / "run").read_text()
    for name in ("segmentation-models-pytorch", "wandb", "mlflow"):
        assert any(requirement.startswith(name) for requirement in dev), name
