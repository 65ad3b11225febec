"""clusterbench: benchmark feature-based image clustering (k-means, TEMI, SCANv2) at scale."""

__version__ = "0.1.0"
