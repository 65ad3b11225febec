"""User-facing errors: raised at the boundary with one message naming what was wrong."""


class ClusterbenchError(Exception):
    """Base class for errors the entry point reports as one clear line (no traceback)."""


class StoreError(ClusterbenchError):
    """A feature store on disk does not follow the documented format."""


class ConfigError(ClusterbenchError):
    """A configuration value is missing or inconsistent with the data."""


class BenchmarkFileError(ClusterbenchError):
    """A benchmark input file (relabelling, per-class accuracies, ReaL labels) is malformed."""


class TreeFileError(ClusterbenchError, ValueError):
    """A tree file does not follow the documented format."""


class TrainingDiverged(ClusterbenchError):
    """The training loss became NaN or infinite."""


class ExtractionError(ClusterbenchError):
    """Images, model weights or an earlier partial run do not allow feature extraction."""
