"""Side-by-side parity: clusterbench's `method=turtle` against the reference TURTLE code.

A developer script, not part of the package and not run by CI. The reference
(mlbio-epfl/turtle) comes from a local checkout or bare git repository the user supplies;
its `run_turtle.py` and `utils.py` are taken from it (`git archive HEAD <files>` for a bare
repository) into a temporary directory and run in a child process on the same features, in
the layout it reads: `<root>/representations/<space>/<dataset>_{train,val}.npy` and
`<root>/labels/<dataset>_val.npy`. Its saved task encoder (weight norm removed) then labels
the validation split, as its own evaluation does (argmax of the mean softmax over spaces).
The project side is the CLI run exactly as a user types it. Both sides are scored by
`clusterbench.evaluation.metrics.evaluate`.

    python scripts/parity_turtle.py --reference /path/to/turtle --dataset digits \
        --spaces 1 2 --seeds 0 1 2 --T 1000 --threads 1
    python scripts/parity_turtle.py --summarize parity/turtle.jsonl

Spaces: 1 is the dataset's own features; 2 adds a second view derived from them, a fixed
seeded random ReLU projection, relu(x @ R) with R ~ N(0, 1 / D) of shape (D, 128) drawn
from numpy's default_rng(0): row-aligned with the first, written once as a store under
`--cache-dir` and given to the project as `dataset.spaces=[<that store>]`.

To run the reference on a CPU the script (1) adds the dataset's number of classes to its
`utils.datasets_to_c`, (2) accepts any space name (its argparse lists only its own model
names), (3) passes `--device cpu` and never `--cross_val` (which needs cuML). None of these
touches a number the training computes. Steps per second are measured inside each side's
training loop (the reference's loop includes its own validation pass every 20 steps); both
sides run with the same `--threads`.

Each finished run appends one JSON line to `--out` (default parity/turtle.jsonl); `--summarize`
prints the Markdown table (mean +- std over seeds) of everything in the file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout this script belongs to, whatever is installed
SECOND_DIM = 128  # width of the derived second space


def build_view(dataset: str, cache_dir: str):
    """The project's view of `dataset` (as `python -m clusterbench dataset=NAME` builds it)."""
    from hydra import compose, initialize_config_dir

    from clusterbench.core.config import CONFIG_DIR, build

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={dataset}", f"paths.cache_dir={cache_dir}"])
    node = {k: v for k, v in cfg.dataset.items() if k not in ("spaces", "space_weights")}
    from omegaconf import OmegaConf

    return build(OmegaConf.create(node))


