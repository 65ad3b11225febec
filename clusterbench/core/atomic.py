"""Atomic writes: a final artefact either exists complete or not at all (temp name, then rename)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path next to `path` to write; renamed onto `path` when the block succeeds,
    removed when it fails. `mode` is applied first (mkstemp files are private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, payload: dict) -> Path:
    with atomic_file(path) as tmp, open(tmp, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=False, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_npy_atomic(path: str | os.PathLike, array) -> Path:
    import numpy as np

    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return Path(path)


def write_dir_atomically(root: Path, write: Callable[[Path], None]) -> Path:
    """Run write(tmp) in a fresh directory next to `root`, then rename it into place.

    `root/meta.json` marks a finished directory: writers must create it.
    """
    if (root / "meta.json").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; caches may be shared
        try:
            os.replace(tmp, root)
        except OSError:  # another process won the race and wrote the same entry
            if not (root / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def replace_dir(tmp: Path, dest: Path, overwrite: bool = False) -> Path:
    """Rename the finished directory `tmp` onto `dest`, so a reader sees the old directory or
    the new one, never half of either. An existing `dest` is replaced only with `overwrite`
    (moved aside, then deleted once the new one is in place); else FileExistsError, which the
    caller words for its own setting."""
    dest = Path(dest)
    if not dest.exists():
        os.replace(tmp, dest)
        return dest
    if not overwrite:
        raise FileExistsError(errno.EEXIST, "directory exists", str(dest))
    aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}-old-", dir=dest.parent))
    os.replace(dest, aside / dest.name)
    os.replace(tmp, dest)
    shutil.rmtree(aside, ignore_errors=True)
    return dest
