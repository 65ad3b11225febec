#!/usr/bin/env bash
# Figure 2 (right): ACC against the interval s around the median class frequency
# (Tiny s=5 .. Huge s=45), three seeds, iBOT ViT-L. Rows of Table 5, as Figure 2 (left).
# Usage: bash multirun_sweeps/figure2_right.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=table5 paper.table=figure2_right \
    dataset=tiny,small,base,large,huge method=kmeans,temi,scanv2 seed=0,1,2 "$@"
$PY -m clusterbench report $OUT/figure2_right
