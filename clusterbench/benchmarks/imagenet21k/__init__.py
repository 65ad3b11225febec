"""ImageNet-21K-P (winter 21) semantic tree and the label rules of the paper's benchmarks.

`tree` loads the shipped tree file (no WordNet needed at run time), `labels` holds pure
numpy functions that turn the tree and label arrays into benchmark subsets and relabellings,
and `build_tree` regenerates the tree file from WordNet 3.0.
"""

from clusterbench.benchmarks.imagenet21k.tree import Tree, load_tree

__all__ = ["Tree", "load_tree"]
