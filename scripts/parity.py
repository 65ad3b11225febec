"""Side-by-side parity: clusterbench's TEMI / SCANv2 against the reference implementation.

A developer script, not part of the package and not run by CI. The reference code
(HHU-MMBS/TEMI-official-BMVC2023) comes from a local checkout the user supplies; this script
imports its modules from that path and runs its own `train_dino` (schedules, heads, losses,
training loop, checkpoint) on the same precomputed features and the same nearest-neighbour
table the project uses, then predicts the validation split with the reference's teacher in
eval mode (its best head), as its `eval_experiment.py` does. The project side is the CLI run
exactly as a user types it. Both sides are scored by `clusterbench.evaluation.metrics.evaluate`.

    python scripts/parity.py --reference ~/src/TEMI-official-BMVC2023 --dataset digits \
        --method temi scanv2 --seeds 0 1 2 --heads 8 --batch-size 128 --knn 20 --epochs 100
    python scripts/parity.py --summarize parity/results.jsonl

Each finished run appends one JSON line to `--out` (default parity/results.jsonl), so a long
comparison can be stopped and continued (`--skip-done`); `--summarize` prints the Markdown
table (mean +- std over seeds) of everything in the file.

The reference targets CUDA and torch 1.11. To run it on a CPU with this torch, the script
(1) turns `.cuda()` and `torch.cuda.synchronize()` into no-ops, (2) provides an empty `clip`
module (OpenAI's package; only its image backbones use it) and, when tensorboard is not
installed, a stand-in `torch.utils.tensorboard`, (3) passes a writer that records nothing, and
(4) uses `--num_workers 0`. None of these touches a number the training computes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout this script belongs to, whatever is installed
METHOD_LOSS = {"temi": "TEMI", "scanv2": "SCAN"}


def build_view(dataset: str, cache_dir: str):
    """The project's view of `dataset` (as `python -m clusterbench dataset=NAME` builds it)."""
    from hydra import compose, initialize_config_dir

    from clusterbench.core.config import CONFIG_DIR, build

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={dataset}", f"paths.cache_dir={cache_dir}"])
    return build(cfg.dataset)


def neighbour_table(view, k: int, cache_dir: str, knn_k: int = 50) -> np.ndarray:
    """The train kNN table the project's run uses (same cache key: at least `knn.k` columns)."""
    from clusterbench.neighbours import mine_neighbours

    found, _ = mine_neighbours(
        view.train, view.fingerprint, "train", max(k, knn_k), cache_dir, index="Flat"
    )
    return found[:, :k]


