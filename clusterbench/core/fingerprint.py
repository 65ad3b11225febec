"""Cache keys and content fingerprints: one digest recipe for stores, views, generated
datasets, benchmark files and kNN tables."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def digest(payload, length: int = 16) -> str:
    """sha1 of the payload's canonical JSON (sorted keys), as `length` hex digits."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def array_checksum(array: np.ndarray) -> str:
    """sha1 of an array's bytes: verifies a cached array, not a key."""
    return hashlib.sha1(np.ascontiguousarray(array).data).hexdigest()


def fingerprint_files(files: list[Path], sample_bytes: int = 1 << 20) -> str:
    """Cheap content fingerprint: names, sizes, modification times and the first/last MiB.

    Hashing 22 GB of features on every run would cost minutes. Size plus head and tail catch
    rewrites, truncation and regenerated stores; the modification time (ns) catches a file
    edited in place in the middle, which would otherwise keep every cache keyed by it (the
    finite-check verdict, views, kNN tables). Copying a store without its times re-keys it.
    """
    digest = hashlib.sha1()
    for file in files:
        stat = file.stat()
        size = stat.st_size
        digest.update(f"{file.name}:{size}:{stat.st_mtime_ns}".encode())
        with open(file, "rb") as fh:
            digest.update(fh.read(sample_bytes))
            if size > sample_bytes:
                fh.seek(max(size - sample_bytes, sample_bytes))
                digest.update(fh.read(sample_bytes))
    return digest.hexdigest()[:16]
