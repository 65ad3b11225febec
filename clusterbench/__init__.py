"""clusterbench: benchmark feature-based image clustering (k-means, TEMI, SCANv2) at scale."""

from clusterbench import resolvers as _resolvers  # noqa: F401  (conf/ interpolates them)

__version__ = "0.1.0"
