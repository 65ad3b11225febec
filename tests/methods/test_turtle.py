"""TURTLE: the stacked inner/outer steps equal a per-space loop, the run solves separable data
in one and two spaces, resumes exactly, estimates K, and refuses bad settings in one line."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from clusterbench.core.errors import ConfigError
from clusterbench.data.datasets import store as open_store
from clusterbench.data.store import FeatureStore
from clusterbench.data.view import BenchmarkView
from clusterbench.evaluation.metrics import evaluate
from clusterbench.methods.task import ClusteringTask
from clusterbench.methods.turtle import Turtle, TurtleClustering
from clusterbench.methods.turtle.data import OuterStepSampler
from clusterbench.run import run
from tests.helpers.cli import cli
from tests.helpers.compose import compose_config
from tests.helpers.stores import sphere_blobs, write_store

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115
FAST = ["method.T=200", "method.outer_lr=0.01", "method.inner_lr=0.01", "method.M=5",
        "method.steps_per_epoch=50", "trainer.precision=32-true", "logger=none"]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Tiny products: one thread is fastest and immune to a busy machine."""


def run_turtle(tmp_path: Path, store: Path, *overrides: str, callbacks=None) -> dict:
    cfg = compose_config(
        tmp_path,
        [f"paths.root_dir={tmp_path}", "dataset=custom", f"dataset.path={store}", "device=cpu",
         "method=turtle", *FAST, *overrides],
    )  # fmt: skip
    return run(cfg, tmp_path / "run", QUIET, callbacks=callbacks)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    """4 well-separated directions in 8 dimensions (few dimensions per row: in many, almost
    any partition is linearly separable with a wide margin, and TURTLE has nothing to find)."""
    train, train_labels = sphere_blobs(100, 4, 8, seed=3)
    val, val_labels = sphere_blobs(15, 4, 8, seed=3)
    return write_store(tmp_path_factory.mktemp("blobs"), train, train_labels, val, val_labels)


# --------------------------------------------------------------------------- the algorithm
def per_space_reference(dims, num_clusters, batches, inits, gamma, M, inner_lr, outer_lr):
    """The algorithm written plainly: one weight-normed nn.Linear per space, nn.Linear inner
    classifiers with one Adam, autograd everywhere. Returns the encoders and every step's
    (prediction error, entropy)."""
    torch.manual_seed(123)
    encoders = [nn.utils.parametrizations.weight_norm(nn.Linear(d, num_clusters)) for d in dims]
    params = [p for e in encoders for p in e.parameters()]
    outer = torch.optim.Adam(params, lr=outer_lr, betas=(0.9, 0.999))
    losses = []
    for zs, (weight, bias) in zip(batches, inits, strict=True):
        per_space = [torch.softmax(e(z), dim=1) for e, z in zip(encoders, zs, strict=True)]
        labels = torch.stack(per_space).mean(0)
        classifiers = []
        for s, d in enumerate(dims):
            linear = nn.Linear(d, num_clusters)
            with torch.no_grad():
                linear.weight.copy_(weight[s, :d].T)
                linear.bias.copy_(bias[s])
            classifiers.append(linear)
        inner = torch.optim.Adam([p for c in classifiers for p in c.parameters()], lr=inner_lr)
        for _ in range(M):
            inner.zero_grad()
            loss = sum(
                F.cross_entropy(c(z), labels.detach()) for c, z in zip(classifiers, zs, strict=True)
            )
            loss.backward()
            inner.step()
        pred_error = sum(
            F.cross_entropy(c(z).detach(), labels) for c, z in zip(classifiers, zs, strict=True)
        )
        entropy = sum(torch.special.entr(p.mean(0)).sum() for p in per_space)
        outer.zero_grad()
        (pred_error - gamma * entropy).backward()
        outer.step()
        losses.append((float(pred_error.detach()), float(entropy.detach())))
    return encoders, losses