# --------------------------------------------------------------------------- reference side
class _NoWriter:
    """Stands in for tensorboard's SummaryWriter: the reference logs, nothing here reads it."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _prepare_reference_imports(reference: Path) -> None:
    import torch

    sys.path.insert(0, str(reference))
    sys.modules.setdefault("clip", types.ModuleType("clip"))
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = _NoWriter
        sys.modules["torch.utils.tensorboard"] = stub
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.cuda.synchronize = lambda *args, **kwargs: None


def reference_args(job: dict):
    """Write the features and kNN table where the reference reads them, import its modules
    and return (view, its parsed arguments) for the README's recommended command."""
    import torch

    reference = Path(job["reference"]).expanduser().resolve()
    view = build_view(job["dataset"], job["cache_dir"])
    train = torch.from_numpy(view.train.to_numpy().astype(np.float32))
    val = torch.from_numpy(view.val.to_numpy().astype(np.float32))
    knn = torch.from_numpy(neighbour_table(view, job["knn"], job["cache_dir"]).astype(np.int64))

    work = Path(job["workdir"])
    arch = f"clusterbench-{job['dataset']}"
    # Where the reference's PrecomputedEmbeddingDataset reads them: ./data/embeddings/<ds>-<arch>
    emb_dir = work / "data" / "embeddings" / f"{job['dataset']}-{arch}"
    emb_dir.mkdir(parents=True, exist_ok=True)
    torch.save(train, emb_dir / "embeddings.pt")
    torch.save(torch.from_numpy(view.train_labels.astype(np.int64)), emb_dir / "label.pt")
    torch.save(val, emb_dir / "embeddings-test.pt")
    torch.save(torch.from_numpy(view.val_labels.astype(np.int64)), emb_dir / "label-test.pt")
    torch.save(knn, emb_dir / "knn.pt")
    out_dir = work / "out"
    out_dir.mkdir(parents=True, exist_ok=True)

    _prepare_reference_imports(reference)
    os.chdir(work)
    import main_args

    # The reference README's recommended command, at this comparison's settings.
    argv = [
        "--precomputed", "--arch", arch, "--dataset", "CIFAR10",
        "--batch_size", str(job["batch_size"]), "--use_fp16", "false",
        "--max_momentum_teacher", "0.996", "--lr", "1e-4", "--min_lr", "1e-4",
        "--warmup_epochs", str(job["warmup_epochs"]), "--epochs", str(job["epochs"]),
        "--output_dir", str(out_dir), "--knn", str(job["knn"]), "--knn_path",
        str(emb_dir / "knn.pt"), "--out_dim", str(view.num_classes),
        "--num_heads", str(job["heads"]), "--loss", METHOD_LOSS[job["method"]],
        "--seed", str(job["seed"]), "--num_workers", "0", "--disable_ddp",
        "--embed_dim", str(view.dim),
    ]  # fmt: skip
    if job["epochs"] < 30:  # its teacher-temperature warm-up (0.1 -> 0.1) needs 30 epochs
        argv += ["--warmup_teacher_temp_epochs", "0"]
    if job["method"] == "temi":
        argv += ["--loss-args", f"beta={job['beta']}"]
    else:
        argv += ["--loss-args", f"alpha={job['alpha']}"]
    args = main_args.process_args(main_args.get_args_parser().parse_args(argv))
    args.dataset = job["dataset"]  # the parser only accepts its own dataset names
    return view, args


def run_reference(job: dict) -> dict:
    """Train and evaluate the reference once; `job` as built by `job_for`."""
    import torch

    from clusterbench.evaluation.metrics import evaluate
    from clusterbench.evaluation.predictions import Predictions

    view, args = reference_args(job)
    import train_main
    from model_builders import load_model

    val = torch.from_numpy(view.val.to_numpy().astype(np.float32))
    out_dir = Path(args.output_dir)
    t0 = time.perf_counter()
    train_main.train_dino(args, _NoWriter())
    fit_s = time.perf_counter() - t0

    # eval_experiment.py: the checkpoint's teacher, in eval mode its best head predicts.
    model, _ = load_model(args, head=True)
    state = torch.load(out_dir / "checkpoint.pth", map_location="cpu", weights_only=False)
    model.load_state_dict(state["teacher"])
    model.eval()
    with torch.no_grad():
        logits = model(val)
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices.numpy()
    predictions = Predictions(top1=top5[:, 0], topk=top5, num_clusters=view.num_classes)
    metrics = evaluate(predictions, view.val_labels, view.num_classes)["metrics"]
    return {
        "metrics": metrics,
        "fit_s": fit_s,
        "best_head": int(model.head.best_head_idx),
    }


def fused_state(reference_head: dict, num_heads: int) -> dict:
    """The reference MultiHead's state (per-head nn.Linear / weight_norm tensors) in the
    project's stacked FusedHeads layout."""
    import torch

    state = {k.removeprefix("head."): v for k, v in reference_head.items()}

    def stack(name: str, transform) -> torch.Tensor:
        return torch.stack([transform(state[f"heads.{i}.{name}"]) for i in range(num_heads)])

    out = {
        "mlp.0.weight": stack("mlp.0.weight", lambda w: w.T),
        "mlp.0.bias": stack("mlp.0.bias", lambda b: b),
        "mlp.1.weight": stack("mlp.2.weight", lambda w: w.T),
        "mlp.1.bias": stack("mlp.2.bias", lambda b: b),
        "last_layer.weight_v": stack("last_layer.weight_v", lambda v: v.T),
        "last_layer.weight_g": stack("last_layer.weight_g", lambda g: g[:, 0]),
    }
    return {k: v.contiguous() for k, v in out.items()}


