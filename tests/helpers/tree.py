"""The 7-class tree of the label-rule tests (the shape of tests/fixtures/wordnet_tiny).

Nodes 7..9 are not classes:
  entity(7) -> organism(1) -> animal(3) -> dog(0) -> puppy(5)
                              animal(3) -> working_animal(9) -> sled_dog(4)
  entity(7) -> artifact(8) -> tool(6);  sun(2) is a root
The first seven ids are also the fixture's class ids (the order of its synsets.txt).
"""

from __future__ import annotations

import numpy as np

from clusterbench.benchmarks.imagenet21k.tree import Tree

DOG, ORGANISM, SUN, ANIMAL, SLED_DOG, PUPPY, TOOL, ENTITY, ARTIFACT, WORKING = range(10)


def seven_class_tree() -> Tree:
    parent = [ANIMAL, ENTITY, -1, ORGANISM, WORKING, DOG, ARTIFACT, -1, ENTITY, ANIMAL]
    return Tree(
        wnids=tuple(f"n{i:08d}" for i in range(10)),
        names=("dog", "organism", "sun", "animal", "sled dog", "puppy", "tool", "entity")
        + ("artifact", "working animal"),
        parent=np.array(parent),
        num_classes=7,
        has_hypernym=np.array([1, 1, 0, 1, 1, 1, 1, 0, 1, 1], bool),
        has_hyponym=np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 1], bool),
    )
