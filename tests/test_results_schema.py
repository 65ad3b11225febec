"""Every scoring command writes results.json through one `RunResult`, and the files stay what
they were before it existed: tests/fixtures/results/*.json were written by the commands' own
hand-built payloads (the code before `RunResult`) at the settings below.

Compared: every key, in order, at every level; strings, booleans and nulls exactly; numbers
within CPU-class noise (faiss and BLAS round differently on another CPU: ACC 57.16 % against
57.10 % for the same seed). Not compared: timings' values, library versions' values, and the
one field `RunResult` fixed (zeroshot's seed came from a hard-coded 0, now from the config).
The fixtures' `_target_` paths were moved with their modules (clusterbench.datasets ->
clusterbench.data.datasets, ...): the only edit made to them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import FIXTURES
from tests.helpers.compose import compose_config
from tests.helpers.synthetic import SMALL_IN21K

RESULTS = FIXTURES / "results"  # one results.json per command

CASES = {
    "run": ("config", "clusterbench.run:run", ["logger=none"]),
    "probe": (
        "probe",
        "clusterbench.producers.probe.run:run",
        [
            "dataset=digits",
            "probe.epochs=2",
            "probe.lrs=[0.001,0.01]",
            "probe.weight_decays=[0.0]",
            "probe.normalize=none",
        ],
    ),
    "separability": (
        "separability",
        "clusterbench.producers.separability.run:run",
        ["dataset=digits"],
    ),
    "zeroshot": (
        "zeroshot",
        "clusterbench.producers.zeroshot.run:run_zeroshot",
        ["dataset=synthetic_in21k"]
        + [f"dataset.synthetic.{k}={v}" for k, v in SMALL_IN21K.items()]
        + ["zeroshot.text_embeddings=<root>/emb.npy"],
    ),
}
# Fields the old payloads got wrong, as RunResult writes them now.
FIXED = {"zeroshot": {("config", "seed"): 0}}
# Several representation spaces (dataset.spaces) added two keys to every dataset config.
SPACES = [("config", "dataset", "spaces"), ("config", "dataset", "space_weights")]
# Entries features added after the fixtures were written (assignments, label-free scores, the
# K estimator of method.num_clusters=auto):
# present in the new file, compared nowhere here (their own tests check them).
ADDED = {
    "run": [
        ("label_free",),
        ("config", "predict"),
        ("config", "label_free"),
        ("config", "k_estimation"),
        ("timings", "assign_s"),
        ("timings", "label_free_s"),
        ("artefacts", "assignments"),
        ("artefacts", "model"),
        ("config", "method", "backend"),  # the distributed k-means backend's settings
        ("config", "method", "dtype"),
        ("config", "method", "checkpoint_every"),
        *SPACES,
    ],
    "probe": SPACES,
    "separability": SPACES,
    "zeroshot": SPACES,
}
VOLATILE = ("timings", "versions")  # top-level sections whose values are not compared
RATES = ("_s", "_seconds", "per_s")  # clock readings anywhere else: keys compared, not values


def class_embeddings(path: Path) -> None:
    """Embeddings that know the synthetic world: its class means plus a little noise."""
    from clusterbench.benchmarks.imagenet21k.tree import load_tree
    from clusterbench.benchmarks.imagenet21k.world import SyntheticIn21kSpec, make_spec, node_means

    tree = load_tree()
    means = node_means(tree, make_spec(SyntheticIn21kSpec, SMALL_IN21K))[: tree.num_classes]
    means += 1e-3 * np.random.default_rng(0).standard_normal(means.shape)
    np.save(path, means.astype(np.float32))


def assert_same(new, old, where: str = "") -> None:
    if isinstance(old, dict):
        assert isinstance(new, dict), where
        assert list(new) == list(old), f"{where}: keys {list(new)} != {list(old)}"
        for key in old:
            if (where == "" and key in VOLATILE) or key.endswith(RATES):
                continue
            assert_same(new[key], old[key], f"{where}.{key}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), where
        for i, (a, b) in enumerate(zip(new, old, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(old, bool) or old is None or isinstance(old, str):
        assert new == old, f"{where}: {new!r} != {old!r}"
    else:  # a number
        assert isinstance(new, (int, float)) and not isinstance(new, bool), where
        assert math.isclose(new, old, rel_tol=0.02, abs_tol=0.01), f"{where}: {new} != {old}"


@pytest.mark.parametrize("name", list(CASES))
def test_results_json_is_what_the_hand_built_payloads_wrote(name, tmp_path, single_thread):
    from hydra.utils import get_method

    config_name, body, overrides = CASES[name]
    class_embeddings(tmp_path / "emb.npy")
    overrides = [o.replace("<root>", str(tmp_path)) for o in overrides]
    cfg = compose_config(
        tmp_path, [f"paths.root_dir={tmp_path}", "device=cpu", *overrides], name=config_name
    )
    module, _, function = body.partition(":")
    get_method(f"{module}.{function}")(cfg, tmp_path / "run")
    written = (tmp_path / "run" / "results.json").read_text()
    new = json.loads(written.replace(str(tmp_path), "<root>"))
    old = json.loads((RESULTS / f"{name}.json").read_text())
    for (section, key), value in FIXED.get(name, {}).items():
        old[section][key] = value
    for path in ADDED.get(name, ()):  # what later features write beside the old fields
        *parents, key = path
        node = new
        for parent in parents:
            node = node[parent]
        assert key in node, path
        del node[key]
    new["config"].pop("hydra")  # compose() keeps Hydra's node; a command's cfg has none
    # The config's key order follows the defaults lists, which shared groups reordered.
    new["config"] = json.loads(json.dumps(new["config"], sort_keys=True))
    old["config"] = json.loads(json.dumps(old["config"], sort_keys=True))
    assert_same(new, old)
    assert list(new["timings"]) == list(old["timings"])
    assert set(new["versions"]) == set(old["versions"])
