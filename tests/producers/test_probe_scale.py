"""The linear-probe bound does not depend on the feature scale (the default standardises), the
grid-edge warning needs both the largest lr and a still-falling loss, and a classes.txt far
larger than the labels in use is refused in one line instead of allocating gigabytes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from clusterbench.producers.probe.grid import FALLING_TOLERANCE, Cell, ProbeSettings
from clusterbench.producers.probe.run import edge_note
from clusterbench.producers.probe.run import run as probe_run
from tests.helpers.cli import cli
from tests.helpers.compose import compose_probe
from tests.helpers.stores import sphere_blobs, write_store

pytestmark = pytest.mark.usefixtures("single_thread")

CLASSES, DIM, TRAIN, VAL = 20, 32, 300, 50  # per class


def split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping sphere blobs (a linear bound near 94 %, not 100 %): train, labels, val, labels."""
    x, y = sphere_blobs(TRAIN + VAL, CLASSES, DIM, seed=seed, spread=0.25)
    order = np.argsort(y, kind="stable").reshape(CLASSES, -1)
    train, val = order[:, :TRAIN].ravel(), order[:, TRAIN:].ravel()
    return x[train], y[train], x[val], y[val]


def rescaled(x: np.ndarray, how: str) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return {"l2": unit, "norm 1e-3": 1e-3 * unit, "norm 1e3": 1e3 * unit}[how].astype(np.float32)


def run_probe(tmp_path: Path, overrides: list[str], console: Console | None = None) -> dict:
    cfg = compose_probe(tmp_path, [f"paths.cache_dir={tmp_path / 'cache'}", *overrides])
    return probe_run(cfg, tmp_path / "run", console or Console(file=io.StringIO()))


def standardised(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaler = StandardScaler().fit(train.astype(np.float64))
    return scaler.transform(train.astype(np.float64)), scaler.transform(val.astype(np.float64))


def linear_bound(train, train_labels, val, val_labels) -> float:
    """scikit-learn's logistic regression on the same rows, standardised (lbfgs needs it)."""
    a, b = standardised(train, val)
    return float(LogisticRegression(max_iter=5000).fit(a, train_labels).score(b, val_labels))


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, float]]:
    """One store per row scale, with the linear bound of its rows. Rows of norm 1e-3 and 1e3
    are the unit rows times a constant: standardised, they are the unit rows' standardised
    rows (checked), so scikit-learn's bound is fitted once (a fit takes seconds)."""
    train, train_labels, val, val_labels = split()
    unit = standardised(rescaled(train, "l2"), rescaled(val, "l2"))
    bound = linear_bound(rescaled(train, "l2"), train_labels, rescaled(val, "l2"), val_labels)
    out = {}
    for how in ("l2", "norm 1e-3", "norm 1e3"):
        a, b = rescaled(train, how), rescaled(val, how)
        for mine, theirs in zip(standardised(a, b), unit, strict=True):
            np.testing.assert_allclose(mine, theirs, atol=1e-4)
        root = tmp_path_factory.mktemp(how.replace(" ", "_"))
        out[how] = (write_store(root / "s", a, train_labels, b, val_labels), bound)
    return out


@pytest.mark.parametrize("how", ["l2", "norm 1e-3", "norm 1e3"])
def test_default_probe_reaches_the_linear_bound_at_any_scale(tmp_path, stores, how) -> None:
    """The whole default grid (standardised features, 100 epochs); holdout=0 only skips the
    second, held-out grid, which plays no part in metrics.acc."""
    store, bound = stores[how]
    payload = run_probe(tmp_path, ["dataset=custom", f"dataset.path={store}", "probe.holdout=0"])
    acc = payload["metrics"]["acc"]
    assert payload["method_info"]["settings"]["normalize"] == "standardize"
    assert 0.85 < bound < 0.99  # not a saturated problem
    assert abs(acc - bound) <= 0.02, (how, acc, bound)


