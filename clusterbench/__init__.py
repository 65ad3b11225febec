"""clusterbench: benchmark feature-based image clustering (k-means, TEMI, SCANv2) at scale."""

from clusterbench.core import config as _config  # noqa: F401  (registers the resolvers conf/ uses)

__version__ = "0.1.0"
