"""The assignment export at ImageNet-21K scale: `python -m clusterbench perf assignments`.

    python -m clusterbench perf assignments [--rows 11000000] [--clusters 10450] [--topk 5]

Streams `--rows` rows of top-k cluster ids and confidences (generated, seeded: the method's
part is measured elsewhere) through the same writer every run uses
(`evaluation/assignments.write_assignments`) into a temporary Parquet file, then reads the
`cluster` column back with pyarrow. Prints and returns the time, the file size and the peak
resident memory of this process, to show that the export never holds a split whole.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from clusterbench.evaluation.assignments import write_assignments
from clusterbench.evaluation.predictions import Assigned


def generated(rows: int, clusters: int, topk: int, chunk: int, seed: int) -> Iterator[Assigned]:
    rng = np.random.default_rng(seed)
    for start in range(0, rows, chunk):
        m = min(chunk, rows - start)
        ids = rng.integers(0, clusters, (m, topk), dtype=np.int64)
        yield Assigned(start, ids, rng.random(m, dtype=np.float32))


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(rows: int, clusters: int, topk: int, chunk: int, seed: int = 0) -> dict:
    before = peak_rss_bytes()
    with tempfile.TemporaryDirectory(prefix="clusterbench-assign-bench-") as tmp:
        file = Path(tmp) / "train.parquet"
        start = time.perf_counter()
        written = write_assignments(
            file, generated(rows, clusters, topk, chunk, seed), rows, clusters
        )
        write_s = time.perf_counter() - start
        size = file.stat().st_size
        import pyarrow.parquet as pq

        start = time.perf_counter()
        column = pq.read_table(file, columns=["cluster"]).column(0)
        read_s = time.perf_counter() - start
        assert len(column) == rows and int(written.sizes.sum()) == rows
    return {
        "rows": rows,
        "clusters": clusters,
        "topk": topk,
        "chunk_rows": chunk,
        "write_seconds": round(write_s, 2),
        "rows_per_second": round(rows / write_s),
        "file_bytes": size,
        "read_cluster_column_seconds": round(read_s, 2),
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_before_bytes": before,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusterbench perf assignments",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--rows", type=int, default=11_000_000)
    parser.add_argument("--clusters", type=int, default=10450)
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=65536, help="rows per chunk (row group)")
    parser.add_argument("--out", type=Path, help="also write the report here (JSON)")
    args = parser.parse_args(argv)
    report = measure(args.rows, args.clusters, args.topk, args.chunk)
    gib = 2**30
    print(
        f"{report['rows']:,} rows x top-{report['topk']} of {report['clusters']:,} clusters: "
        f"written in {report['write_seconds']} s ({report['rows_per_second']:,} rows/s), "
        f"{report['file_bytes'] / gib:.2f} GiB; cluster column read back in "
        f"{report['read_cluster_column_seconds']} s; peak RSS "
        f"{report['peak_rss_bytes'] / gib:.2f} GiB"
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
