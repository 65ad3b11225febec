"""The report's K-estimation table from real runs: estimates beside the true K, ACC / NMI at
both, and FINCH as a column beyond the paper; runs that chose K never mix with runs told K."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from clusterbench.report.__main__ import report
from clusterbench.run import run
from tests.helpers.compose import compose_config
from tests.helpers.stores import sphere_blobs, write_store

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("k")
    train, train_labels = sphere_blobs(120, 8, 16, seed=2, spread=0.08)
    val, val_labels = sphere_blobs(20, 8, 16, seed=2, spread=0.08)
    store = write_store(root / "store", train, train_labels, val, val_labels)
    jobs = [("kmeans", "auto", 0), ("kmeans", "auto", 1), ("kmeans", "null", 0),
            ("kmeans", "null", 1), ("finch", "null", 0)]  # fmt: skip
    for i, (method, k, seed) in enumerate(jobs):
        cfg = compose_config(
            root,
            [f"paths.root_dir={root}", "dataset=custom", f"dataset.path={store}", "logger=none",
             "device=cpu", f"method={method}", f"method.num_clusters={k}", f"seed={seed}",
             "label_free.generalisation=false"],
        )  # fmt: skip
        # Two sweeps, as a user runs them: the estimates, and the runs told K.
        sweep = "auto" if k == "auto" else "told"
        run(cfg, root / "sweep" / sweep / f"{i}_{method}_{seed}", QUIET)
    return root / "sweep"


def test_the_k_table_sets_the_estimate_beside_the_true_k(sweep, tmp_path):
    written = report([sweep], tmp_path / "out")
    text = (tmp_path / "out" / "k_estimation.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| auto |")]
    assert len(rows) == 1, text  # one (benchmark, method, estimator)
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert cells[2:4] == ["k-means", "two_level"]
    estimated = float(cells[4].split()[0])
    assert abs(estimated - 8) <= 2 and "(2 seeds)" in cells[4]
    assert cells[5] == "8" and cells[7].startswith("classes (8): ")
    # ACC / NMI at the estimated K, and at the true K from the other sweep, each over two seeds.
    assert all(cell.endswith("(2)") for cell in cells[8:12]), cells
    assert float(cells[11].split()[0]) > 90  # NMI at the true K on well-separated blobs
    assert (
        float(cells[12].split()[0]) >= 0 and float(cells[13].split()[0]) >= 0
    )  # the cost of choosing K, of fitting
    assert (tmp_path / "out" / "k_estimation.png").is_file()
    assert "K estimation" in written["figures"]


def test_finch_is_a_column_beyond_the_paper_and_auto_runs_stay_out_of_it(sweep, tmp_path):
    report([sweep], tmp_path / "out")
    text = (tmp_path / "out" / "told.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| benchmark"))
    assert "FINCH †" in header and "beyond the paper" in text
    # The k-means cell holds the two runs told K, not the runs that chose it.
    row = next(line for line in text.splitlines() if "| 960 |" in line)
    kmeans = [c.strip() for c in row.split("|")[1:-1]][header.split("|")[1:-1].index(" k-means ")]
    assert kmeans.strip("*").endswith("(2)") and "settings differ" not in text
