"""Stages that run after a method has predicted and may replace its predictions
(`refine=self_label`: conf/refine/self_label.yaml)."""

from clusterbench.refine.classifier import SelfLabelClassifier
from clusterbench.refine.self_label import SelfLabel, SelfLabelled

__all__ = ["SelfLabel", "SelfLabelClassifier", "SelfLabelled"]
