"""The feature-store contract: valid stores open memory-mapped; bad ones fail with one clear message."""

from __future__ import annotations

import numpy as np
import pytest

from clusterbench.core.errors import StoreError
from clusterbench.data.store import FeatureStore
from tests.helpers.stores import write_store


def _arrays(n=20, d=4, c=3):
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((n, d)).astype(np.float32),
        rng.integers(0, c, n).astype(np.int64),
        rng.standard_normal((n // 2, d)).astype(np.float16),
        rng.integers(0, c, n // 2).astype(np.int64),
    )


def test_valid_store_is_memory_mapped(tmp_path):
    root = write_store(tmp_path / "s", *_arrays(), classes=["a", "b", "c"])
    store = FeatureStore.open(root)
    assert isinstance(store.train.features, np.memmap)
    assert store.dim == 4 and store.num_classes == 3 and len(store.val) == 10
    assert store.val.features.dtype == np.float16
    assert len(store.fingerprint) == 16


def test_fingerprint_changes_when_data_changes(tmp_path):
    arrays = list(_arrays())
    before = FeatureStore.open(write_store(tmp_path / "s", *arrays)).fingerprint
    arrays[0] = arrays[0] + 1
    after = FeatureStore.open(write_store(tmp_path / "s", *arrays)).fingerprint
    assert before != after


def test_missing_directory(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        FeatureStore.open(tmp_path / "nope")


def test_missing_file(tmp_path):
    root = write_store(tmp_path / "s", *_arrays())
    (root / "val_labels.npy").unlink()  # labels for one split only: named, not half graded
    with pytest.raises(StoreError, match=r"val_labels\.npy is missing while .*train_labels"):
        FeatureStore.open(root)
    (root / "train.npy").unlink()
    with pytest.raises(StoreError, match=r"missing file .*train\.npy"):
        FeatureStore.open(root)


def test_wrong_ndim(tmp_path):
    train, tl, val, vl = _arrays()
    root = write_store(tmp_path / "s", train.reshape(20, 2, 2), tl, val, vl)
    with pytest.raises(
        StoreError, match=r"train\.npy: expected a 2-D array .* found shape \(20, 2, 2\)"
    ):
        FeatureStore.open(root)


def test_dim_mismatch(tmp_path):
    train, tl, val, vl = _arrays()
    root = write_store(tmp_path / "s", train, tl, val[:, :3], vl)
    with pytest.raises(StoreError, match="train.npy has dimension 4 but val.npy has 3"):
        FeatureStore.open(root)


def test_label_length_mismatch(tmp_path):
    train, tl, val, vl = _arrays()
    root = write_store(tmp_path / "s", train, tl[:-1], val, vl)
    with pytest.raises(StoreError, match="has 19 labels but train.npy has 20 rows"):
        FeatureStore.open(root)


def test_non_integer_labels(tmp_path):
    train, tl, val, vl = _arrays()
    root = write_store(tmp_path / "s", train, tl.astype(np.float32), val, vl)
    with pytest.raises(StoreError, match="expected integer labels .* found dtype float32"):
        FeatureStore.open(root)


def test_negative_labels(tmp_path):
    train, tl, val, vl = _arrays()
    vl[:2] = -1
    root = write_store(tmp_path / "s", train, tl, val, vl)
    with pytest.raises(StoreError, match="2 labels are negative"):
        FeatureStore.open(root)


def test_non_finite_rows_are_counted(tmp_path):
    train, tl, val, vl = _arrays()
    train[3, 0], train[7, 1], train[7, 2] = np.nan, np.inf, np.nan
    root = write_store(tmp_path / "s", train, tl, val, vl)
    with pytest.raises(StoreError, match="2 of 20 rows contain NaN or inf"):
        FeatureStore.open(root)


def test_labels_beyond_classes_txt(tmp_path):
    train, tl, val, vl = _arrays()
    root = write_store(tmp_path / "s", train, tl, val, vl, classes=["a", "b"])
    with pytest.raises(StoreError, match="out of range for classes.txt, which lists 2 classes"):
        FeatureStore.open(root)


def test_integer_features_rejected(tmp_path):
    train, tl, val, vl = _arrays()
    root = write_store(tmp_path / "s", train.astype(np.int32), tl, val, vl)
    with pytest.raises(StoreError, match="expected float16 or float32 features, found int32"):
        FeatureStore.open(root)


def test_corrupt_npy(tmp_path):
    root = write_store(tmp_path / "s", *_arrays())
    (root / "val.npy").write_bytes(b"not an array")
    with pytest.raises(StoreError, match="val.npy is not a readable .npy array"):
        FeatureStore.open(root)


def test_finite_scan_is_remembered_per_fingerprint(tmp_path, monkeypatch):
    import clusterbench.data.store as store_module

    root = write_store(tmp_path / "s", *_arrays())
    calls = []
    real = store_module._check_finite
    monkeypatch.setattr(store_module, "_check_finite", lambda f, x: calls.append(f) or real(f, x))
    FeatureStore.open(root, cache_dir=tmp_path / "cache")
    FeatureStore.open(root, cache_dir=tmp_path / "cache")
    assert len(calls) == 2  # train and val, scanned once
    train, tl, val, vl = _arrays()
    train[0, 0] = np.nan  # new content, new fingerprint: scanned again and caught
    write_store(root, train, tl, val, vl)
    with pytest.raises(StoreError, match="1 of 20 rows contain NaN"):
        FeatureStore.open(root, cache_dir=tmp_path / "cache")