def test_batched_steps_equal_a_per_space_loop():
    """Two spaces of different widths (zero-padded), 4 outer steps of 3 inner steps each, from
    the same encoder and classifier initialisations on the same batches."""
    dims, c, b, gamma, M = [5, 3], 4, 32, 2.0, 3
    gen = torch.Generator().manual_seed(0)
    batches = [[torch.randn(b, d, generator=gen) * 2 for d in dims] for _ in range(4)]
    inits = []
    for _ in batches:
        weight = torch.zeros(len(dims), max(dims), c)
        for s, d in enumerate(dims):
            weight[s, :d] = torch.rand(d, c, generator=gen) - 0.5
        inits.append((weight, torch.rand(len(dims), c, generator=gen) - 0.5))
    encoders, expected = per_space_reference(dims, c, batches, inits, gamma, M, 0.05, 0.05)

    torch.manual_seed(123)  # the same draws as the reference's encoders
    model = TurtleClustering(dims, c, gamma=gamma, M=M, inner_lr=0.05, outer_lr=0.05)
    optimizer = model.configure_optimizers()
    got = []
    for step, (zs, init) in enumerate(zip(batches, inits, strict=True)):
        padded = torch.zeros(len(dims), b, max(dims))
        for s, z in enumerate(zs):
            padded[s, :, : z.shape[1]] = z
        loss = model.outer_loss(padded, step, inner_init=init)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        got.append((float(model.last["pred_error"]), float(model.last["entropy"])))
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-6)
    for s, (encoder, folded) in enumerate(zip(encoders, model.encoder.folded(), strict=True)):
        assert torch.allclose(folded["weight"], encoder.weight.detach(), atol=1e-5), s
        assert torch.allclose(folded["bias"], encoder.bias.detach(), atol=1e-5), s
    # Padded rows never move: they stay exactly zero.
    assert float(model.encoder.weight_v.detach()[1, 3:].abs().max()) == 0.0


