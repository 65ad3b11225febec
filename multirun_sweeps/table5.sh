#!/usr/bin/env bash
# Table 5 (appendix C.4): frequency-based (Tiny..Huge) and coarse (d = 1..8) ImageNet21K
# benchmarks and ImageNet21K, three seeds, iBOT ViT-L, 25 epochs. Its runs also draw Figure 2
# (both panels) and the k-means line of Figure 5. Results: outputs/sweeps/table5/
# Usage: bash multirun_sweeps/table5.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=table5 \
    dataset=tiny,small,base,large,huge,coarse_d1,coarse_d2,coarse_d3,coarse_d4,coarse_d5,coarse_d6,coarse_d7,coarse_d8,in21k \
    method=kmeans,temi,scanv2 seed=0,1,2 "$@"
$PY -m clusterbench probe --multirun \
    dataset=tiny,small,base,large,huge,coarse_d1,coarse_d2,coarse_d3,coarse_d4,coarse_d5,coarse_d6,coarse_d7,coarse_d8,in21k \
    extractor=ibot_vitl hydra.sweep.dir=$OUT/table5/probing "$@"
$PY -m clusterbench report $OUT/table5
