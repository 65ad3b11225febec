#!/usr/bin/env bash
# Figure 2 (left): ACC against the maximum hierarchy depth d (coarse d = 1..8, and the GT labels),
# three seeds, iBOT ViT-L. These are rows of Table 5: with its sweep done, the report of
# outputs/sweeps/table5 draws this figure without running anything.
# Usage: bash multirun_sweeps/figure2_left.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=table5 paper.table=figure2_left \
    dataset=coarse_d1,coarse_d2,coarse_d3,coarse_d4,coarse_d5,coarse_d6,coarse_d7,coarse_d8,in21k \
    method=kmeans,temi,scanv2 seed=0,1,2 "$@"
$PY -m clusterbench report $OUT/figure2_left
