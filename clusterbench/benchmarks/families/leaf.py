"""Fine-grained leaf benchmarks (section 4.2, Table 2): samples of non-leaf classes dropped.

- `imagenet21k`: classes that are no other class's nearest class ancestor (8153 classes);
- `wordnet`: classes without a WordNet hyponym that have a hypernym (7353 classes).
Leaf classes are mutually exclusive, so each label set S_L holds the GT class only.
"""

from __future__ import annotations

from typing import Any

from clusterbench.benchmarks.cache import cached_view
from clusterbench.benchmarks.hierarchy import subset_view
from clusterbench.benchmarks.imagenet21k import rules
from clusterbench.benchmarks.imagenet21k.tree import load_tree
from clusterbench.benchmarks.source import open_base
from clusterbench.core.errors import ConfigError
from clusterbench.data.view import BenchmarkView

RULES = {"imagenet21k": rules.imagenet21k_leaf_classes, "wordnet": rules.wordnet_leaf_classes}


def leaf(rule: str, name: str = "leaf", **base: Any) -> BenchmarkView:
    """The samples of the leaf classes of `rule` (imagenet21k or wordnet)."""
    if rule not in RULES:
        raise ConfigError(f"dataset.rule={rule!r}: expected one of {sorted(RULES)}")
    src = open_base("in21k", name, **base)
    tree = load_tree()

    def build():
        train, val = src.labels
        return subset_view(tree, train, val, RULES[rule](tree))

    return cached_view(name, src, "leaf", {"rule": rule}, build)
