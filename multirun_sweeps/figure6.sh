#!/usr/bin/env bash
# Figure 6 (appendix B.4): NMI against the number of clusters C on ImageNet-1K (MAE-R ViT-H,
# 50 epochs, three seeds): overclustering with k-means, TEMI and SCANv2. The paper's SCANv2 ran
# out of memory above C = 6000 on 40 GB; here the blocked last layer fits (docs/performance.md: Memory model).
# Usage: bash multirun_sweeps/figure6.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=table1 paper.table=figure6 dataset=in1k \
    method=kmeans,temi,scanv2 method.num_clusters=1000,2000,3000,4000,6000,8000,10000 seed=0,1,2 "$@"
$PY -m clusterbench report $OUT/figure6
