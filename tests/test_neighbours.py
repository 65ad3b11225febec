"""kNN mining against brute force, and the on-disk cache's invalidation rules."""

from __future__ import annotations

import numpy as np
import pytest

from clusterbench import neighbours as nb
from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import FeatureRows


def brute_force(x: np.ndarray, k: int) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


@pytest.fixture
def points() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((300, 12)).astype(np.float32)


@pytest.mark.parametrize("chunk_size", [300, 64])
def test_exact_matches_brute_force(points, chunk_size):
    found = nb.search_neighbours(FeatureRows(points), k=7, chunk_size=chunk_size, device="cpu")
    assert found.shape == (300, 7) and found.dtype == np.int64
    assert np.array_equal(found, brute_force(points, 7))


def test_ivf_with_all_cells_probed_is_exact(points):
    found = nb.search_neighbours(
        FeatureRows(points), k=5, index="IVF4,Flat", nprobe=4, device="cpu"
    )
    assert np.array_equal(np.sort(found, 1), np.sort(brute_force(points, 5), 1))


def test_view_rows_are_searched_in_view_order(points):
    index = np.array([5, 2, 9, 100, 250, 7, 3, 11])
    found = nb.search_neighbours(FeatureRows(points, index), k=3, device="cpu")
    assert np.array_equal(found, brute_force(points[index], 3))


def test_self_is_excluded_even_with_duplicates():
    x = np.array([[1, 0], [1, 0], [0, 1], [0.9, 0.1]], dtype=np.float32)
    found = nb.search_neighbours(FeatureRows(x), k=2, device="cpu")
    assert all(i not in row for i, row in enumerate(found))
    assert set(found[0]) == {1, 3} and set(found[1]) == {0, 3}


def test_k_must_be_below_n(points):
    with pytest.raises(ConfigError, match=r"knn.k=300 must be in \[1, N-1\] for a split of N=300"):
        nb.search_neighbours(FeatureRows(points), k=300, device="cpu")


def test_cache_reused_and_invalidated(points, tmp_path):
    rows = FeatureRows(points)
    first, cached = nb.mine_neighbours(rows, "fp1", "train", 5, tmp_path, device="cpu")
    assert not cached
    again, cached = nb.mine_neighbours(rows, "fp1", "train", 5, tmp_path, device="cpu")
    assert cached and np.array_equal(first, again)
    # Another fingerprint (regenerated store / other view), k or index: not reused.
    assert not nb.mine_neighbours(rows, "fp2", "train", 5, tmp_path, device="cpu")[1]
    assert not nb.mine_neighbours(rows, "fp1", "train", 6, tmp_path, device="cpu")[1]
    # Tampered content fails the checksum and is rebuilt with the right answer.
    cache = nb.NeighbourCache(tmp_path)
    path = cache.dir / f"{cache.key('fp1', 'train', 5, 'Flat')}.npy"
    tampered = np.load(path)
    tampered[0, 0] = (tampered[0, 0] + 1) % 300
    np.save(path, tampered)
    rebuilt, cached = nb.mine_neighbours(rows, "fp1", "train", 5, tmp_path, device="cpu")
    assert not cached and np.array_equal(rebuilt, first)
    # A truncated file is rebuilt too.
    path.write_bytes(path.read_bytes()[:100])
    rebuilt, cached = nb.mine_neighbours(rows, "fp1", "train", 5, tmp_path, device="cpu")
    assert not cached and np.array_equal(rebuilt, first)
    assert nb.mine_neighbours(rows, "fp1", "train", 5, tmp_path, device="cpu")[1]


def test_cache_with_wrong_shape_is_rebuilt(points, tmp_path):
    rows = FeatureRows(points)
    nb.mine_neighbours(rows, "fp", "train", 5, tmp_path, device="cpu")
    # Same key but the split now has fewer rows (e.g. a store edited in place): not reused.
    smaller = FeatureRows(points[:200])
    found, cached = nb.mine_neighbours(smaller, "fp", "train", 5, tmp_path, device="cpu")
    assert not cached and found.shape == (200, 5) and found.max() < 200