def lockstep(job: dict) -> dict:
    """Train the reference for `job['epochs']` epochs, recording its initial heads, every batch
    it sees and every step's per-head losses; then train the project's LightningModule (through
    `lightning.Trainer`, its own schedules and hooks) from the same initial heads on the same
    batches, and compare step by step. Equal numbers mean equal training, whatever the seed."""
    import lightning as L
    import torch

    from clusterbench.methods.self_distillation.module import SelfDistillationClustering

    view, args = reference_args(job)
    import train_main
    import utils as reference_utils

    seen: dict = {"init": None, "batches": [], "losses": []}
    combo_init, combo_forward = (
        train_main.TeacherStudentCombo.__init__,
        train_main.TeacherStudentCombo.forward,
    )
    update_raw = reference_utils.MetricLogger.update_raw

    def init(self, student, teacher, args):
        combo_init(self, student=student, teacher=teacher, args=args)
        seen["init"] = {k: v.clone() for k, v in self.student.head.state_dict().items()}

    def forward(self, images):
        seen["batches"].append((images[0].clone(), images[1].clone()))
        return combo_forward(self, images)

    def record_raw(self, **kwargs):
        seen["losses"].append(kwargs["head_losses"].detach().clone())
        return update_raw(self, **kwargs)

    train_main.TeacherStudentCombo.__init__ = init
    train_main.TeacherStudentCombo.forward = forward
    reference_utils.MetricLogger.update_raw = record_raw
    train_main.train_dino(args, _NoWriter())
    reference_teacher = torch.load(
        Path(args.output_dir) / "checkpoint.pth", map_location="cpu", weights_only=False
    )["teacher"]

    heads, epochs = job["heads"], job["epochs"]
    steps_per_epoch = len(seen["batches"]) // epochs
    model = SelfDistillationClustering(
        in_dim=view.dim, num_clusters=view.num_classes, loss=job["method"], num_heads=heads,
        beta=job["beta"], alpha=job["alpha"], batch_size=job["batch_size"],
    )  # fmt: skip
    model.student.load_state_dict(fused_state(seen["init"], heads))
    model.teacher.module.load_state_dict(model.student.state_dict())
    project_losses: list = []
    head_losses = model.head_losses

    def recording(anchors, neighbours):
        out = head_losses(anchors, neighbours)
        project_losses.append(out.detach().clone())
        return out

    model.head_losses = recording

    class Replay:
        """The reference's batches, epoch by epoch."""

        trainer: L.Trainer

        def __len__(self) -> int:
            return steps_per_epoch

        def __iter__(self):
            start = self.trainer.current_epoch * steps_per_epoch
            for x, y in seen["batches"][start : start + steps_per_epoch]:
                yield {"anchor": x, "neighbour": y}

    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        deterministic=True,
    )  # fmt: skip
    replay = Replay()
    replay.trainer = trainer
    trainer.fit(model, train_dataloaders=replay)

    ref = torch.stack(seen["losses"]).double()
    ours = torch.stack(project_losses).double()
    diff = (ref - ours).abs().view(epochs, steps_per_epoch, heads).amax(dim=(1, 2))
    teacher = fused_state(reference_teacher, heads)
    param_diff = {
        name: float((teacher[name] - param.detach()).abs().max())
        for name, param in model.teacher.module.named_parameters()
    }
    return {
        "steps": int(ref.shape[0]),
        "steps_per_epoch": steps_per_epoch,
        "max_abs_loss_diff_per_epoch": diff.tolist(),
        "loss_scale": float(ref.abs().max()),
        "max_abs_teacher_param_diff": param_diff,
        "best_head": [int(reference_teacher["head.best_head_idx"]), int(model.best_head)],
    }


