#!/usr/bin/env bash
# Figure 5 (appendix B.3): TEMI ACC against the number of neighbours k on coarse d = 1 and d = 2
# (iBOT ViT-L, 25 epochs, three seeds), against k-means (the line). k = 50 and the k-means runs
# are also Table 5's: report both directories to reuse them. Results: outputs/sweeps/figure5/
# Usage: bash multirun_sweeps/figure5.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=table5 paper.table=figure5 dataset=coarse_d1,coarse_d2 \
    method=temi method.knn=10,25,50,100,200 knn.k=200 seed=0,1,2 "$@"
$PY -m clusterbench --multirun experiment=table5 paper.table=figure5 dataset=coarse_d1,coarse_d2 \
    method=kmeans seed=0,1,2 hydra.sweep.dir=$OUT/figure5/kmeans "$@"
$PY -m clusterbench report $OUT/figure5
