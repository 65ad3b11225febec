#!/usr/bin/env bash
# Figure 4 (appendix B.1): L_align, Davies-Bouldin and silhouette against linear-probe accuracy
# on iBOT ViT-L features of the ImageNet21K benchmarks and ImageNet-1K, with R^2.
# Results: outputs/sweeps/figure4/
# Usage: bash multirun_sweeps/figure4.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
DATASETS=clip_1k,dinov2_1k,sup_1k,random_1k,union_1k,in1k,tiny,imbalanced_2k,centered_2k,in21k_leaf,coarse_d4,in21k
$PY -m clusterbench separability --multirun dataset=$DATASETS extractor=ibot_vitl \
    hydra.sweep.dir=$OUT/figure4/separability "$@"
$PY -m clusterbench probe --multirun dataset=$DATASETS extractor=ibot_vitl \
    hydra.sweep.dir=$OUT/figure4/probing "$@"
$PY -m clusterbench report $OUT/figure4
