"""Every row's cluster, as a Parquet file per split: what a user of an unlabelled collection
takes away from a run (pandas, polars and DuckDB read it as it is).

Columns: `row` (int64, the row of the split in store order), `cluster` (int32, top-1),
`topk` (list<int32>, best first), `confidence` (float32: the method's max softmax probability,
or the cosine to the nearest k-means centroid; null when the method has none) and `path`
(string, the image behind the row) when the store lists its images in `<split>_files.txt`.

Written chunk by chunk with pyarrow's ParquetWriter (one row group per chunk), so no split is
held whole, and atomically: a failed run leaves no partial file. The cluster sizes and the
confidence sum are counted on the way, for the label-free scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clusterbench.core.atomic import atomic_file
from clusterbench.evaluation.predictions import Assigned


@dataclass
class Written:
    """What one assignments file holds, counted while writing it."""

    path: Path
    rows: int
    sizes: np.ndarray  # (K,) rows per top-1 cluster
    top1: np.ndarray  # (N,) int32: every row's cluster, for the label-free scores

    def describe(self, run_dir: Path) -> dict:
        return {"file": str(self.path.relative_to(run_dir)), "rows": self.rows}


def schema(with_paths: bool) -> pa.Schema:
    fields = [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("cluster", pa.int32(), nullable=False),
        pa.field("topk", pa.list_(pa.int32()), nullable=False),
        pa.field("confidence", pa.float32()),
    ]
    if with_paths:
        fields.append(pa.field("path", pa.string()))
    return pa.schema(fields)


def write_assignments(
    path: Path,
    chunks: Iterable[Assigned],
    num_rows: int,
    num_clusters: int,
    paths: Sequence[str] | None = None,
) -> Written:
    """Stream `chunks` (in row order, covering rows 0..num_rows-1) into `path`."""
    sizes = np.zeros(num_clusters, dtype=np.int64)
    top1 = np.empty(num_rows, dtype=np.int32)
    written = 0
    with atomic_file(path) as tmp:
        writer = pq.ParquetWriter(tmp, schema(paths is not None), compression="zstd")
        try:
            for part in chunks:
                m, k = part.topk.shape
                if part.start != written:
                    raise ValueError(f"chunk starts at row {part.start}, expected {written}")
                ids = part.topk.astype(np.int32, copy=False)
                columns = {
                    "row": pa.array(np.arange(part.start, part.start + m, dtype=np.int64)),
                    "cluster": pa.array(ids[:, 0]),
                    "topk": pa.ListArray.from_arrays(
                        pa.array(np.arange(0, (m + 1) * k, k, dtype=np.int32)),
                        pa.array(ids.reshape(-1)),
                    ),
                    "confidence": pa.nulls(m, pa.float32())
                    if part.confidence is None
                    else pa.array(part.confidence.astype(np.float32, copy=False)),
                }
                if paths is not None:
                    columns["path"] = pa.array(paths[part.start : part.start + m], pa.string())
                writer.write_table(pa.table(columns, schema=writer.schema))
                sizes += np.bincount(ids[:, 0], minlength=num_clusters)
                top1[part.start : part.start + m] = ids[:, 0]
                written += m
        finally:
            writer.close()
        if written != num_rows:
            raise ValueError(f"{written} rows assigned of {num_rows}")
    return Written(Path(path), written, sizes, top1)