def relu_projection(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The derived second space: relu(x @ R), R ~ N(0, 1 / D) (D, 128), default_rng(seed)."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((x.shape[1], SECOND_DIM)) / np.sqrt(x.shape[1])
    return np.maximum(x.astype(np.float64) @ r, 0.0).astype(np.float32)


def second_space(view, cache_dir: str) -> Path:
    """The derived view as a store row-aligned with `view` (written once)."""
    from clusterbench.data import store_writer

    root = Path(cache_dir) / "parity_turtle" / f"{view.name}_relu{SECOND_DIM}"
    if not (root / "train.npy").exists():
        arrays = {
            "train": relu_projection(view.train.to_numpy()),
            "train_labels": view.train_labels,
            "val": relu_projection(view.val.to_numpy()),
            "val_labels": view.val_labels,
        }
        store_writer.write_store(root, arrays, classes=view.class_names,
                                 meta={"derived": "relu(x @ R), R ~ N(0, 1/D), seed 0"})  # fmt: skip
    return root


def spaces_of(job: dict) -> tuple:
    """(view, [(name, train, val)] per space) of a job."""
    view = build_view(job["dataset"], job["cache_dir"])
    spaces = [("features", view.train.to_numpy(), view.val.to_numpy())]
    if job["spaces"] == 2:
        train, val = view.train.to_numpy(), view.val.to_numpy()
        spaces.append((f"relu{SECOND_DIM}", relu_projection(train), relu_projection(val)))
    return view, spaces


# --------------------------------------------------------------------------- reference side
def extract_reference(source: Path, into: Path) -> Path:
    """run_turtle.py and utils.py from a checkout, or from a bare repository's HEAD."""
    if (source / "run_turtle.py").is_file():
        return source
    archive = subprocess.run(
        ["git", f"--git-dir={source}", "archive", "HEAD", "run_turtle.py", "utils.py"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_reference(job: dict) -> dict:
    """Train the reference once on the job's spaces and score its saved task encoder."""
    import torch

    from clusterbench.evaluation.metrics import evaluate
    from clusterbench.evaluation.predictions import Predictions

    view, spaces = spaces_of(job)
    work = Path(job["workdir"])
    name = f"cb{job['dataset']}"
    for space, train, val in spaces:
        folder = work / "representations" / space
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{name}_train.npy", train)
        np.save(folder / f"{name}_val.npy", val)
    (work / "labels").mkdir(exist_ok=True)
    np.save(work / "labels" / f"{name}_val.npy", view.val_labels)

    code = extract_reference(Path(job["reference"]), work / "reference")
    sys.path.insert(0, str(code))
    import run_turtle
    import utils

    utils.datasets_to_c[name] = int(view.num_classes)
    parse = run_turtle._parse_args
    names = [space for space, _, _ in spaces]

    def parse_any_space(argv):  # its --phis choices name only its own models
        args = parse(argv)
        args.phis = names
        return args

    run_turtle._parse_args = parse_any_space
    ticks: list[float] = []
    progress = run_turtle.tqdm

    class Timed:
        """Its progress bar, silent, recording when each training step starts."""

        def __init__(self, iterable, *args, **kwargs) -> None:
            self.bar = progress(iterable, *args, disable=True, **kwargs)

        def __iter__(self):
            for item in self.bar:
                ticks.append(time.perf_counter())
                yield item

        def set_description(self, *args, **kwargs) -> None:
            self.bar.set_description(*args, **kwargs)

    run_turtle.tqdm = Timed
    argv = [
        "--dataset", name, "--phis", "clipRN50", "--T", str(job["T"]), "--M", str(job["M"]),
        "--batch_size", str(job["batch_size"]), "--gamma", str(job["gamma"]),
        "--inner_lr", str(job["inner_lr"]), "--outer_lr", str(job["outer_lr"]),
        "--device", "cpu", "--root_dir", str(work), "--seed", str(job["seed"]),
    ]  # fmt: skip
    t0 = time.perf_counter()
    run_turtle.run(argv)
    fit_s = time.perf_counter() - t0
    saved = next((work / "task_checkpoints").rglob("*.pt"))
    encoder = torch.load(saved, map_location="cpu", weights_only=True)
    probs = 0
    for i, (_, _, val) in enumerate(spaces):
        layer = encoder[f"phi{i + 1}"]
        logits = torch.from_numpy(val) @ layer["weight"].T + layer["bias"]
        probs = probs + torch.softmax(logits, dim=1) / len(spaces)
    top5 = probs.topk(min(5, probs.shape[1]), dim=1)
    predictions = Predictions(
        top1=top5.indices[:, 0].numpy(), topk=top5.indices.numpy(),
        num_clusters=view.num_classes, confidence=top5.values[:, 0].numpy(),
    )  # fmt: skip
    metrics = evaluate(predictions, view.val_labels, view.num_classes)["metrics"]
    steps = len(ticks) - 1
    return {
        "metrics": metrics,
        "fit_s": fit_s,
        "steps_per_s": steps / (ticks[-1] - ticks[0]) if steps > 0 else None,
    }


# --------------------------------------------------------------------------- project side
def run_project(job: dict) -> dict:
    run_dir = Path(job["workdir"]) / "run"
    cmd = [
        sys.executable, "-m", "clusterbench", "method=turtle", f"dataset={job['dataset']}",
        f"seed={job['seed']}", "logger=none", f"method.T={job['T']}", f"method.M={job['M']}",
        f"method.batch_size={job['batch_size']}", f"method.gamma={job['gamma']}",
        f"method.inner_lr={job['inner_lr']}", f"method.outer_lr={job['outer_lr']}",
        f"trainer.precision={job['precision']}", "trainer.enable_progress_bar=false",
        f"paths.cache_dir={job['cache_dir']}",
    ]  # fmt: skip
    if job["spaces"] == 2:
        view = build_view(job["dataset"], job["cache_dir"])
        cmd.append(f"dataset.spaces=[{second_space(view, job['cache_dir'])}]")
    cmd.append(f"hydra.run.dir={run_dir}")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=child_env(job))
    wall = time.perf_counter() - t0
    saved = json.loads((run_dir / "results.json").read_text())
    info = saved.get("method_info", {})
    return {
        "metrics": saved["metrics"],
        "fit_s": saved.get("timings", {}).get("fit_predict_s", wall),
        "steps_per_s": info.get("steps_per_second"),
        "precision": info.get("precision"),
        "command": "python -m clusterbench " + " ".join(cmd[3:-1]),
    }


# --------------------------------------------------------------------------- driver
def child_env(job: dict) -> dict:
    env = dict(os.environ)
    if job.get("threads"):
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[key] = str(job["threads"])
    env.setdefault("CLUSTERBENCH_PROGRESS", "0")
    return env


def job_for(args, code: str, spaces: int, seed: int, workdir: str) -> dict:
    return {
        "code": code,
        "reference": str(args.reference) if args.reference else None,
        "dataset": args.dataset,
        "spaces": spaces,
        "seed": seed,
        "T": args.T,
        "M": args.M,
        "batch_size": args.batch_size,
        "gamma": args.gamma,
        "inner_lr": args.inner_lr,
        "outer_lr": args.outer_lr,
        "threads": args.threads,
        # The reference trains in fp32; the project's trainer.precision (default here 32-true
        # too; auto is bf16-mixed on hardware with fast bf16).
        "precision": args.precision if code == "project" else "32-true",
        "cache_dir": str(Path(args.cache_dir).expanduser().resolve()),
        "workdir": workdir,
    }


def key_of(record: dict) -> tuple:
    job = record["job"]
    return tuple(job.get(k) for k in ("code", "dataset", "spaces", "seed", "T", "M",
                                      "batch_size", "gamma", "precision"))  # fmt: skip


def summarize(path: Path) -> str:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        job = rec["job"]
        resolved = rec["result"].get("precision") or job["precision"]  # auto: what it became
        code = job["code"] + (f" {resolved}" if job["code"] == "project" else "")
        setting = (job["dataset"], job["spaces"], job["T"], job["M"], job["batch_size"],
                   job["gamma"], job.get("threads"), code)  # fmt: skip
        groups.setdefault(setting, []).append(rec)
    lines = [
        "| dataset | spaces | T / M / B / gamma | code | seeds | ACC | NMI | steps/s | threads |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def stat(recs: list[dict], name: str) -> str:
        values = np.array([r["result"]["metrics"][name] for r in recs]) * 100
        return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0:.2f}"

    for (ds, spaces, t, m, b, gamma, threads, code), recs in sorted(
        groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])
    ):
        seeds = ",".join(
            str(r["job"]["seed"]) for r in sorted(recs, key=lambda r: r["job"]["seed"])
        )
        rates = [r["result"]["steps_per_s"] for r in recs if r["result"].get("steps_per_s")]
        rate = f"{np.mean(rates):.1f}" if rates else "-"
        lines.append(
            f"| {ds} | {spaces} | {t} / {m} / {b} / {gamma:g} | {code} | {seeds} | "
            f"{stat(recs, 'acc')} | {stat(recs, 'nmi')} | {rate} | {threads or 'all'} |"
        )
    return "\n".join(lines)


