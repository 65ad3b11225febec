"""No silent wrong answers: overflowing features, stale checkpoints and caches, preemption,
wrong config types and broken inputs each stop with one clear line and write nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from clusterbench.core.errors import ConfigError, StoreError
from clusterbench.core.fingerprint import fingerprint_files
from clusterbench.data.normalize import l2_normalize_rows
from clusterbench.data.store import FeatureStore
from clusterbench.methods.self_distillation.heads import InputNorm
from clusterbench.run import run
from tests.helpers.cli import cli
from tests.helpers.compose import compose_config
from tests.helpers.self_distillation import TINY_RUN
from tests.helpers.stores import sphere_blobs, store_of, write_store


def test_features_whose_norm_overflows_are_rejected(tmp_path):
    store = store_of(tmp_path / "store", scale=1e30)  # finite in float32, squares are not
    out = tmp_path / "out"
    proc = cli("dataset=custom", f"dataset.path={store}", "logger=none", f"hydra.run.dir={out}",
               cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == 2
    assert "rows have an L2 norm beyond float32's range" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "results.json").exists()


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_normalisation_is_scale_safe(scale):
    x, _ = sphere_blobs(10, 3, 16, seed=0)
    expected = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(l2_normalize_rows(x * np.float32(scale)), expected, rtol=1e-5)
    norm = InputNorm(16, "l2")(torch.from_numpy(x * np.float32(scale)))
    np.testing.assert_allclose(norm.numpy(), expected, rtol=1e-5)


def test_a_reused_run_dir_never_resumes_another_experiment(tmp_path):
    store = store_of(tmp_path / "store")
    out = tmp_path / "out"
    common = ["method=temi", "dataset=custom", f"dataset.path={store}", "trainer.max_epochs=1",
              *TINY_RUN, f"hydra.run.dir={out}"]  # fmt: skip
    assert cli(*common, cwd=tmp_path, cache=tmp_path / "cache").returncode == 0
    (out / "results.json").unlink()
    for change, difference in (("seed=1", "seed: 0 there, 1 here"),
                               ("method.base_lr=0.01", "method.base_lr: 0.0001 there, 0.01 here")):  # fmt: skip
        proc = cli(*common, change, cwd=tmp_path, cache=tmp_path / "cache")
        assert proc.returncode == 2, proc.stderr
        assert "belongs to another experiment" in proc.stderr and difference in proc.stderr
        assert "method.resume=null" in proc.stderr and "Traceback" not in proc.stderr
        assert not (out / "results.json").exists()


def test_an_unreadable_checkpoint_is_named_before_any_work(tmp_path):
    store = store_of(tmp_path / "store")
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    proc = cli("method=temi", "dataset=custom", f"dataset.path={store}", *TINY_RUN,
               f"hydra.run.dir={out}", cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == 2
    assert f"checkpoint {out / 'checkpoints' / 'last.ckpt'} cannot be read" in proc.stderr
    assert "method.resume=null" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache" / "knn").exists()  # stopped before mining neighbours


def test_sigterm_exits_non_zero_and_says_how_to_resume(tmp_path):
    store = store_of(tmp_path / "store", n_per_class=200)
    out = tmp_path / "out"
    env = {**os.environ, "CLUSTERBENCH_PROGRESS": "0", "HYDRA_FULL_ERROR": "0"}
    args = ["method=temi", "dataset=custom", f"dataset.path={store}", "trainer.max_epochs=100000",
            *TINY_RUN, f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "clusterbench", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert "terminated by SIGTERM" in stderr and f"hydra.run.dir={out}" in stderr
    assert "the last checkpoint is" in stderr and not (out / "results.json").exists()


def test_a_store_edited_in_place_is_checked_again(tmp_path):
    store = store_of(tmp_path / "store", n_per_class=2000)  # 20000 x 32 float32 > 1 MiB x 2
    assert (store / "train.npy").stat().st_size > 2 << 20
    cfg = compose_config(tmp_path, ["dataset=custom", f"dataset.path={store}", "logger=none",
                                    f"paths.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    before = fingerprint_files([store / "train.npy"])
    run(cfg, tmp_path / "first")
    rows = np.load(store / "train.npy", mmap_mode="r+")
    rows[10000:10003] = np.nan  # the middle, outside the sampled head and tail
    rows.flush()
    del rows
    assert fingerprint_files([store / "train.npy"]) != before
    with pytest.raises(StoreError, match="3 of 20000 rows contain NaN"):
        run(cfg, tmp_path / "second")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc' (str): expected int"),
        ("seed=abc", "seed='abc' (str): expected int"),
        ("method.niter=abc", "method.niter='abc' (str): expected int"),
        (
            "method.num_clusters=abc",
            "method.num_clusters='abc' (str): expected int or 'auto' or null",
        ),
        (
            "method.num_clusters=2.5",
            "method.num_clusters=2.5 (float): expected int or 'auto' or null",
        ),
    ],
)
def test_wrong_config_types_fail_before_any_work(tmp_path, override, message):
    cfg = compose_config(tmp_path, ["logger=none", f"paths.cache_dir={tmp_path / 'cache'}",
                                    override])  # fmt: skip
    with pytest.raises(ConfigError) as info:
        run(cfg, tmp_path / "run")
    assert str(info.value) == message
    assert not (tmp_path / "cache").exists()  # no data was generated or read


def test_a_wrong_type_is_one_line_through_the_cli(tmp_path):
    proc = cli("method=temi", "trainer.max_epochs=abc", "logger=none",
               f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: trainer.max_epochs='abc' (str): expected int"
    )


def test_broken_stores_are_explained(tmp_path):
    empty_dims = write_store(tmp_path / "d0", np.zeros((5, 0), np.float32), np.zeros(5, np.int64),
                             np.zeros((5, 0), np.float32), np.zeros(5, np.int64))  # fmt: skip
    with pytest.raises(StoreError, match=r"rows have no dimensions \(shape \(5, 0\)\)"):
        FeatureStore.open(empty_dims)
    zeros = store_of(tmp_path / "zeros", scale=0.0)
    with pytest.raises(StoreError, match="all 600 rows are zero vectors"):
        FeatureStore.open(zeros)
    binary = store_of(tmp_path / "binary")
    (binary / "classes.txt").write_bytes(bytes(range(128, 256)))
    with pytest.raises(StoreError, match=f"{binary / 'classes.txt'} is not UTF-8 text"):
        FeatureStore.open(binary)


def test_raw_label_ids_are_explained(tmp_path):
    train, labels = sphere_blobs(20, 3, 8, seed=0)
    store = write_store(tmp_path / "raw", train, labels * 1000000 + 1440764, train, labels)
    cfg = compose_config(tmp_path, ["dataset=custom", f"dataset.path={store}", "logger=none",
                                    f"paths.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"1 \+ the largest label.*no classes.txt"):
        run(cfg, tmp_path / "run")


def test_resume_takes_the_newest_of_last_and_slurm_checkpoints(tmp_path):
    from clusterbench.methods.self_distillation.method import SelfDistillationMethod

    method = SelfDistillationMethod(name="temi", loss="temi")
    assert method._resume_path(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # what Lightning saves on SLURM's pre-timeout signal
    hpc.write_bytes(b"x")
    os.utime(last, ns=(1, 1_000_000_000))
    assert method._resume_path(tmp_path) == str(hpc)
    os.utime(hpc, ns=(1, 1))
    assert method._resume_path(tmp_path) == str(last)
