"""Clustering methods: k-means and the self-distillation heads (TEMI, SCANv2)."""
