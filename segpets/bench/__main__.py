"""`python -m segpets.bench ...`: the Hydra shell around `segpets.bench.bench`."""

import inspect

import hydra
from omegaconf import DictConfig

from segpets.bench.suite import bench
from segpets.cli import CONFIG_PATH, exit_on_user_error, run


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="bench")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    bench(cfg)


# Hydra names the job after the module of the function it runs: "bench" (bench.log, the
# --help banner), as segpets.train is "train", not this file's "__main__".
inspect.unwrap(main).__module__ = "segpets.bench"


if __name__ == "__main__":
    run(main)
