#!/usr/bin/env bash
# Table 2 (fine-grained benchmarks), three seeds, iBOT ViT-L, 25 epochs. leaf_hzr and p_hzr need
# their relabel files first (python -m clusterbench hzr, docs/producers.md: Zero-shot and relabelling).
# Results: outputs/sweeps/table2/
# Usage: bash multirun_sweeps/table2.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=table2 \
    dataset=wordnet_leaf,in21k_leaf,coarse_d4,leaf_hzr,p_hzr,in21k method=kmeans,temi,scanv2 seed=0,1,2 "$@"
$PY -m clusterbench probe --multirun dataset=wordnet_leaf,in21k_leaf,coarse_d4,leaf_hzr,p_hzr,in21k \
    extractor=ibot_vitl hydra.sweep.dir=$OUT/table2/probing "$@"
$PY -m clusterbench report $OUT/table2
