"""Class separability of a benchmark's GT labels: L_align, Davies-Bouldin, silhouette
(`python -m clusterbench separability`). Figure 4 against probe accuracy is drawn by the
report (`report/figure4.py`)."""
