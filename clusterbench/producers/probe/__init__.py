"""Linear probing on precomputed features: the paper's upper bound and the per-class
accuracies behind the model-based benchmarks (`python -m clusterbench probe`)."""
