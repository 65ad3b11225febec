"""What the run scores: a view's predictions against its labels, as the view asks."""

from __future__ import annotations

from clusterbench.data.view import BenchmarkView
from clusterbench.evaluation.metrics import evaluate
from clusterbench.evaluation.predictions import Predictions
from clusterbench.evaluation.sampled import evaluate_real


def evaluate_view(predictions: Predictions, view: BenchmarkView) -> dict:
    """The paper's metrics; views whose GT is a set (`view.evaluation = SampledLabels`, e.g.
    ImageNet-1K ReaL) estimate the mapping against one label sampled from each set, repeated
    (section 4.4)."""
    if view.evaluation is not None:
        return evaluate_real(
            predictions,
            view.val_label_sets,
            view.num_classes,
            repeats=view.evaluation.repeats,
            seed=view.evaluation.seed,
        )
    return evaluate(predictions, view.val_labels, view.num_classes, view.val_label_sets)
