#!/usr/bin/env bash
# Table 4 (multi-label accuracies top1->1, top1->L, top5->1, top5->L), three seeds: ImageNet21K
# with iBOT ViT-L (S_L = the GT class and its ancestors), ImageNet-1K ReaL with MAE-R ViT-H.
# Results: outputs/sweeps/table4/
# Usage: bash multirun_sweeps/table4.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=table4 dataset=in21k,in1k_real method=kmeans,temi,scanv2 \
    seed=0,1,2 "$@"
$PY -m clusterbench probe --multirun dataset=in21k extractor=ibot_vitl \
    hydra.sweep.dir=$OUT/table4/probing_in21k "$@"
$PY -m clusterbench probe --multirun dataset=in1k_real extractor=mae_r_vith \
    hydra.sweep.dir=$OUT/table4/probing_in1k "$@"
$PY -m clusterbench report $OUT/table4
