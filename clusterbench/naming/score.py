"""Scores of cluster names against the clusters' majority classes, on the WordNet tree.

For every non-empty cluster with labelled rows, its majority class (most frequent label of its
rows) is compared with the synset behind its name:
- `exact`: the share of clusters named by their majority class;
- `related`: named by the majority class, one of its WordNet ancestors or one of its
  descendants (exact matches included);
- `wu_palmer`: the mean Wu-Palmer similarity 2 d(lcs) / (d(a) + d(b)), with d the depth of a
  synset counted from the root as 1 and lcs the deepest common ancestor, 0 across the tree's
  two roots.
They are computed on the shipped ImageNet-21K tree (`benchmarks/imagenet21k/tree.py`: every
synset with its chosen hypernym), not with nltk: nltk's WordNet corpus has to be downloaded,
and nothing here may need a download. On a tree every synset has one path to the root, so the
similarity is that of the chosen-parent path (nltk takes the best over WordNet's several
hypernym paths, which can only be higher).

When the view's classes are not tree synsets (digits, a custom store), only `exact` (the
name equals the class name) is reported and scoring against the tree is skipped.
"""

from __future__ import annotations

import numpy as np

from clusterbench.benchmarks.imagenet21k.tree import Tree


def path_up(tree: Tree, node: int) -> list[int]:
    return tree.path_to_root(int(node))


def wu_palmer(tree: Tree, a: int, b: int) -> float:
    """Wu-Palmer similarity of two tree nodes (1 for the same node)."""
    up_a, up_b = path_up(tree, a), path_up(tree, b)
    if up_a[-1] != up_b[-1]:
        return 0.0
    on_a = set(up_a)
    lcs = next(n for n in up_b if n in on_a)
    depth = tree.node_depth
    d_lcs, d_a, d_b = (int(depth[n]) + 1 for n in (lcs, a, b))
    return 2.0 * d_lcs / (d_a + d_b)


def related(tree: Tree, a: int, b: int) -> bool:
    """a is b, an ancestor of b or a descendant of b."""
    return a == b or a in path_up(tree, b) or b in path_up(tree, a)


def score_names(
    name_nodes: np.ndarray,
    class_nodes: np.ndarray,
    tree: Tree | None,
    names: list[str] | None = None,
    class_names: list[str] | None = None,
) -> dict:
    """Scores over the clusters given (each a named cluster with a majority class).

    On the tree: `name_nodes` / `class_nodes` are the tree nodes of each cluster's name and
    majority class (-1: not a synset; never a match). Without a tree, `names` and
    `class_names` are compared as strings."""
    n = int(len(class_nodes) if tree is not None else len(class_names or []))
    if n == 0:
        return {"clusters_scored": 0}
    if tree is None:
        exact = np.array([a == b for a, b in zip(names, class_names, strict=True)])
        return {
            "clusters_scored": n,
            "exact": float(exact.mean()),
            "tree": "skipped: the view's classes are not synsets of the ImageNet-21K tree",
        }
    exact, near, sim = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n)
    for i, (a, b) in enumerate(zip(name_nodes.tolist(), class_nodes.tolist(), strict=True)):
        if a < 0 or b < 0:
            continue
        exact[i] = a == b
        near[i] = related(tree, a, b)
        sim[i] = wu_palmer(tree, a, b)
    return {
        "clusters_scored": n,
        "exact": float(exact.mean()),
        "related": float(near.mean()),
        "wu_palmer": float(sim.mean()),
        "names_off_tree": int((name_nodes < 0).sum()),
    }
