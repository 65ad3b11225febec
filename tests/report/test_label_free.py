"""The report's label-free selection view and the seeds' agreement in `aggregate`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from clusterbench.report.__main__ import report
from clusterbench.report.aggregate import main as aggregate
from clusterbench.report.collect import seed_stability

ACC = [0.30, 0.55, 0.42, 0.61, 0.20]
SILHOUETTE = [0.10, 0.30, 0.25, 0.28, 0.05]  # ranks like ACC but for runs 1 and 3
SIZES = [0.9, 0.2, 0.5, 0.4, 0.95]  # ranks against ACC


def write_run(root, i: int, acc: float, silhouette: float, balance: float) -> None:
    run = root / f"{i}_run"
    run.mkdir(parents=True)
    result = {
        "method": "kmeans", "dataset": "digits", "seed": i, "metrics": {"acc": acc},
        "label_free": {"silhouette": {"value": silhouette},
                       "cluster_sizes": {"normalized_entropy": balance}},
        "config": {"dataset": {"name": "digits"}, "method": {"name": "kmeans"}, "seed": i},
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(result))


def test_the_selection_table_ranks_scores_against_acc(tmp_path):
    sweep = tmp_path / "sweep"
    for i, values in enumerate(zip(ACC, SILHOUETTE, SIZES, strict=True)):
        write_run(sweep, i, *values)
    report([sweep], tmp_path / "out")
    text = (tmp_path / "out" / "label_free.md").read_text()
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.count("|") > 5}
    rho = spearmanr(SILHOUETTE, ACC).statistic
    assert f"{rho:+.2f}" in rows["silhouette"] and rho > 0.8
    # The silhouette picks run 1 (55 %), not the best (61 %); the median of the five is 42 %.
    assert "digits / kmeans / seed 1 | 55.00 | 61.00 | 42.00" in rows["silhouette"]
    assert f"{spearmanr(SIZES, ACC).statistic:+.2f}" in rows["size balance"]
    assert rows["size balance"].split("|")[4].strip().startswith("-")
    assert (tmp_path / "out" / "label_free_selection.png").is_file()


def test_seed_stability_is_the_mean_pairwise_nmi_of_the_train_assignments(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 5, 300)
    runs = {"a": base, "b": (base + 1) % 5, "c": rng.integers(0, 5, 300)}  # b: a relabelled
    results = []
    for name, clusters in runs.items():
        folder = tmp_path / name / "assignments"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"cluster": clusters.astype(np.int32)}), folder / "train.parquet")
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"method": "kmeans", "dataset": "d", "seed": len(results), "metrics": {"acc": 0.5},
             "config": {"seed": len(results)}}))  # fmt: skip
        results.append({"_file": str(tmp_path / name / "results.json")})
    value = seed_stability(results[:2])
    assert value is not None and abs(value - 1.0) < 1e-9  # the same partition, renamed
    assert seed_stability(results) < 0.7 and seed_stability(results[:1]) is None
    rows = aggregate([str(tmp_path)])
    assert rows[0]["seed_nmi"] == seed_stability(results)
    report([tmp_path], tmp_path / "out")  # the report shows the same number
    text = (tmp_path / "out" / "seed_agreement.md").read_text()
    assert f"| d | kmeans | – | 0,1,2 | {100 * seed_stability(results):.2f} |" in text
