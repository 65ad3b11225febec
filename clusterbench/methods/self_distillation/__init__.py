"""TEMI and SCANv2: H clustering heads trained by self-distillation from an EMA teacher on
nearest-neighbour pairs (paper section 3), in one package.

    method.py     `method=temi|scanv2`: the run adapter (pairs -> Lightning fit -> predictions)
    module.py     the LightningModule: schedules, training step, best head, prediction
    fused.py      the blocked last layer + loss with closed-form gradients (performance kernel)
    reference.py  the straightforward per-head loop the fused kernel equals (tests, the speed tool)
    heads.py      stacked heads, input normalisation, weight-decay groups
    losses.py     Eq. 1 (TEMI) and Eq. 2 (SCANv2) as pure functions, vectorised over heads
    ema.py        the momentum teacher
    schedules.py  warm-up and cosine schedules as functions of the step
    pairs.py      the (x, x') sampler and DataModule
"""
