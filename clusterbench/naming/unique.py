"""Unique names across clusters: an assignment over each cluster's top candidates.

As in "What's in a Name?" (Han et al. 2024), each cluster may take one of its `m` best names
by vote share and no name goes to two clusters; the assignment maximises the total vote share
of the names given (scipy's `linear_sum_assignment`, the Hungarian method). Every cluster also
has a private fallback at share 0, so a cluster whose candidates all go to clusters that
value them more still gets a name: its best candidate with its cluster id, `dog #17`.

The bipartite graph (clusters, candidate names) falls apart into connected components that
are solved on their own: a component whose cost matrix (clusters x (names + fallbacks)) fits
`dense_limit` elements is solved densely with `linear_sum_assignment`; a larger one with
scipy's sparse solver of the same problem (`min_weight_full_bipartite_matching`, LAPJVsp),
so 10450 clusters x 10 candidates never become a 10450 x 21000 dense matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

# Cost of a name: BASE - share; of the fallback: BASE. Positive, as the sparse solver needs.
BASE = 2.0
DENSE_LIMIT = 1 << 24


@dataclass
class Unique:
    """(K,) the chosen candidate of each cluster (an index into the vocabulary), -1 where the
    cluster took its fallback or has no candidate, and how each component was solved."""

    chosen: np.ndarray
    components: int
    dense: int
    sparse: int


def assign_unique(
    indptr: np.ndarray,
    items: np.ndarray,
    shares: np.ndarray,
    dense_limit: int = DENSE_LIMIT,
) -> Unique:
    """One distinct item per cluster from its CSR candidates (`indptr` (K+1,), `items`,
    `shares`), maximising the total share; -1 for a cluster that keeps its fallback."""
    k = indptr.size - 1
    chosen = np.full(k, -1, dtype=np.int64)
    if items.size == 0:
        return Unique(chosen, 0, 0, 0)
    cluster = np.repeat(np.arange(k), np.diff(indptr))
    names, column = np.unique(items, return_inverse=True)
    u = names.size
    graph = coo_matrix((np.ones(items.size), (cluster, k + column)), shape=(k + u, k + u)).tocsr()
    _, label = connected_components(graph, directed=False)
    edge_comp = label[cluster]
    order = np.argsort(edge_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
    dense = sparse = 0
    for edges in np.split(order, bounds):
        rows, row_local = np.unique(cluster[edges], return_inverse=True)
        cols, col_local = np.unique(column[edges], return_inverse=True)
        cost = BASE - np.asarray(shares[edges], dtype=np.float64)
        r, c = rows.size, cols.size
        if r * (c + r) <= dense_limit:
            matrix = np.full((r, c + r), np.inf)
            matrix[row_local, col_local] = cost
            matrix[np.arange(r), c + np.arange(r)] = BASE
            got_r, got_c = linear_sum_assignment(matrix)
            dense += 1
        else:
            fallback = (np.arange(r), c + np.arange(r))
            matrix = csr_matrix(
                (
                    np.concatenate([cost, np.full(r, BASE)]),
                    (np.concatenate([row_local, fallback[0]]),
                     np.concatenate([col_local, fallback[1]])),
                ),
                shape=(r, c + r),
            )  # fmt: skip
            got_r, got_c = min_weight_full_bipartite_matching(matrix)
            sparse += 1
        named = got_c < c
        chosen[rows[got_r[named]]] = names[cols[got_c[named]]]
    return Unique(chosen, len(bounds) + 1, dense, sparse)
