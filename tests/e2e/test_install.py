"""A non-editable install (a wheel) carries everything a command needs: configs included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_a_wheel_install_runs_the_clustering_command(tmp_path):
    wheels, site, src = tmp_path / "wheels", tmp_path / "site", tmp_path / "src"
    # Built from a copy: setuptools leaves build/ and *.egg-info/ in the tree it builds.
    skip = (".*", "build", "*.egg-info", "__pycache__", "outputs", "multirun", "docs", "tests")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*skip))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("clusterbench-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    # The installed copy, not the source tree, is what runs (PYTHONPATH comes before the
    # editable install's finder); from a directory without conf/ anywhere near it.
    env = {**os.environ, "PYTHONPATH": str(site), "CLUSTERBENCH_PROGRESS": "0"}
    where = subprocess.run(
        [sys.executable, "-c", "import clusterbench; print(clusterbench.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(site))
    script = site / "bin" / "clusterbench"
    assert script.is_file()
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(script), "run", "dataset=digits", "logger=none", "device=cpu",
         f"paths.root_dir={tmp_path}", f"hydra.run.dir={out}"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "results.json").read_text())
    assert result["method"] == "kmeans" and result["metrics"]["acc"] > 0.5  # chance is 0.1
    assert (out / "run.log").is_file()
