"""Choosing the number of clusters without labels (`method.num_clusters=auto`).

An estimator (`conf/k_estimation/*.yaml`: two_level, finch, sweep) has
`estimate(task, make_method) -> KEstimate`, runs before the method trains, and its candidates
and scores land in results.json (`method_info.k_estimation`) beside every level of classes the
view knows (`against_levels`).
"""

from __future__ import annotations

import math
import time

from clusterbench.methods.k_estimation.search import KEstimate
from clusterbench.methods.task import ClusteringTask

AUTO = "auto"


def estimate_num_clusters(estimator, task: ClusteringTask, make_method) -> KEstimate:
    """Run `estimator`, timed."""
    start = time.perf_counter()
    found = estimator.estimate(task, make_method)
    found.details["seconds"] = round(time.perf_counter() - start, 3)
    return found


def against_levels(k: int, levels: dict[str, int]) -> dict:
    """The estimate against every level of classes the view knows ({"classes": 100,
    "superclasses": 10}): relative error per level, and the level it is closest to (in ratio)."""
    if not levels:
        return {}
    errors = {name: round((k - true) / true, 4) for name, true in levels.items() if true > 0}
    closest = min(errors, key=lambda name: abs(math.log(k / levels[name])))
    return {"k_true": levels.get("classes"), "levels": dict(levels),
            "relative_error": errors, "closest_level": closest}  # fmt: skip


__all__ = ["AUTO", "KEstimate", "against_levels", "estimate_num_clusters"]
