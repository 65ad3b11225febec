"""See the clusters: a static, browsable atlas of a finished run (`python -m clusterbench.explore`)."""