def test_sampler_draws_distinct_rows_and_slices_them_across_processes():
    one = list(OuterStepSampler(50, 20, 3, seed=1))
    assert all(len(set(b.tolist())) == 20 for b in one)
    halves = [list(OuterStepSampler(50, 20, 3, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    for step, whole in enumerate(one):
        joined = torch.cat([halves[0][step], halves[1][step]])
        assert torch.equal(joined, whole)
    assert len(next(iter(OuterStepSampler(7, 100, 1, num_replicas=2)))) == 3  # min(B, N) // 2


# --------------------------------------------------------------------------- the run
def test_run_solves_separable_blobs(tmp_path, blobs):
    result = run_turtle(tmp_path, blobs)
    m, info = result["metrics"], result["method_info"]
    assert m["nmi"] > 0.9 and m["acc"] > 0.9, m
    assert info["steps"] == 200 and info["spaces"] == 1 and info["space_dims"] == [8]
    assert info["batch_size"] == 400 and info["batch_size_requested"] == 10000
    assert info["clusters_found_val"] == 4 and np.isfinite(info["final_loss"])
    assert 0 < m["mean_confidence"] <= 1
    run_dir = tmp_path / "run"
    saved = torch.load(run_dir / result["artefacts"]["model"], weights_only=True)
    assert saved["task_encoder"]["phi1"]["weight"].shape == (4, 8)
    assert (run_dir / "assignments" / "train.parquet").is_file()
    assert "generalisation" in json.dumps(result["label_free"])


def test_two_spaces_and_the_saved_encoder(tmp_path, blobs):
    """A second space (a seeded random projection to 12 dims) beside the store's features."""
    first = open_store(str(blobs))
    rng = np.random.default_rng(0)
    projection = rng.standard_normal((8, 12)).astype(np.float32)
    second_root = write_store(
        tmp_path / "second",
        np.asarray(first.store.train.features) @ projection,
        first.train_labels,
        np.asarray(first.store.val.features) @ projection,
        first.val_labels,
    )
    view = BenchmarkView.whole(first.store, "two")
    view.extra_stores = [FeatureStore.open(second_root)]
    trainer = partial(L.Trainer, accelerator="cpu", devices=1, precision="32-true",
                      enable_model_summary=False, deterministic=True)  # fmt: skip
    task = ClusteringTask(view=view, num_clusters=4, seed=0, device="cpu",
                          run_dir=tmp_path / "run", make_trainer=trainer)  # fmt: skip
    method = Turtle(T=200, M=5, outer_lr=0.01, inner_lr=0.01, steps_per_epoch=100)
    predictions = method.fit_predict(task)
    assert evaluate(predictions, view.val_labels, 4)["metrics"]["nmi"] > 0.9
    assert task.info["spaces"] == 2 and task.info["space_dims"] == [8, 12]
    saved = torch.load(tmp_path / "run" / method.save(tmp_path / "run"), weights_only=True)
    weights = saved["task_encoder"]
    assert weights["phi1"]["weight"].shape == (4, 8) and weights["phi2"]["weight"].shape == (4, 12)
    # The saved plain Linears give the predictions again: mean softmax over spaces.
    val = [torch.as_tensor(s.to_numpy()) for s in view.spaces("val")]
    probs = sum(torch.softmax(z @ w["weight"].T + w["bias"], 1) for z, w in
                zip(val, weights.values(), strict=True)) / 2  # fmt: skip
    assert np.array_equal(probs.argmax(1).numpy(), predictions.top1)
    chunks = list(method.assign(view.spaces("val")))
    assert np.array_equal(np.concatenate([c.topk[:, 0] for c in chunks]), predictions.top1)
    with pytest.raises(ConfigError, match="needs 2 representation spaces"):
        method.assign(view.spaces("val")[0])


def test_two_spaces_through_the_run(tmp_path, blobs):
    """`dataset.spaces=[store]`: TURTLE reads each space; every split's assignments come from
    both (the run hands `assign` the view's side-by-side rows)."""
    first = open_store(str(blobs))
    projection = np.random.default_rng(1).standard_normal((8, 12)).astype(np.float32)
    second = write_store(
        tmp_path / "second",
        np.asarray(first.store.train.features) @ projection,
        first.train_labels,
        np.asarray(first.store.val.features) @ projection,
        first.val_labels,
    )
    result = run_turtle(tmp_path, blobs, f"dataset.spaces=[{second}]")
    assert result["method_info"]["space_dims"] == [8, 12] and result["metrics"]["nmi"] > 0.9
    written = result["artefacts"]["assignments"]
    assert set(written) == {"train", "val"}


class _Crash(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 2:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("warm_start", [False, True])
def test_resume_after_crash_matches_uninterrupted_run(tmp_path, blobs, warm_start):
    """Cold start: every step is a function of (seed, step); warm start: the checkpoint also
    holds the inner classifiers and their Adam."""
    args = ["method.T=40", "method.steps_per_epoch=10", f"method.warm_start={warm_start}"]
    straight = run_turtle(tmp_path / "a", blobs, *args)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_turtle(tmp_path / "b", blobs, *args, callbacks=[_Crash()])
    resumed = run_turtle(tmp_path / "b", blobs, *args)
    assert resumed["method_info"]["resumed_from"].endswith("last.ckpt")
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["method_info"]["final_loss"] == straight["method_info"]["final_loss"]


def test_warm_start_runs(tmp_path, blobs):
    result = run_turtle(tmp_path, blobs, "method.warm_start=true", "method.T=50")
    assert result["method_info"]["steps"] == 50 and result["metrics"]["nmi"] > 0.5


def test_num_clusters_auto(tmp_path, blobs):
    result = run_turtle(tmp_path, blobs, "method.num_clusters=auto", "method.T=20")
    found = result["method_info"]["k_estimation"]["k"]
    assert result["metrics"]["num_clusters"] == found >= 2


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, blobs):
    """Two gloo processes, each half of the global batch, train what one process does."""
    settings = [*FAST, "method.T=20", "method.batch_size=300"]
    one = run_turtle(tmp_path / "one", blobs, *settings[len(FAST) :])
    done = cli("dataset=custom", f"dataset.path={blobs}", "method=turtle", *settings,
               f"paths.cache_dir={tmp_path / 'cache'}", "trainer.devices=2",
               "trainer.strategy=ddp", f"hydra.run.dir={tmp_path / 'two'}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    a, b = one["method_info"], two["method_info"]
    assert b["steps"] == a["steps"] == 20 and b["batch_size"] == a["batch_size"] == 300
    assert b["final_pred_error"] == pytest.approx(a["final_pred_error"], rel=1e-5)
    assert b["final_entropy"] == pytest.approx(a["final_entropy"], rel=1e-5)
    assert two["metrics"]["nmi"] == pytest.approx(one["metrics"]["nmi"], abs=1e-6)


# --------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"gamma": -1.0}, "method.gamma=-1.0 must be >= 0"),
        ({"T": 0}, "method.T=0 must be >= 1"),
        ({"M": 0}, "method.M=0 must be >= 1"),
        ({"batch_size": 0}, "method.batch_size=0 must be >= 1"),
        ({"inner_lr": 0.0}, "method.inner_lr=0.0 must be > 0"),
        ({"outer_lr": -1e-3}, "method.outer_lr=-0.001 must be > 0"),
    ],
)
def test_bad_settings_are_one_line_errors(setting, message):
    with pytest.raises(ConfigError, match=message) as caught:
        Turtle(**setting)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [("method.gamma=-2", "method.gamma=-2.0 must be >= 0"), ("method.T=2.5", "method.T=2.5")],
)
def test_the_run_reports_bad_settings_before_any_work(tmp_path, blobs, override, message):
    with pytest.raises(ConfigError, match=message.replace(".0 ", " ")) as caught:
        run_turtle(tmp_path, blobs, override)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run" / "results.json").exists()
