"""Training-engine speed, measured side by side in one run on the synthetic ML-1M-sized data.

For each model: compile time, steady-state epoch time and examples/second of
  orig (K = 1) and smooth (K = 5) heads, with 1 seed and with 5 seeds vmapped,
and the ratios the issue sets targets for:
  5-seed epoch / 1-seed epoch   (<= 5.0: the ensemble must never lose to five sequential runs)
  smooth / orig epoch time      (<= 1.10)
  smooth / orig eval time       (<= 1.05)
Timings are medians over --repeats epochs after one warm-up epoch. --train-rows / --valid-rows keep
only the first rows of the training / validation split (same schema and vocabularies): on a small
CPU, xDeepFM's ML-1M-sized epoch takes many minutes per member, and the ratios are per-step ratios.

    python -m benchmarks.train_speed [--preset ml1m] [--models dcnv2,autoint,xdeepfm] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import time

import jax

from experiments.configs import model_hparams, named_config
from lipctr.data import synthetic_dataset
from lipctr.data.schema import Split
from lipctr.models import build_model
from lipctr.train import TrainConfig, to_device
from lipctr.trainer import Trainer
from lipctr.variant import Variant, orig, smooth

SEEDS = [2020, 2021, 2022, 2023, 2024]


def measure(model_name: str, dataset, variant: Variant, members: int, repeats: int) -> dict:
    config = named_config(f"{model_name}_ml1m")
    schema = dataset.schema
    model = build_model(model_name, schema, variant.num_outputs(schema.num_ratings), **model_hparams(config))
    trainer = Trainer(model, variant.loss_config(schema.threshold),
                      TrainConfig(learning_rate=config["train"]["learning_rate"]),
                      len(dataset.train), len(dataset.valid))
    train, valid = to_device(dataset.train), to_device(dataset.valid)
    chosen = variant.members(SEEDS[:members])
    state, stopping = trainer.init(train["features"], [m.seed for m in chosen], [m.lambda_r for m in chosen])
    start = time.perf_counter()
    compiled = trainer.train_epoch.lower(state, stopping, train).compile()
    compile_seconds = time.perf_counter() - start
    state, stats = jax.block_until_ready(compiled(state, stopping, train))  # warm-up epoch
    jax.block_until_ready(trainer.evaluate(state, stopping, stats, valid))
    epoch_times, eval_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        state, stats = jax.block_until_ready(compiled(state, stopping, train))
        epoch_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.block_until_ready(trainer.evaluate(state, stopping, stats, valid))
        eval_times.append(time.perf_counter() - start)
    epoch = statistics.median(epoch_times)
    return {"compile_s": compile_seconds, "epoch_s": epoch, "eval_s": statistics.median(eval_times),
            "examples_per_s": members * len(dataset.train) / epoch}


def first_rows(split: Split, rows: int) -> Split:
    keep = slice(0, rows)
    return Split({k: v[keep] for k, v in split.features.items()}, split.rating[keep], split.label[keep])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ml1m", help="synthetic preset (ml1m, small, tiny, ...)")
    parser.add_argument("--models", default="dcnv2,autoint,xdeepfm")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-rows", type=int, help="keep only the first rows of the training split")
    parser.add_argument("--valid-rows", type=int, help="keep only the first rows of the validation split")
    args = parser.parse_args(argv)
    dataset = synthetic_dataset(args.preset, seed=0)
    for split, rows in (("train", args.train_rows), ("valid", args.valid_rows)):
        if rows:
            dataset = dataclasses.replace(dataset, **{split: first_rows(getattr(dataset, split), rows)})
    print(f"synthetic {args.preset}: train {len(dataset.train):,}, valid {len(dataset.valid):,}; "
          f"batch 4096; devices {jax.devices()}")
    header = f"{'model':9} {'head':6} {'seeds':>5} {'compile s':>9} {'epoch s':>8} {'eval s':>7} {'examples/s':>11}"
    print(header)
    for name in args.models.split(","):
        results = {}
        for variant in (orig(), smooth(0.7)):
            head = variant.name
            for members in (1, 5):
                r = measure(name, dataset, variant, members, args.repeats)
                results[head, members] = r
                print(f"{name:9} {head:6} {members:>5} {r['compile_s']:9.2f} {r['epoch_s']:8.2f} "
                      f"{r['eval_s']:7.3f} {r['examples_per_s']:11,.0f}", flush=True)
        print(f"  {name}: 5-seed / 1-seed epoch (orig) "
              f"{results['orig', 5]['epoch_s'] / results['orig', 1]['epoch_s']:.2f}"
              f" (target <= 5.0); smooth / orig epoch (5 seeds) "
              f"{results['smooth', 5]['epoch_s'] / results['orig', 5]['epoch_s']:.3f} (target <= 1.10); "
              f"smooth / orig eval (5 seeds) {results['smooth', 5]['eval_s'] / results['orig', 5]['eval_s']:.3f}"
              f" (target <= 1.05)", flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
