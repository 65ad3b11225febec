#!/usr/bin/env bash
# Figure 8 (appendix B.6): confidence histograms and reliability of TEMI and SCANv2 on ImageNet-1K
# (MAE-R ViT-H, 50 epochs, three seeds). The ImageNet-1K runs of Table 1 are the same runs: the
# report of outputs/sweeps/table1 draws it too. Results: outputs/sweeps/figure8/
# Usage: bash multirun_sweeps/figure8.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=table1 paper.table=figure8 dataset=in1k method=temi,scanv2 \
    seed=0,1,2 "$@"
$PY -m clusterbench report $OUT/figure8