def test_the_papers_raw_setting_underfits_small_rows(tmp_path, stores) -> None:
    """probe.normalize=none (the paper's grid on raw features) on rows of norm 1e-3: far from
    the bound, so the test above can fail."""
    store, bound = stores["norm 1e-3"]
    overrides = ["dataset=custom", f"dataset.path={store}", "probe.holdout=0"]
    payload = run_probe(tmp_path, [*overrides, "probe.normalize=none"])
    assert payload["metrics"]["acc"] < bound - 0.5


# --- the grid-edge warning ------------------------------------------------------------------


def test_edge_note_needs_the_largest_lr_and_a_falling_loss() -> None:
    settings = ProbeSettings(lrs=[1e-3, 5e-3], weight_decays=[0.0])
    falling, flat = 10 * FALLING_TOLERANCE, FALLING_TOLERANCE / 10
    note = edge_note(Cell(5e-3, 0.0), settings, falling)
    assert note and "largest lr (0.005)" in note and "under-trained" in note
    assert "probe.normalize=standardize" not in note  # already the default
    assert edge_note(Cell(5e-3, 0.0), settings, flat) is None
    assert edge_note(Cell(5e-3, 0.0), settings, 0.0) is None
    assert edge_note(Cell(1e-3, 0.0), settings, falling) is None  # not at the edge
    raw = ProbeSettings(lrs=[1e-3, 5e-3], weight_decays=[0.0], normalize="none")
    assert "probe.normalize=standardize" in edge_note(Cell(5e-3, 0.0), raw, falling)


def edge_run(tmp_path: Path, grid: list[str]) -> tuple[dict, str]:
    x, y = sphere_blobs(40, 5, 16, seed=0, spread=0.6)
    store = write_store(tmp_path / "s", x[:150], y[:150], x[150:], y[150:])
    console = Console(file=io.StringIO(), width=400)
    payload = run_probe(
        tmp_path, ["dataset=custom", f"dataset.path={store}", "probe.holdout=0", *grid], console
    )
    return payload, console.file.getvalue()


def test_grid_edge_is_reported_while_the_loss_still_falls(tmp_path) -> None:
    """A few epochs at small lrs: the best cell is the largest lr, its loss still falling."""
    payload, printed = edge_run(tmp_path, ["probe.lrs=[1e-4,2e-3]", "probe.weight_decays=[0]", "probe.epochs=4"])  # fmt: skip
    info = payload["method_info"]
    assert payload["probing"]["selected"]["lr"] == 2e-3
    assert info["grid_edge"] and "largest lr (0.002)" in info["grid_edge"]
    assert info["grid_edge"] in " ".join(printed.split())  # and on the console
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["method_info"]["grid_edge"] == info["grid_edge"]


def test_no_grid_edge_once_the_loss_has_flattened(tmp_path) -> None:
    """Full-batch descent with weight decay for 100 epochs: the largest lr wins and its loss
    has stopped falling, so the grid's edge does not set the number."""
    grid = ["probe.lrs=[1e-3,0.1]", "probe.weight_decays=[0.01]", "probe.batch_size=100000"]
    payload, printed = edge_run(tmp_path, grid)
    assert payload["probing"]["selected"]["lr"] == 0.1
    assert payload["method_info"]["grid_edge"] is None
    assert "under-trained" not in printed


# --- a huge classes.txt ---------------------------------------------------------------------


def test_a_million_classes_in_classes_txt_is_refused_in_one_line(tmp_path) -> None:
    x, y = sphere_blobs(10, 3, 384, seed=0)
    classes = [f"c{i}" for i in range(10**6)]
    store = write_store(tmp_path / "s", x, y, x, y, classes=classes)
    result = cli(
        "probe",
        "dataset=custom",
        f"dataset.path={store}",
        f"paths.root_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
        OMP_NUM_THREADS="1",
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(store / "classes.txt") in lines[0] and "1,000,000 classes" in lines[0]
    assert "18 probes x 384 dims" in lines[0] and "labels use 3" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