# --------------------------------------------------------------------------- project side
def run_project(job: dict) -> dict:
    run_dir = Path(job["workdir"]) / "run"
    loss_arg = (
        f"method.beta={job['beta']}" if job["method"] == "temi" else f"method.alpha={job['alpha']}"
    )
    cmd = [
        sys.executable, "-m", "clusterbench", f"method={job['method']}",
        f"dataset={job['dataset']}", f"seed={job['seed']}", "logger=none",
        f"method.num_heads={job['heads']}", f"method.batch_size={job['batch_size']}",
        f"method.knn={job['knn']}", f"trainer.max_epochs={job['epochs']}", loss_arg,
        "trainer.enable_progress_bar=false", f"paths.cache_dir={job['cache_dir']}",
        f"trainer.precision={job['precision']}", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    saved = json.loads((run_dir / "results.json").read_text())
    return {
        "metrics": saved["metrics"],
        "fit_s": saved.get("timings", {}).get("fit_s", wall),
        "best_head": saved.get("method_info", {}).get("best_head"),
        "precision": saved.get("method_info", {}).get("precision"),
        "command": " ".join(cmd[1:-2]),
    }


# --------------------------------------------------------------------------- driver
def job_for(args, code: str, method: str, seed: int, workdir: str) -> dict:
    from clusterbench.methods.self_distillation.module import default_warmup_epochs

    return {
        "code": code,
        "reference": str(args.reference) if args.reference else None,
        "dataset": args.dataset,
        "method": method,
        "seed": seed,
        "heads": args.heads,
        "batch_size": args.batch_size or {"temi": 512, "scanv2": 4096}[method],
        "knn": args.knn,
        "epochs": args.epochs,
        "warmup_epochs": default_warmup_epochs(args.epochs),
        "beta": args.beta,
        "alpha": args.alpha,
        # The project's trainer.precision (auto: bf16-mixed on hardware with fast bf16); the
        # reference always trains in fp32 (--use_fp16=false).
        "precision": args.precision if code != "reference" else "32-true",
        "cache_dir": str(Path(args.cache_dir).expanduser().resolve()),
        "workdir": workdir,
    }


def key_of(record: dict) -> tuple:
    job = record["job"]
    return tuple(job.get(k, "32-true") for k in ("code", "dataset", "method", "seed", "heads",
                                             "batch_size", "knn", "epochs", "precision"))  # fmt: skip


def summarize(path: Path) -> str:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        job = rec["job"]
        setting = (job["dataset"], job["method"], job["heads"], job["batch_size"], job["knn"],
                   job["epochs"])  # fmt: skip
        code = job["code"]
        if code == "project":  # the precision the run resolved (older records: fp32)
            code += " " + (rec["result"].get("precision") or "32-true")
        groups.setdefault((*setting, code), []).append(rec)
    lines = [
        "| dataset | method | H / B / k / epochs | code | seeds | ACC | NMI | ARI | fit s/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def stat(recs: list[dict], name: str) -> str:
        values = np.array([r["result"]["metrics"][name] for r in recs]) * 100
        return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0:.2f}"

    for (ds, method, h, b, k, e, code), recs in sorted(groups.items()):
        seeds = ",".join(
            str(r["job"]["seed"]) for r in sorted(recs, key=lambda r: r["job"]["seed"])
        )
        fit = np.mean([r["result"]["fit_s"] for r in recs])
        lines.append(
            f"| {ds} | {method} | {h} / {b} / {k} / {e} | {code} | {seeds} | {stat(recs, 'acc')} | "
            f"{stat(recs, 'nmi')} | {stat(recs, 'ari')} | {fit:.0f} |"
        )
    return "\n".join(lines)


def child_result(flag: str, job: dict) -> dict:
    """Run a reference job in its own process (sys.path, patches and globals stay there)."""
    child = subprocess.run(
        [sys.executable, __file__, flag, json.dumps(job)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    lines = [x for x in child.stdout.splitlines() if x.startswith("PARITY_RESULT ")]
    if child.returncode or not lines:
        sys.exit(f"the reference job failed:\n{child.stderr[-4000:]}")
    return json.loads(lines[-1].split(" ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, help="local checkout of the reference code")
    parser.add_argument("--dataset", default="digits", help="a project dataset= config name")
    parser.add_argument("--method", nargs="+", default=["temi", "scanv2"], choices=METHOD_LOSS)
    parser.add_argument("--code", nargs="+", default=["reference", "project"],
                        choices=["reference", "project"])  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the project's (TEMI 512, SCANv2 4096)")  # fmt: skip
    parser.add_argument("--knn", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--beta", type=float, default=0.6)
    parser.add_argument("--alpha", type=float, default=5.0)
    parser.add_argument("--precision", default="auto",
                        help="the project's trainer.precision (auto, 32-true, bf16-mixed)")  # fmt: skip
    parser.add_argument("--cache-dir", default=os.environ.get("CLUSTERBENCH_CACHE", ".cache"))
    parser.add_argument("--out", type=Path, default=Path("parity/results.jsonl"))
    parser.add_argument("--skip-done", action="store_true", help="skip runs already in --out")
    parser.add_argument("--summarize", type=Path, help="print the table of a results file")
    parser.add_argument(
        "--lockstep",
        type=int,
        metavar="EPOCHS",
        help="instead of full runs: train both codes EPOCHS epochs from the same initial heads "
        "on the same batches and print how far their per-step losses and teachers differ",
    )
    parser.add_argument("--reference-job", help=argparse.SUPPRESS)
    parser.add_argument("--lockstep-job", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.reference_job:  # a child process: one reference run, result as JSON on stdout
        result = run_reference(json.loads(args.reference_job))
        print("PARITY_RESULT " + json.dumps(result))
        return
    if args.lockstep_job:
        print("PARITY_RESULT " + json.dumps(lockstep(json.loads(args.lockstep_job))))
        return
    if args.summarize:
        print(summarize(args.summarize))
        return
    if "reference" in args.code or args.lockstep:
        if args.reference is None or not (args.reference / "train_main.py").is_file():
            parser.error("--reference must point at a checkout with train_main.py")
    if args.lockstep:
        for method in args.method:
            with tempfile.TemporaryDirectory(prefix="parity-") as workdir:
                args.epochs = args.lockstep
                job = job_for(args, "lockstep", method, args.seeds[0], workdir)
                result = child_result("--lockstep-job", job)
            print(f"{args.dataset} {method}: " + json.dumps(result, indent=1), flush=True)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.skip_done and args.out.exists():
        done = {key_of(json.loads(line)) for line in args.out.read_text().splitlines() if line}
    for method in args.method:
        for seed in args.seeds:
            for code in args.code:
                with tempfile.TemporaryDirectory(prefix="parity-") as workdir:
                    job = job_for(args, code, method, seed, workdir)
                    if key_of({"job": job}) in done:
                        continue
                    if code == "project":
                        result = run_project(job)
                    else:
                        result = child_result("--reference-job", job)
                    record = {"job": {**job, "workdir": None}, "result": result}
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(record) + "\n")
                    m = result["metrics"]
                    print(f"{code:9s} {args.dataset} {method} seed {seed}: ACC {m['acc']:.4f} "
                          f"NMI {m['nmi']:.4f} ({result['fit_s']:.0f} s)", flush=True)  # fmt: skip
    print(summarize(args.out))


if __name__ == "__main__":
    main()
