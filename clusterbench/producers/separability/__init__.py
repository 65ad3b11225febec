"""Class separability of a benchmark's GT labels: L_align, Davies-Bouldin, silhouette
(`python -m clusterbench separability`), and Figure 4 against probe accuracy (`.plot`)."""
