"""Scaling benchmark: how the training epoch's time and peak memory grow with the work.

    python -m benchmarks.scaling --series vocab     # 1K -> 1M ids, 400K rows: adamw, lazy_adam, rowwise_adagrad
    python -m benchmarks.scaling --series rows      # 100K -> 10M rows, 100K ids: lazy_adam with train.shuffle
                                                    #   sort and feistel (--curves adamw,lazy_adam+feistel: ...)
    python -m benchmarks.scaling --series members   # 1 -> 25 members, 400K rows, 10K ids: adamw, lazy_adam
    python -m benchmarks.scaling --series devices   # 1 -> 4 forced CPU devices (mesh data=N), replicated / sharded

Each point runs in a fresh process (so its peak RSS is its own): synthetic interactions (user_id,
item_id uniform over `vocab` ids each, ratings uniform 1-5: timings, not results), the CLI's
WideDeep orig model (widedeep_ml100k's config, experiments.run.build_trainer), one untimed
warm-up epoch (compilation), then --epochs timed epochs; "epoch s" is their median. Each curve's
exponent is the least-squares slope of log(epoch s) on log(x). Written to --out: <series>.json,
<series>.md (the printed table) and <series>.png (log-log, one line per curve, with its exponent).
Run it on a quiet machine: every other process on the cores changes the numbers.

Default run times on a 2-core Xeon, estimated from measured epoch times (0.7 s per 400K rows at
1K ids, 4.6 s at 1M ids with adamw), not timed: vocab ~3 min, rows ~3 min (adamw adds ~4 min),
members ~4 min, devices ~2 min. On a CPU the N devices of the devices series are forced host devices sharing the
same cores: that series measures the overhead of sharding and the memory per device, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SERIES = {  # series -> (x name, default sizes, default curves)
    "vocab": ("vocab", "1000,10000,100000,1000000", "adamw,lazy_adam,rowwise_adagrad"),
    "rows": ("rows", "100000,300000,1000000,3000000,10000000", "lazy_adam,lazy_adam+feistel"),
    "members": ("members", "1,5,25", "adamw,lazy_adam"),
    "devices": ("devices", "1,2,4", "replicated,sharded"),
}
SEED_BASE = 2020


def fit_exponent(x, y) -> float:
    """The least-squares slope of log(y) on log(x): y ~ c x^slope."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def synthetic_dataset(rows: int, vocab: int, seed: int = 0):
    """A Dataset of `rows` training interactions over `vocab` user and `vocab` item ids (1..vocab),
    ratings uniform 1..5; valid and test 1,000 rows each."""
    from lipctr.data.schema import Dataset, Field, Schema, Split

    rng = np.random.default_rng(seed)

    def split(n):
        rating = rng.integers(1, 6, n).astype(np.int32)
        features = {name: rng.integers(1, vocab + 1, n).astype(np.int32) for name in ("user_id", "item_id")}
        return Split(features, rating, (rating > 3).astype(np.float32))

    schema = Schema((Field("user_id", "token", "user", vocab + 1), Field("item_id", "token", "item", vocab + 1)))
    ids = np.arange(vocab + 1, dtype=np.int32)
    return Dataset(f"scaling-{rows}x{vocab}", schema, split(rows), split(1000), split(1000),
                   user_features={"user_id": ids}, item_features={"item_id": ids})


def measure(point: dict) -> dict:
    """Time one point in this process: {"rows", "vocab", "members", "devices", "optimizer",
    "placement", "epochs", "batch_size"} -> the point plus its measurements."""
    sys.path.insert(0, str(REPO))
    import jax

    from experiments.configs import merge, named_config, validate
    from experiments.run import build_trainer
    from lipctr import sharding
    from lipctr.train import to_device

    start = time.perf_counter()
    dataset = synthetic_dataset(point["rows"], point["vocab"])
    data_seconds = time.perf_counter() - start
    spec = f"data={point['devices']}" if point["devices"] > 1 else ""
    seeds = list(range(SEED_BASE, SEED_BASE + point["members"]))
    config = validate(merge(named_config("widedeep_ml100k"), {
        "variants": ["orig"], "seeds": seeds, "mesh": spec, "data": {"placement": point["placement"]},
        "train": {"embedding_optimizer": point["optimizer"], "batch_size": point["batch_size"],
                  "shuffle": point.get("shuffle", "sort")}}))
    mesh = sharding.make_mesh(spec)
    trainer = build_trainer(config, dataset, "orig", mesh)
    train = to_device(dataset.train, mesh, point["placement"])
    state, stopping = trainer.init(train["features"], seeds, [0.0] * len(seeds))
    times = []
    for _ in range(point["epochs"] + 1):
        begin = time.perf_counter()
        state, stats = trainer.train_epoch(state, stopping, train)
        jax.block_until_ready((state, stats))
        times.append(time.perf_counter() - begin)
    loss = np.asarray(stats.loss)[: len(seeds)]
    if not np.all(np.isfinite(loss)):
        raise RuntimeError(f"{point}: non-finite training loss {loss}")
    state_bytes = sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt_state)))
    shard_rows = max(s.data.shape[0] for s in train["label"].addressable_shards)
    return {**point, "epoch_seconds": float(np.median(times[1:])), "warmup_seconds": times[0],
            "data_seconds": data_seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "state_bytes": int(state_bytes), "rows_per_device": int(shard_rows), "platform": jax.default_backend()}


