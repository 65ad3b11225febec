#!/usr/bin/env bash
# Figure 3: TEMI and SCANv2 on ImageNet-1K (50 epochs) for every feature extractor, three seeds:
# left/middle the reliability diagrams (MAE-R ViT-H runs), right TEMI - SCANv2 ACC per extractor.
# Results: outputs/sweeps/figure3/
# Usage: bash multirun_sweeps/figure3.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench --multirun experiment=figure3 dataset=in1k method=temi,scanv2 \
    extractor=mae_r_vith,ibot_vitl,dinov2_vitg,clip_vitg,clip_vitb32,clip_vitl14,sup_vitl,dino_vitb16 \
    seed=0,1,2 "$@"
$PY -m clusterbench report $OUT/figure3
