#!/usr/bin/env bash
# Table 1 (class imbalance), three seeds: k-means, TEMI, SCANv2 on ImageNet-1K and ImageNet-1K
# ODD (MAE-R ViT-H, 50 epochs), Imbalanced-2K and Centered-2K (iBOT ViT-L, 25 epochs),
# then the Probing column and the report. Results: outputs/sweeps/table1/
# Usage: bash multirun_sweeps/table1.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=table1 dataset=in1k,in1k_odd,imbalanced_2k,centered_2k \
    method=kmeans,temi,scanv2 seed=0,1,2 "$@"
$PY -m clusterbench probe --multirun dataset=in1k,in1k_odd extractor=mae_r_vith \
    hydra.sweep.dir=$OUT/table1/probing_in1k "$@"
$PY -m clusterbench probe --multirun dataset=imbalanced_2k,centered_2k extractor=ibot_vitl \
    hydra.sweep.dir=$OUT/table1/probing_in21k "$@"
$PY -m clusterbench report $OUT/table1
