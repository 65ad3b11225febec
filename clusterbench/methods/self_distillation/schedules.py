"""Step-wise schedules (DINO style) as plain functions of the step index.

Computing a value from the step, rather than storing a per-step array, keeps resumed runs
exact and costs nothing at ImageNet-21K scale (tens of thousands of steps per epoch).
"""

from __future__ import annotations

import math

import numpy as np


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """`start` at step 0 rising linearly to `end` at step `warmup_steps - 1`, then flat.

    Same values as `np.linspace(start, end, warmup_steps)` followed by `end`.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(end)
    if warmup_steps == 1:
        return float(start)
    return float(start + (end - start) * max(step, 0) / (warmup_steps - 1))


def cosine_schedule(
    step: int,
    total_steps: int,
    base: float,
    final: float,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
) -> float:
    """Linear warm-up from `warmup_start` to `base`, then half a cosine from `base` to `final`.

    Used for the learning rate (final == base gives a flat schedule after warm-up) and for the
    teacher momentum (base 0.996 rising to final 1.0). Steps past the end return `final`.
    """
    if step < warmup_steps:
        return linear_warmup(step, warmup_steps, warmup_start, base)
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(step - warmup_steps, decay_steps) / decay_steps
    return float(final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress)))


def cosine_schedule_array(
    base: float,
    final: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
    warmup_start: float = 0.0,
) -> np.ndarray:
    """Whole schedule as an array of length `epochs * steps_per_epoch` (for plots and tests)."""
    total = epochs * steps_per_epoch
    warmup = warmup_epochs * steps_per_epoch
    return np.array(
        [cosine_schedule(i, total, base, final, warmup, warmup_start) for i in range(total)]
    )