def run_point(point: dict, in_process: bool) -> dict:
    if in_process:
        return measure(point)
    env = dict(os.environ)
    if point["devices"] > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={point['devices']}"
    done = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--point", json.dumps(point)], cwd=REPO,
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"point {point} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def points(args) -> list[dict]:
    x_name, _, _ = SERIES[args.series]
    base = {"rows": args.rows, "vocab": args.vocab, "members": args.members, "devices": 1, "optimizer": "adamw",
            "placement": "replicated", "epochs": args.epochs, "batch_size": args.batch_size, "shuffle": "sort"}
    out = []
    for curve in args.curves:
        if args.series == "devices":
            own = {"placement": curve, "optimizer": args.optimizer}
        else:  # <optimizer>[+<train.shuffle>]
            optimizer, _, shuffle = curve.partition("+")
            own = {"optimizer": optimizer, "shuffle": shuffle or "sort"}
        out += [{**base, x_name: size, **own} for size in args.sizes]
    return out


def curve_name(result: dict, series: str) -> str:
    if series == "devices":
        return result["placement"]
    shuffle = result.get("shuffle", "sort")
    return result["optimizer"] + ("" if shuffle == "sort" else f"+{shuffle}")


def table(results: list[dict], series: str) -> str:
    x_name = SERIES[series][0]
    lines = [f"| curve | {x_name} | epoch s | warm-up s | peak RSS GB | params+opt state MB | rows per device |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {curve_name(r, series)} | {r[x_name]:,} | {r['epoch_seconds']:.3f} "
                     f"| {r['warmup_seconds']:.1f} | {r['peak_rss_gb']:.2f} | {r['state_bytes'] / 2**20:.1f} "
                     f"| {r['rows_per_device']:,} |")
    lines += ["", "| curve | exponent (epoch s ~ x^a) | last / first epoch s |", "|---|---|---|"]
    for name, xs, ys in curves(results, series):
        lines.append(f"| {name} | {fit_exponent(xs, ys):.3f} | {ys[-1] / ys[0]:.2f} |" if len(xs) > 1 else
                     f"| {name} | - | - |")
    return "\n".join(lines) + "\n"


def curves(results: list[dict], series: str):
    x_name = SERIES[series][0]
    for name in dict.fromkeys(curve_name(r, series) for r in results):
        rows = sorted((r[x_name], r["epoch_seconds"]) for r in results if curve_name(r, series) == name)
        yield name, [x for x, _ in rows], [y for _, y in rows]


def plot(results: list[dict], series: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, xs, ys in curves(results, series):
        label = f"{name} (a = {fit_exponent(xs, ys):.2f})" if len(xs) > 1 else name
        axis.loglog(xs, ys, "o-", label=label)
    axis.set_xlabel(SERIES[series][0])
    axis.set_ylabel("epoch seconds")
    axis.set_title(f"epoch time vs {SERIES[series][0]}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _ints(flag: str, text: str) -> list[int]:
    try:
        values = [int(float(v)) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{flag}: values must be >= 1, got {text!r}")
    return values


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 2)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", choices=SERIES, help="which series (see above)")
    parser.add_argument("--sizes", help="the x values, comma-separated (default: the series' own)")
    parser.add_argument("--curves", help="optimizers (vocab / rows / members: adamw, lazy_adam, rowwise_adagrad, "
                        "sgd, each optionally +feistel for train.shuffle = feistel) or placements (devices: "
                        "replicated, sharded), comma-separated (default: the series' own)")
    parser.add_argument("--rows", type=int, default=400_000, help="training rows when not the x (default 400000)")
    parser.add_argument("--vocab", type=int, default=None, help="ids per field when not the x (default 100000; "
                        "10000 for members and devices)")
    parser.add_argument("--members", type=int, default=1, help="members when not the x (default 1)")
    parser.add_argument("--optimizer", default="lazy_adam", help="devices series: its embedding optimizer")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up one (default 2)")
    parser.add_argument("--batch-size", type=int, default=4096, help="train.batch_size (default 4096)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scaling",
                        help="output folder (default benchmarks/results/scaling)")
    parser.add_argument("--in-process", action="store_true", help="measure every point in this process (tests; "
                        "peak RSS is then the whole process's)")
    parser.add_argument("--point", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.point is None and args.series is None:
        parser.error("--series is required")
    if args.point is None:
        try:
            args.sizes = _ints("--sizes", args.sizes or SERIES[args.series][1])
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
        args.curves = (args.curves or SERIES[args.series][2]).split(",")
        if args.series == "devices":
            known = ("replicated", "sharded")
        else:
            known = [o + s for o in ("adamw", "lazy_adam", "rowwise_adagrad", "sgd") for s in ("", "+feistel")]
        if not set(args.curves) <= set(known):
            parser.error(f"--curves: {args.series} takes {', '.join(known)}, got {','.join(args.curves)}")
        if args.optimizer not in ("adamw", "lazy_adam", "rowwise_adagrad", "sgd"):
            parser.error(f"--optimizer: one of adamw, lazy_adam, rowwise_adagrad, sgd, got {args.optimizer!r}")
        if args.vocab is None:
            args.vocab = 10_000 if args.series in ("members", "devices") else 100_000
        if min(args.rows, args.vocab, args.members, args.epochs, args.batch_size) < 1:
            parser.error("--rows, --vocab, --members, --epochs and --batch-size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.point is not None:
        print(json.dumps(measure(json.loads(args.point))))
        return 0
    results = []
    for point in points(args):
        results.append(run_point(point, args.in_process))
        r = results[-1]
        print(f"{curve_name(r, args.series)} {SERIES[args.series][0]}={r[SERIES[args.series][0]]:,}: "
              f"epoch {r['epoch_seconds']:.3f} s, peak RSS {r['peak_rss_gb']:.2f} GB", file=sys.stderr, flush=True)
    text = table(results, args.series)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.series}.md").write_text(text)
    (args.out / f"{args.series}.json").write_text(json.dumps(results, indent=1))
    plot(results, args.series, args.out / f"{args.series}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
