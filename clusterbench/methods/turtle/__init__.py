"""TURTLE (Gadetsky et al., ICML 2024): unsupervised transfer by searching the labelling of
the data that linear classifiers on every representation space generalise best on.

    method.py  `method=turtle`: the run adapter (spaces -> Lightning fit -> predictions, save)
    module.py  the LightningModule: stacked task encoder, inner classifiers, outer loss
    data.py    outer-step batch sampler and DataModule (spaces zero-padded and stacked)
"""

from clusterbench.methods.turtle.method import Turtle
from clusterbench.methods.turtle.module import TaskEncoder, TurtleClustering

__all__ = ["TaskEncoder", "Turtle", "TurtleClustering"]