def child_result(job: dict) -> dict:
    """Run a reference job in its own process (sys.path, patches and globals stay there)."""
    child = subprocess.run(
        [sys.executable, __file__, "--reference-job", json.dumps(job)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=child_env(job),
    )
    lines = [x for x in child.stdout.splitlines() if x.startswith("PARITY_RESULT ")]
    if child.returncode or not lines:
        sys.exit(f"the reference job failed:\n{child.stderr[-4000:]}")
    return json.loads(lines[-1].split(" ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path,
                        help="the reference code: a checkout, or a bare git repository")  # fmt: skip
    parser.add_argument("--dataset", default="digits", help="a project dataset= config name")
    parser.add_argument("--spaces", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    parser.add_argument("--code", nargs="+", default=["reference", "project"],
                        choices=["reference", "project"])  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--T", type=int, default=6000, help="outer steps (reference: 6000)")
    parser.add_argument("--M", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=10000)
    parser.add_argument("--gamma", type=float, default=10.0)
    parser.add_argument("--inner-lr", type=float, default=1e-3)
    parser.add_argument("--outer-lr", type=float, default=1e-3)
    parser.add_argument("--precision", default="32-true",
                        help="the project's trainer.precision (32-true, auto, bf16-mixed)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP/MKL threads of both sides (default: the libraries' own)")  # fmt: skip
    parser.add_argument("--cache-dir", default=os.environ.get("CLUSTERBENCH_CACHE", ".cache"))
    parser.add_argument("--out", type=Path, default=Path("parity/turtle.jsonl"))
    parser.add_argument("--skip-done", action="store_true", help="skip runs already in --out")
    parser.add_argument("--summarize", type=Path, help="print the table of a results file")
    parser.add_argument("--reference-job", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.reference_job:  # a child process: one reference run, result as JSON on stdout
        print("PARITY_RESULT " + json.dumps(run_reference(json.loads(args.reference_job))))
        return
    if args.summarize:
        print(summarize(args.summarize))
        return
    if "reference" in args.code and (args.reference is None or not args.reference.exists()):
        parser.error("--reference must point at the reference checkout or bare repository")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.skip_done and args.out.exists():
        done = {key_of(json.loads(line)) for line in args.out.read_text().splitlines() if line}
    for spaces in args.spaces:
        for seed in args.seeds:
            for code in args.code:
                with tempfile.TemporaryDirectory(prefix="parity-turtle-") as workdir:
                    job = job_for(args, code, spaces, seed, workdir)
                    if key_of({"job": job}) in done:
                        continue
                    result = run_project(job) if code == "project" else child_result(job)
                    record = {"job": {**job, "workdir": None}, "result": result}
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(record) + "\n")
                    m = result["metrics"]
                    rate = result.get("steps_per_s") or float("nan")
                    print(f"{code:9s} {args.dataset} {spaces} space(s) seed {seed}: ACC "
                          f"{m['acc']:.4f} NMI {m['nmi']:.4f} ({rate:.1f} steps/s, "
                          f"{result['fit_s']:.0f} s)", flush=True)  # fmt: skip
    print(summarize(args.out))


if __name__ == "__main__":
    main()
