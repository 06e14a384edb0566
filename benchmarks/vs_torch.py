"""Training-epoch time of lipctr against the PyTorch reference (RecBole 1.2.1's own models), side by side.

For each backbone, on the same ML-100K atomic files (80,000 training rows, batch 4096, the
`<model>_ml100k` config's hyper-parameters), every measurement runs in a FRESH process, and the
processes alternate (PyTorch, lipctr 1 seed, lipctr 5 seeds, lipctr 1 seed smooth, then the next
repeat in the opposite order) so that both sides see the same machine load. Only the training
epoch is timed (no evaluation, no data preparation, no compilation): after `--warmup` untimed
epochs, `--epochs` timed ones; the table gives medians over all timed epochs of all repeats:

  torch 1s    PyTorch, one seed, s/epoch (RecBole's Trainer._train_epoch, --torch-threads, default all cores)
  lip 1s      lipctr, one seed (orig head), s/epoch
  lip 5s/m    lipctr, five seeds trained as one ensemble (one program; on the CPU its members run
              one after another, lipctr.ensemble.over_members), s/epoch per member
  lip/torch   lip 1s / torch 1s        (issue 12's goal: <= 0.5)
  5s/torch    lip 5s/m / torch 1s      (goal: <= 0.35)
  smooth/orig lipctr's rating head (K = 5) over the orig head, one seed (goal: <= 1.05)
with the load average (`uptime`) before and after each backbone.

Setup (torch is never part of lipctr's default install or CI): a separate venv for the reference,

    python3 -m venv /work/venv-bench
    /work/venv-bench/bin/pip install torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl  # a CPU build
    /work/venv-bench/bin/pip install recbole==1.2.1 --no-deps
    /work/venv-bench/bin/pip install "numpy<2" "pandas<2.3" "scipy<1.14" "scikit-learn<1.6" colorlog==4.7.2 \\
        colorama pyyaml tensorboard texttable thop tabulate plotly psutil tqdm

(RecBole 1.2.1 needs numpy < 2; the `bench` extra of pyproject.toml lists the same, and RecBole's
dataset module imports tqdm), then, from lipctr's own venv at the repository root, on a quiet
machine (a full run of all nine backbones takes about 20-30 minutes on 2 cores, about half of it
xDeepFM):

    python -m benchmarks.vs_torch --torch-python /work/venv-bench/bin/python
    python -m benchmarks.vs_torch --models nfm,dcnv2 --epochs 3 --repeats 2 --json out.json
    python -m benchmarks.vs_torch --models deepfm,dcn --torch-python /work/venv-bench/bin/python

Both sides take each backbone's hyper-parameters from lipctr's registry defaults merged with the
`<model>_ml100k` config (`recbole_config` passes them to RecBole; embedding_size 16 on both sides):
DeepFM mlp_hidden_size (128, 128, 128), dropout_prob 0.2 (RecBole's DeepFM.yaml); DCN
cross_layer_num 6, mlp_hidden_size (256, 256, 256), dropout_prob 0.2, reg_weight 2.0 (RecBole's
DCN.yaml); learning rate 1e-3, no weight decay, batch 4096 (the configs). lipctr's K = 1 DeepFM has
its d FM readout weights more than RecBole's (docs/models.md); `benchmarks/recbole_logits.py`
checks that the same weights give both sides the same logits.

lipctr's side runs with lipctr's CLI defaults for XLA:CPU (lipctr.runtime); set XLA_FLAGS to
compare other settings. On a loaded machine the numbers mean little, and PyTorch's suffer most:
its OpenMP threads spin at barriers, so with 2 threads on 2 busy cores a step can be 5x slower
than with 1 (measured at load average 12); benchmark on a quiet machine.
The reference needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 with recent torch
(set here); RecBole's quick_start imports ray, so the worker drives Config / create_dataset /
data_preparation / get_model / Trainer itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import refuse_json_output

MODELS = ("widedeep", "nfm", "xdeepfm", "autoint", "fignn", "dcnv2", "eulernet", "deepfm", "dcn")
RECBOLE_NAMES = {"widedeep": "WideDeep", "nfm": "NFM", "xdeepfm": "xDeepFM", "autoint": "AutoInt",
                 "fignn": "FiGNN", "dcnv2": "DCNV2", "eulernet": "EulerNet", "deepfm": "DeepFM", "dcn": "DCN"}
# lipctr hyper-parameters RecBole has no key for
LIPCTR_ONLY = ("cross_init", "first_order_pooling", "scalar_side_branches")
SEEDS = (2020, 2021, 2022, 2023, 2024)
REPO = Path(__file__).resolve().parents[1]


def time_epochs(run_epoch, warmup: int, epochs: int) -> list[float]:
    """Seconds of each of `epochs` calls of run_epoch() after `warmup` untimed ones."""
    for _ in range(warmup):
        run_epoch()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        run_epoch()
        times.append(time.perf_counter() - start)
    return times


def lipctr_worker(model: str, members: int, variant: str, data: str, warmup: int, epochs: int) -> dict:
    """lipctr's training epoch (Trainer.train_epoch, compiled ahead) of a `members`-seed ensemble."""
    from lipctr import runtime

    runtime.configure_xla()
    import jax

    sys.path.insert(0, str(REPO))  # the worker runs as a script: benchmarks/ is not an installed package
    from benchmarks.epoch_program import ml100k_epoch

    program = ml100k_epoch(model, variant, SEEDS[:members], data)
    box = [program.state]

    def run_epoch():
        box[0], stats = program.compiled(box[0], program.stopping, program.train)
        jax.block_until_ready(stats)

    times = time_epochs(run_epoch, warmup, epochs)
    return {"train_rows": program.num_train, "times": times, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def recbole_config(model: str, data: str, seed: int) -> dict:
    """RecBole's config for the `<model>_ml100k` settings on the atomic files in folder `data`
    (built on lipctr's side: the reference's venv has no lipctr dependencies)."""
    from experiments.configs import named_config
    from lipctr.models import default_hparams

    config = named_config(f"{model}_ml100k")

    hparams = {**default_hparams(model), **config["model_hparams"]}
    hparams = {k: list(v) if isinstance(v, tuple) else v for k, v in hparams.items() if k not in LIPCTR_ONLY}
    hparams["embedding_size"] = hparams.pop("embedding_dim")
    folder = Path(data)
    return {
        **hparams,
        "model": RECBOLE_NAMES[model], "dataset": folder.name, "data_path": str(folder.parent),
        "load_col": {"inter": ["user_id", "item_id", "rating"], "user": ["user_id", "age", "gender", "occupation"],
                     "item": ["item_id", "release_year", "class"]},
        "threshold": {"rating": 4},  # label = rating >= 4, lipctr's rating > 3
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": None, "mode": "labeled"},
        "train_neg_sample_args": None, "metrics": ["AUC", "LogLoss"], "valid_metric": "AUC",
        "train_batch_size": config["train"]["batch_size"], "eval_batch_size": config["train"]["eval_batch_size"],
        "learning_rate": config["train"]["learning_rate"], "weight_decay": config["train"]["weight_decay"],
        "learner": "adam", "epochs": 1, "seed": seed, "reproducibility": True, "use_gpu": False, "device": "cpu",
        "show_progress": False, "checkpoint_dir": "saved", "state": "ERROR",
    }


def torch_worker(settings: dict, threads: int, warmup: int, epochs: int) -> dict:
    """RecBole's own training epoch (Trainer._train_epoch) of one seed; settings from `recbole_config`."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(threads)
    config = Config(model=settings["model"], dataset=settings["dataset"], config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    network = get_model(config["model"])(config, train_data.dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, network)
    counter = iter(range(10**6))
    times = time_epochs(lambda: trainer._train_epoch(train_data, next(counter)), warmup, epochs)
    return {"train_rows": len(train_data.dataset), "times": times, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def run_worker(python: str, args: list[str], script: Path | None = None) -> dict:
    """One measurement in a fresh process running `script --worker` (default this file); its last stdout
    line is the result (JSON)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    with tempfile.TemporaryDirectory(prefix="vs-torch-") as cwd:  # RecBole writes log folders into its cwd
        done = subprocess.run([python, str(script or Path(__file__).resolve()), "--worker", *args], cwd=cwd, env=env,
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: worker {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure_backbone(model: str, args) -> dict:
    """Alternating fresh-process measurements of one backbone; medians over all timed epochs."""
    common = ["--data", args.data, "--warmup", str(args.warmup), "--epochs", str(args.epochs), "--model", model]
    kinds = {
        "torch": (args.torch_python, ["--side", "torch", "--torch-threads", str(args.torch_threads), "--settings",
                                      json.dumps(recbole_config(model, args.data, SEEDS[0]))]),
        "lip1": (sys.executable, ["--side", "lipctr", "--members", "1", "--variant", "orig"]),
        "lip5": (sys.executable, ["--side", "lipctr", "--members", str(args.members), "--variant", "orig"]),
        "smooth1": (sys.executable, ["--side", "lipctr", "--members", "1", "--variant", "smooth"]),
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    rows, loads = {}, [load()]
    for repeat in range(args.repeats):
        for kind in list(kinds) if repeat % 2 == 0 else list(kinds)[::-1]:
            python, extra = kinds[kind]
            result = run_worker(python, extra + common)
            times[kind] += result["times"]
            rows[kind] = result["train_rows"]
    loads.append(load())
    median = {k: statistics.median(v) for k, v in times.items()}
    median["lip5"] /= args.members
    return {"model": model, "median_s": median, "times": times, "train_rows": rows, "load": loads}


def print_row(r: dict) -> None:
    m = r["median_s"]
    print(f"{r['model']:<9} {m['torch']:>8.3f} {m['lip1']:>8.3f} {m['lip5']:>8.3f} {m['lip1'] / m['torch']:>9.2f} "
          f"{m['lip5'] / m['torch']:>9.2f} {m['smooth1'] / m['lip1']:>11.2f}   {r['load'][0]} -> {r['load'][1]}",
          flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per process (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per process first (default 1)")
    p.add_argument("--repeats", type=int, default=1, help="alternating rounds of fresh processes (default 1)")
    p.add_argument("--members", type=int, default=5, help="seeds of the vmapped ensemble (default 5)")
    p.add_argument("--torch-python", default=os.environ.get("LIPCTR_BENCH_PYTHON", sys.executable),
                   help="python with torch and recbole 1.2.1 (default $LIPCTR_BENCH_PYTHON, else this python)")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1,
                   help="torch.set_num_threads of the reference (default: all cores)")
    p.add_argument("--data", default=str(Path(os.environ.get("LIPCTR_DATA", REPO / "datasets")) / "ml-100k"),
                   help="folder with ml-100k.{inter,user,item} (default $LIPCTR_DATA/ml-100k)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--side", choices=("torch", "lipctr"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="orig", help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        if args.side == "torch":
            result = torch_worker(json.loads(args.settings), args.torch_threads, args.warmup, args.epochs)
        else:
            result = lipctr_worker(args.model, args.members, args.variant, args.data, args.warmup, args.epochs)
        print(json.dumps(result))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        print(f"error: --models: unknown backbone(s) {unknown}; known: {','.join(MODELS)}", file=sys.stderr)
        return 2
    if min(args.epochs, args.repeats, args.members) < 1 or args.warmup < 0:
        print("error: --epochs, --repeats and --members must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    for name in ("ml-100k.inter", "ml-100k.user", "ml-100k.item"):
        if not (Path(args.data) / name).is_file():
            print(f"error: --data {args.data}: {name} not found (RecBole atomic files of ML-100K)", file=sys.stderr)
            return 2
    if (refused := refuse_json_output(args.json, {"--data": args.data})) is not None:
        return refused
    args.data = str(Path(args.data).resolve())  # the workers run in temporary folders
    print(f"vs_torch: {os.cpu_count()} cores; {args.repeats} repeat(s) x {args.epochs} timed epochs after "
          f"{args.warmup} warm-up; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; torch python {args.torch_python}")
    print(f"{'backbone':<9} {'torch 1s':>8} {'lip 1s':>8} {'lip 5s/m':>8} {'lip/torch':>9} {'5s/torch':>9} "
          f"{'smooth/orig':>11}   load before -> after")
    results = []
    for model in models:
        results.append(measure_backbone(model, args))
        print_row(results[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
