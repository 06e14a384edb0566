"""A lambda_r x seeds grid of DCNV2 as ONE compiled program vs one fresh process per member (issue 14).

Every tuning tool of the field runs one process per grid point; lipctr trains the whole grid as
one ensemble. Both sides are timed here as fresh processes from the outside (wall clock including
interpreter start, imports, loading the data, compilation, training to --epochs, test evaluation
and writing the run outputs): one process training the P x S members through
experiments.grid.run_grid, against P x S processes training one member each the same way. The
data (the synthetic preset, its first --rows training rows and --rows // 8 validation and test
rows) is generated once and pickled, so each process only loads it, as from a cache. Prints both
times, their ratio, the largest difference of a member's test AUC between the two, and the load.

    python -m benchmarks.grid [--preset ml1m] [--rows 50000] [--epochs 2] [--points 5] [--seeds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAMBDAS = (0.1, 0.3, 0.5, 0.7, 0.9)
FIRST_SEED = 2020


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


def make_data(preset: str, rows: int, path: Path) -> str:
    """The synthetic preset cut to its first rows, pickled to path; a one-line description."""
    from benchmarks.train_speed import first_rows
    from lipctr.data import synthetic_dataset

    dataset = synthetic_dataset(preset, seed=0)
    sizes = {"train": rows, "valid": max(1, rows // 8), "test": max(1, rows // 8)}
    dataset = dataclasses.replace(dataset, **{s: first_rows(getattr(dataset, s), n) for s, n in sizes.items()})
    path.write_bytes(pickle.dumps(dataset))
    return f"synthetic {preset}: train/valid/test {len(dataset.train):,}/{len(dataset.valid):,}/{len(dataset.test):,}"


def worker(data: Path, lambdas: list[float], seeds: list[int], epochs: int, out: Path) -> None:
    """Train the smooth DCNV2 grid lambdas x seeds as one program; its records as JSON on stdout."""
    from lipctr import runtime

    runtime.configure_xla()
    from experiments.configs import merge, named_config, validate
    from experiments.grid import run_grid
    from lipctr.ranking import ranking_candidates

    dataset = pickle.loads(data.read_bytes())
    config = validate(merge(named_config("dcnv2_ml1m"), {
        "seeds": seeds, "variants": ["smooth"], "grid": {"loss.lambda_r": lambdas},
        "train": {"max_epochs": epochs, "patience": epochs}, "eval": {"num_negatives": 20}}))
    candidates = ranking_candidates(dataset, "test", 20, 0, "positive")
    records = run_grid(config, dataset, "smooth", out, candidates, progress=False)
    print(json.dumps([{"lambda_r": r["point"]["loss.lambda_r"], "seed": r["seed"], "auc": r["auc"]} for r in records]))


def timed_process(args: list[str]) -> tuple[float, list[dict]]:
    """Wall seconds of `python -m benchmarks.grid --worker ARGS` and the records it printed."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "benchmarks.grid", "--worker", *args], capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"worker {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="ml1m")
    p.add_argument("--rows", type=int, default=50_000, help="first training rows kept (valid / test: rows // 8)")
    p.add_argument("--epochs", type=int, default=2, help="epochs every member trains (patience = epochs)")
    p.add_argument("--points", type=int, default=5, help=f"lambda_r values, the first of {LAMBDAS}")
    p.add_argument("--seeds", type=int, default=5, help=f"seeds {FIRST_SEED}, {FIRST_SEED + 1}, ...")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--lambdas", help=argparse.SUPPRESS)
    p.add_argument("--seed-list", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(Path(args.data), [float(x) for x in args.lambdas.split(",")],
                      [int(x) for x in args.seed_list.split(",")], args.epochs, Path(args.out))
    if not 1 <= args.points <= len(LAMBDAS) or args.seeds < 1:
        raise SystemExit(f"--points must lie in 1..{len(LAMBDAS)} and --seeds be >= 1")
    lambdas, seeds = list(LAMBDAS[:args.points]), [FIRST_SEED + i for i in range(args.seeds)]
    with tempfile.TemporaryDirectory(prefix="lipctr-grid-bench-") as tmp:
        tmp = Path(tmp)
        print(make_data(args.preset, args.rows, tmp / "data.pkl") + f"; {args.epochs} epochs; DCNV2 smooth, "
              f"{len(lambdas)} lambda_r x {len(seeds)} seeds; start: {load_average()}", flush=True)
        common = ["--data", str(tmp / "data.pkl"), "--epochs", str(args.epochs)]
        one_seconds, one = timed_process([*common, "--lambdas", ",".join(map(str, lambdas)),
                                          "--seed-list", ",".join(map(str, seeds)), "--out", str(tmp / "one")])
        print(f"one program, {len(one)} members: {one_seconds:.1f} s", flush=True)
        separate_seconds, separate = 0.0, []
        for i, (lam, seed) in enumerate((lam, seed) for lam in lambdas for seed in seeds):
            seconds, records = timed_process([*common, "--lambdas", str(lam), "--seed-list", str(seed),
                                              "--out", str(tmp / f"member{i}")])
            separate_seconds += seconds
            separate += records
        print(f"{len(separate)} separate processes: {separate_seconds:.1f} s", flush=True)
    alone = {(r["lambda_r"], r["seed"]): r["auc"] for r in separate}
    difference = max(abs(r["auc"] - alone[r["lambda_r"], r["seed"]]) for r in one)
    print(f"separate / one program: {separate_seconds / one_seconds:.2f}x; largest test-AUC difference of a member "
          f"{difference:.2e}; end: {load_average()}")


if __name__ == "__main__":
    main()
