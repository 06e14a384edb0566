"""Cost of the rating head: jitted forward+backward examples/second, K = 1 vs K = 5, per model.

    python benchmarks/model_step.py [--models dcnv2 nfm] [--batch 4096] [--repeats 7] [--inner 3]

One training-mode step = lipctr.train.loss_fn (BCE for K = 1, eq. 13 for K = 5, + the model's penalty) and its
gradient with respect to all parameters (dropout on, batch statistics updated), on a random
batch in the ML-100K schema with the default (ML-1M) hyper-parameters. Both variants of a model
are compiled and run once untimed, then timed side by side: each repeat times `inner` steps of
each variant, alternating which goes first, so load changes hit both alike; the report gives
the median per-step time of each and the ratio of the medians (target: K = 5 at most 5%
slower), the median of the per-repeat ratios (each K = 5 time over the K = 1 time measured
next to it), and the spread (min/median, max/median) of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import numpy as np

from benchmarks import refuse_json_output
from lipctr.losses import LossConfig
from lipctr.models import MODEL_NAMES, build_model
from lipctr.models.parameter_counts import ml100k_schema, random_features
from lipctr.train import loss_fn


def make_step(name: str, num_outputs: int, batch: int, seed: int = 0):
    """(jitted step(variables, key) -> (loss, grads, new state), variables) for one model."""
    schema = ml100k_schema()
    rng = np.random.default_rng(seed)
    features = random_features(schema, batch, rng)
    rating = rng.integers(1, schema.num_ratings + 1, batch).astype(np.int32)
    label = (rating > schema.threshold).astype(np.float32)
    model = build_model(name, schema, num_outputs)
    variables = model.init(jax.random.key(seed), features)
    config = LossConfig(threshold=schema.threshold)
    data = {"features": features, "rating": rating, "label": label}
    weight = np.ones(batch, np.float32)

    @jax.jit
    def step(variables, key):
        state = {c: v for c, v in variables.items() if c != "params"}
        loss = jax.value_and_grad(lambda p: loss_fn(model, config, p, state, data, weight, key), has_aux=True)
        (value, new_state), grads = loss(variables["params"])
        return value, grads, new_state

    return step, variables


def time_steps(step, variables, keys) -> float:
    """Seconds per step over len(keys) consecutive steps (all results waited for)."""
    start = time.perf_counter()
    outputs = [step(variables, key) for key in keys]
    jax.block_until_ready(outputs)
    return (time.perf_counter() - start) / len(keys)


def benchmark(name: str, batch: int, repeats: int, inner: int) -> dict:
    steps = {k: make_step(name, k, batch) for k in (1, 5)}
    keys = jax.random.split(jax.random.key(1), inner)
    compile_s = {}
    for k, (step, variables) in steps.items():
        start = time.perf_counter()
        jax.block_until_ready(step(variables, keys[0]))
        compile_s[k] = time.perf_counter() - start
        time_steps(step, variables, keys)  # warm-up
    times = {1: [], 5: []}
    for repeat in range(repeats):
        for k in (1, 5) if repeat % 2 == 0 else (5, 1):
            times[k].append(time_steps(*steps[k], keys))
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "batch": batch,
        "step_s_k1": median[1],
        "step_s_k5": median[5],
        "examples_per_s_k1": batch / median[1],
        "examples_per_s_k5": batch / median[5],
        "ratio_k5_over_k1": median[5] / median[1],
        "paired_ratio": statistics.median(t5 / t1 for t1, t5 in zip(times[1], times[5])),
        "spread_k1": [min(times[1]) / median[1], max(times[1]) / median[1]],
        "spread_k5": [min(times[5]) / median[5], max(times[5]) / median[5]],
        "compile_s": compile_s,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--inner", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if (refused := refuse_json_output(args.json)) is not None:
        return refused
    print(f"backend {jax.default_backend()}, devices {jax.devices()}, batch {args.batch}, "
          f"{args.repeats} repeats x {args.inner} steps, median step time")
    print(f"{'model':<10} {'K=1 ex/s':>11} {'K=5 ex/s':>11} {'K=5/K=1 time':>13} {'paired':>7} "
          f"{'K=1 ms':>8} {'K=5 ms':>8} {'spread K=1':>12} {'spread K=5':>12}")
    results = []
    for name in args.models:
        r = benchmark(name, args.batch, args.repeats, args.inner)
        results.append(r)
        spread = {k: "{:.2f}-{:.2f}".format(*r[f"spread_k{k}"]) for k in (1, 5)}
        print(
            f"{name:<10} {r['examples_per_s_k1']:>11,.0f} {r['examples_per_s_k5']:>11,.0f} "
            f"{r['ratio_k5_over_k1']:>13.3f} {r['paired_ratio']:>7.3f} "
            f"{1e3 * r['step_s_k1']:>8.2f} {1e3 * r['step_s_k5']:>8.2f} "
            f"{spread[1]:>12} {spread[5]:>12}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
