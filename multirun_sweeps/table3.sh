#!/usr/bin/env bash
# Table 3 (model-based ImageNet21K subsets), three seeds, iBOT ViT-L for every row (ImageNet-1K
# too). clip_1k, dinov2_1k, sup_1k read per-class probe accuracies that python -m clusterbench probe
# writes on dataset=in21k with clip_vitg / dinov2_vitg / sup_vitl features. Results: outputs/sweeps/table3/
# Usage: bash multirun_sweeps/table3.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=table3 \
    dataset=clip_1k,dinov2_1k,sup_1k,random_1k,in1k,union_1k method=kmeans,temi,scanv2 seed=0,1,2 "$@"
$PY -m clusterbench probe --multirun dataset=clip_1k,dinov2_1k,sup_1k,random_1k,in1k,union_1k \
    extractor=ibot_vitl hydra.sweep.dir=$OUT/table3/probing "$@"
$PY -m clusterbench report $OUT/table3
