#!/usr/bin/env bash
# experiment=budget against the plain PyTorch loop (scripts/plain_loop.py), each given the
# same training time on this machine, one after the other, for each seed; then the report
# pairs their per-image test Dice (docs/budget.md shows a run of it).
#
#   bash scripts/budget_comparison.sh DATA_ROOT [OUT_DIR]
#
# MINUTES (default 10) is each run's training time, SEEDS (default "1 2 3") the seeds;
# extra segpets overrides for the budget runs go in BUDGET_OVERRIDES. A run whose
# metrics.json exists is kept, so a comparison that was stopped resumes where it stopped.
# On a CPU with native bf16, limiting the kernels to AVX2 stands in for one without it
# (precision=auto reads the CPU's flags, so pass the float32 that it would pick there):
#   ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 BUDGET_OVERRIDES=trainer.precision=32-true \
#     bash scripts/budget_comparison.sh DATA_ROOT OUT_DIR
# Run under `taskset -c 0` (one core), that brings a Zen 4 EPYC down to about the step time of
# a 2-core AVX2-only CPU (docs/budget.md).
set -euo pipefail
data_root=$(realpath "${1:?usage: budget_comparison.sh DATA_ROOT [OUT_DIR]}")
out=${2:-logs/budget_comparison}
minutes=${MINUTES:-10}
read -r -a extra <<< "${BUDGET_OVERRIDES:-}"
cd "$(dirname "$0")/.."
for seed in ${SEEDS:-1 2 3}; do
  [[ -f $out/plain_seed$seed/metrics.json ]] ||
    python3 scripts/plain_loop.py --data-root "$data_root" --minutes "$minutes" --seed "$seed" \
      --out "$out/plain_seed$seed"
  [[ -f $out/budget_seed$seed/metrics.json ]] ||
    python3 -m segpets.train experiment=budget "data.root=$data_root" "seed=$seed" \
      "trainer.max_time={minutes:$minutes}" "${extra[@]}" "hydra.run.dir=$out/budget_seed$seed"
done
python3 -m segpets.report "$out" baseline=recipe=plain_loop
