#!/usr/bin/env bash
# Figure 7 (appendix B.5): CLIP zero-shot reliability on ImageNet21K with OpenCLIP ViT-G features
# for the three candidate sets: all 10450 classes, the GT class's level, its siblings.
# Results: outputs/sweeps/figure7/
# Usage: bash multirun_sweeps/figure7.sh [LAUNCHER] [OVERRIDES]; LAUNCHER is nothing (one job after
# the other), hydra/launcher=local (submitit, local processes) or hydra/launcher=slurm
# hydra.launcher.partition=P (one SLURM job per run). Extra arguments reach every --multirun.
set -uo pipefail  # a failed job does not stop the others; the report lists it
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${CLUSTERBENCH_OUTPUTS:-outputs}/sweeps
$PY -m clusterbench zeroshot --multirun extractor=clip_vitg dataset=in21k \
    zeroshot.candidates=all,level,siblings hydra.sweep.dir=$OUT/figure7 "$@"
$PY -m clusterbench report $OUT/figure7
