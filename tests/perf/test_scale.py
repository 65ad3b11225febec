"""The million-row benchmark (`python -m clusterbench perf scale`): its pieces and a quick run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clusterbench.core.config import build
from clusterbench.data.rows import FeatureRows
from clusterbench.neighbours import NeighbourCache, build_index, ivf_nlist, resolve_index
from clusterbench.perf.__main__ import main as perf_main
from clusterbench.perf.scale import choose, ivf_defaults, recall
from clusterbench.perf.scale_data import QUICK, exact_neighbours, mixture_on_sphere
from tests.helpers.compose import compose_config


def test_mixture_is_deterministic_unit_rows_with_class_structure():
    x, y = mixture_on_sphere(QUICK, chunk=1000)
    x2, y2 = mixture_on_sphere(QUICK, chunk=1000)
    assert x.shape == (QUICK.rows, QUICK.dim) and x.dtype == np.float32
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert np.bincount(y, minlength=QUICK.clusters).min() > 0
    # Neighbours mostly share the class, far above the 1/clusters of unstructured data.
    queries = np.arange(0, QUICK.rows, 60)
    truth = exact_neighbours(x, queries, 10)
    assert (y[truth] == y[queries, None]).mean() > 0.6


def test_exact_neighbours_match_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = np.array([0, 7, 123, 499])
    found = exact_neighbours(x, queries, 5, chunk=64)  # 8 chunks merged
    scores = x[queries] @ x.T
    scores[np.arange(queries.size), queries] = -np.inf  # self excluded
    expected = np.argsort(-scores, axis=1)[:, :5]
    assert np.array_equal(found, expected)


def test_recall_counts_shared_neighbours():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall(truth, truth) == 1.0
    assert recall(truth[:, ::-1], truth) == 1.0  # order does not matter
    assert recall(np.array([[1, 2, 9, 9], [0, 0, 0, 0]]), truth) == pytest.approx(2 / 8)


def test_choose_takes_the_fastest_pair_reaching_the_target():
    def row(nlist, nprobe, recall_, seconds):
        return {
            "nlist": nlist,
            "nprobe": nprobe,
            "recall": recall_,
            "train_seconds": seconds,
            "add_seconds": 0.0,
            "search_seconds_all_rows": 0.0,
        }

    rows = [row(1024, 8, 0.93, 1), row(1024, 32, 0.97, 9), row(4096, 32, 0.96, 5)]
    assert (choose(rows, 0.95)["nlist"], choose(rows, 0.95)["nprobe"]) == (4096, 32)
    assert choose(rows, 0.99)["nprobe"] == 32 and choose(rows, 0.99)["nlist"] == 1024


def test_build_index_reports_train_and_add_time():
    x, _ = mixture_on_sphere(QUICK)
    timings: dict = {}
    index = build_index(FeatureRows(x), "IVF16,Flat", 4, "cpu", 1000, 0, timings)
    assert index.ntotal == QUICK.rows and index.nprobe == 4
    assert set(timings) == {
        "train_seconds",
        "add_seconds",
        "train_cpu_seconds",
        "add_cpu_seconds",
    }
    assert all(value >= 0 for value in timings.values())


def test_quick_run_writes_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLUSTERBENCH_PROGRESS", "0")
    out = tmp_path / "scale.json"
    assert perf_main(["scale", "--quick", "--e2e", "auto", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["data"]["rows"] == QUICK.rows and report["k"] == ivf_defaults()["k"]
    assert report["exact"]["queries"] == 500
    assert {(r["nlist"], r["nprobe"]) for r in report["sweep"]} == {
        (nlist, nprobe) for nlist in (16, 64) for nprobe in (1, 4, 16)
    }
    for row in report["sweep"]:
        assert 0.0 <= row["recall"] <= 1.0
        assert row["train_seconds"] >= 0 and row["search_seconds"] > 0
    # Visiting every cell is exact search (up to float rounding at the k-th neighbour).
    assert all(r["recall"] >= 0.999 for r in report["sweep"] if r["nprobe"] == r["nlist"])
    chosen = report["chosen"]
    row = next(
        r
        for r in report["sweep"]
        if (r["nlist"], r["nprobe"]) == (chosen["nlist"], chosen["nprobe"])
    )
    assert row["recall"] >= 0.95
    e2e = report["end_to_end"]
    assert e2e["index"] == f"IVF{chosen['nlist']},Flat" and e2e["nprobe"] == chosen["nprobe"]
    assert 0.0 <= e2e["knn_recall"] <= 1.0 and 0.0 <= e2e["acc"] <= 1.0
    assert e2e["total_seconds"] == pytest.approx(e2e["knn_seconds"] + e2e["kmeans_seconds"])
    assert e2e["kmeans_info"]["kmeans_train_points"] <= QUICK.rows
    assert "recall@50" in capsys.readouterr().out


def test_ivf_nlist_follows_sqrt_n_within_the_training_sample():
    assert ivf_nlist(1_000_000) == 4096  # 4 sqrt(N), the measured default
    assert ivf_nlist(20_000) == 512  # 4 * 141 = 566 -> nearest power of two
    for n in (100, 1437, 20_000, 250_000, 1_000_000, 10**8):
        nlist = ivf_nlist(n)
        assert nlist & (nlist - 1) == 0  # a power of two
        assert nlist * 39 <= max(39, min(n, 256 * 1024))  # faiss's 39 training points per cell
    assert resolve_index("IVFauto,Flat", 1_000_000) == "IVF4096,Flat"
    assert resolve_index("IVF64,Flat", 10) == "IVF64,Flat" and resolve_index("Flat", 10) == "Flat"


def test_knn_ivf_config_mines_with_cells_from_n(tmp_path):
    cfg = compose_config(tmp_path, ["knn=ivf"])
    assert cfg.knn.nlist == "auto" and cfg.knn.index == "IVFauto,Flat"
    x, _ = mixture_on_sphere(QUICK)
    neighbours = build(cfg.knn)(
        rows=FeatureRows(x), fingerprint="fp", cache_dir=tmp_path, device="cpu", seed=0
    )
    table = neighbours.table(10)
    assert table.shape == (QUICK.rows, 10) and not neighbours.from_cache
    queries = np.arange(0, QUICK.rows, 97)
    assert recall(table[queries], exact_neighbours(x, queries, 10)) > 0.9
    key = NeighbourCache(tmp_path).key("fp", "train", 50, f"IVF{ivf_nlist(QUICK.rows)},Flat")
    assert (tmp_path / "knn" / f"{key}.npy").exists()  # the cache names the cells used
