"""Several representation spaces of the same rows: aligned stores join, the concatenation is
what the one-matrix methods read, and every misalignment is one line before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from clusterbench.core.errors import ConfigError
from clusterbench.data.rows import ConcatenatedRows, FeatureRows
from clusterbench.run import run
from tests.helpers.compose import compose_config
from tests.helpers.stores import sphere_blobs, write_store

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115


@pytest.fixture(scope="module")
def two_spaces(tmp_path_factory) -> tuple[Path, Path]:
    """Blobs in one space, and a second view of the same rows: a fixed random rotation into
    24 dimensions (the same images seen by another extractor)."""
    root = tmp_path_factory.mktemp("spaces")
    train, train_labels, val, val_labels = blobs()
    project = np.random.default_rng(0).standard_normal((16, 24)).astype(np.float32)
    a = write_store(root / "a", train, train_labels, val, val_labels)
    b = write_store(root / "b", train @ project, train_labels, val @ project, val_labels)
    return a, b


def blobs():
    """360 train and 60 val rows of the same 6 blobs."""
    x, y = sphere_blobs(70, 6, 16, seed=3, spread=0.08)
    return x[:360], y[:360], x[360:], y[360:]


def run_spaces(tmp_path: Path, store: Path, *overrides: str) -> dict:
    cfg = compose_config(
        tmp_path,
        [f"paths.root_dir={tmp_path}", "dataset=custom", f"dataset.path={store}", "logger=none",
         "device=cpu", *overrides],
    )  # fmt: skip
    return run(cfg, tmp_path / "run", QUIET)


def test_concatenated_rows_are_the_weighted_normalised_spaces():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((7, 3)) * 5, rng.standard_normal((7, 4))
    rows = ConcatenatedRows(
        [FeatureRows(a.astype(np.float32)), FeatureRows(b.astype(np.float32))], [1.0, 2.0]
    )
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = np.concatenate([unit(a), 2 * unit(b)], axis=1)
    assert rows.dim == 7 and len(rows) == 7
    np.testing.assert_allclose(rows.chunk(2, 5), expected[2:5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows.take(np.array([6, 0])), expected[[6, 0]], rtol=1e-5, atol=1e-6)


def test_two_spaces_cluster_on_their_concatenation(tmp_path, two_spaces):
    a, b = two_spaces
    result = run_spaces(tmp_path, a, f"dataset.spaces=[{b}]", "method.nredo=3")
    assert result["metrics"]["nmi"] > 0.9
    assert result["dataset_summary"]["dim"] == 16 + 24
    assert result["dataset_summary"]["spaces"] == [str(a), str(b)]


def test_a_second_space_changes_the_neighbour_cache_key(tmp_path, two_spaces):
    from clusterbench.data.spaces import build_view

    a, b = two_spaces
    one = compose_config(tmp_path, ["dataset=custom", f"dataset.path={a}"]).dataset
    two = compose_config(tmp_path, ["dataset=custom", f"dataset.path={a}",
                                    f"dataset.spaces=[{b}]"]).dataset  # fmt: skip
    weighted = compose_config(tmp_path, ["dataset=custom", f"dataset.path={a}",
                                         f"dataset.spaces=[{b}]",
                                         "dataset.space_weights=[1,0.5]"]).dataset  # fmt: skip
    prints = {build_view(n).fingerprint for n in (one, two, weighted)}
    assert len(prints) == 3
    assert [len(s) for s in build_view(two).spaces("val")] == [60, 60]


def misaligned(root: Path, a: Path, what: str) -> Path:
    train = np.load(a / "train.npy")
    labels = np.load(a / "train_labels.npy")
    val, val_labels = np.load(a / "val.npy"), np.load(a / "val_labels.npy")
    if what == "rows":
        return write_store(root / what, train[:-1], labels[:-1], val, val_labels)
    if what == "labels":
        return write_store(root / what, train, np.roll(labels, 1), val, val_labels)
    out = write_store(root / what, train, labels, val, val_labels)
    names = [f"img/{i}.jpg" for i in range(len(train))]
    (a / "train_files.txt").write_text("\n".join(names) + "\n")
    names[5] = "img/other.jpg"
    (out / "train_files.txt").write_text("\n".join(names) + "\n")
    return out


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("rows", "has 359 train rows, the dataset's store"),
        ("labels", "labels train row 0"),
        ("files", "line 6 is 'img/other.jpg'"),
    ],
)
def test_spaces_that_are_not_row_aligned_stop_in_one_line(tmp_path, what, message):
    train, labels, val, val_labels = blobs()
    a = write_store(tmp_path / "a", train, labels, val, val_labels)
    other = misaligned(tmp_path, a, what)
    with pytest.raises(ConfigError) as info:
        run_spaces(tmp_path, a, f"dataset.spaces=[{other}]")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset.spaces=[no_such_extractor]"], "is neither a store directory nor an extractor"),
        (["dataset.space_weights=[1,2,3]"], "expected 2 positive numbers"),
        (["dataset.space_weights=[1,0]"], "expected 2 positive numbers"),
        (["dataset.space_weights=[1,2]", "dataset.spaces=[]"], "the dataset has one space"),
    ],
)
def test_bad_space_settings_fail_in_one_line(tmp_path, two_spaces, overrides, message):
    a, b = two_spaces
    overrides = [f"dataset.spaces=[{b}]", *overrides]
    with pytest.raises(ConfigError, match=message):
        run_spaces(tmp_path, a, *overrides)


def test_the_dataset_itself_is_not_a_second_space(tmp_path, two_spaces):
    a, _ = two_spaces
    with pytest.raises(ConfigError, match="is the dataset's own store"):
        run_spaces(tmp_path, a, f"dataset.spaces=[{a}]")


def test_results_of_one_space_keep_their_schema(tmp_path, two_spaces):
    a, _ = two_spaces
    result = run_spaces(tmp_path, a, "method.nredo=1")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "spaces" not in saved["dataset_summary"] and result["dataset_summary"]["dim"] == 16
