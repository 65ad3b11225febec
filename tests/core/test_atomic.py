"""Atomic writes: a failed write leaves the previous file (or none) and no temporary files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clusterbench.core.atomic import (
    atomic_file,
    replace_dir,
    save_npy_atomic,
    write_dir_atomically,
    write_json_atomic,
)


def test_a_json_write_that_fails_halfway_leaves_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"acc": 0.5})
    # json.dump has written `{"ok": 1, ` when it meets a key it cannot encode.
    with pytest.raises(TypeError):
        write_json_atomic(path, {"ok": 1, ("not", "a", "str"): 2})
    assert json.loads(path.read_text()) == {"acc": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_failing_block_leaves_no_file(tmp_path):
    path = tmp_path / "sub" / "a.npy"
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert not path.exists() and list(path.parent.iterdir()) == []
    save_npy_atomic(path, np.arange(3))
    assert np.load(path).tolist() == [0, 1, 2]


def test_a_directory_writer_that_fails_leaves_no_directory(tmp_path):
    root = tmp_path / "store"

    def write(tmp):
        (tmp / "train.npy").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_dir_atomically(root, write)
    assert list(tmp_path.iterdir()) == []


def test_replace_dir_needs_overwrite_and_then_leaves_only_the_new(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "new.txt").write_text("new")
    with pytest.raises(FileExistsError):
        replace_dir(new, dest)
    assert (dest / "old.txt").read_text() == "old" and (new / "new.txt").exists()
    replace_dir(new, dest, overwrite=True)
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
