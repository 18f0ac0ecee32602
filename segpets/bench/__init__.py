"""`python -m segpets.bench`: how fast segpets trains, infers and loads data here.

One process measures, for the same model, inputs and settings (configs/bench.yaml):
the machine's convolution peak, the training step as a plain PyTorch loop and through
segpets' LightningModule + Trainer (their ratio is segpets' overhead), smp's U-Net when it is
installed, inference, the training step in each precision and memory layout, and the data
pipeline with and without the decoded-image cache. Model sections train on fixed random
tensors, so no data loading is timed there; the loader and data sections read data.root.
`bench(cfg)` is a plain function; `__main__` is the thin Hydra shell around it.

Times are wall clock: on a busy machine they are noisy, and the JSON records the load
average before and after so that a reader can tell, and the machine it ran on
(`segpets.precision.machine()`).

Modules: `timing` (timing steps, FLOPs, host syncs, peak memory), `workload` (the
configured training step timed several ways), `peak`, `precisions` and `data` (sections),
`table` (the printed table), `suite` (`bench` itself).
"""

from segpets.bench.data import data_root, data_section, dataset_status, samples_per_second
from segpets.bench.peak import peak_section
from segpets.bench.precisions import precision_section, timed_precisions
from segpets.bench.suite import SECTIONS, bench, bench_device, check_options
from segpets.bench.table import machine_line, print_table
from segpets.bench.timing import (
    HOST_SYNC_METHODS,
    count_host_syncs,
    peak_rss_mb,
    summarize,
    time_alternating,
    time_steps,
)
from segpets.bench.workload import Workload, checked_autocast_dtype
from segpets.cost import count_flops

__all__ = [
    "HOST_SYNC_METHODS",
    "SECTIONS",
    "Workload",
    "bench",
    "bench_device",
    "check_options",
    "checked_autocast_dtype",
    "count_flops",
    "count_host_syncs",
    "data_root",
    "data_section",
    "dataset_status",
    "machine_line",
    "peak_rss_mb",
    "peak_section",
    "precision_section",
    "print_table",
    "samples_per_second",
    "summarize",
    "time_alternating",
    "time_steps",
    "timed_precisions",
]
