"""Scoring speed of a loaded run on ML-100K, beside the training-time evaluation, in one process.

  predict      lipctr.load_run(...).predict on the test split's raw (user, item) pairs: pairs/s
  recommend    top-10 over the full catalogue for all 943 users (943 x 1,682 pairs):
               recommendations (users) /s and pairs/s
  evaluation   the training run's own test evaluation (Trainer.predict_logits on the device-resident
               test split, then click_probability): examples/s

and the ratios predict / evaluation and recommend / evaluation (pairs per second). predict and
recommend include everything a user pays for (raw-id lookup, feature gathering, host <-> device
copies, the output frame); evaluation starts from device arrays. Medians over --repeats after a
warm-up call. Without --run, trains dcnv2_ml100k (5 seeds, --epochs) into a temporary folder.

    python -m benchmarks.predict [--run RUN_DIR] [--variant smooth] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
import pandas as pd

import lipctr
from experiments.configs import named_config
from experiments.run import build_trainer, run_variant
from lipctr.data import get_preset, load_dataset
from lipctr.ranking import ranking_candidates
from lipctr.train import to_device


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_run(dataset, variant: str, epochs: int, folder: Path) -> Path:
    config = named_config("dcnv2_ml100k")
    config["train"]["max_epochs"] = epochs
    (folder / "config.json").write_text(json.dumps(config))
    ev = config["eval"]
    candidates = ranking_candidates(dataset, "test", ev["num_negatives"], ev["ranking_seed"], ev["relevance"])
    run_variant(config, dataset, variant, folder, candidates, progress=False)
    return folder


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a finished ML-100K run directory (default: train one)")
    p.add_argument("--variant", default="smooth")
    p.add_argument("--epochs", type=int, default=1, help="epochs of the run trained without --run")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    dataset = load_dataset(get_preset("ml100k"))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run) if args.run else train_run(dataset, args.variant, args.epochs, Path(tmp))
        config = json.loads((run_dir / "config.json").read_text())
        run = lipctr.load_run(run_dir, args.variant)
        vocab = dataset.vocabularies
        pairs = pd.DataFrame({"user_id": vocab["user_id"][dataset.test.features["user_id"] - 1],
                              "item_id": vocab["item_id"][dataset.test.features["item_id"] - 1]})
        users = list(vocab["user_id"])
        predict_s = timed(lambda: run.predict(pairs), args.repeats)
        recommend_s = timed(lambda: run.recommend(users, k=10), max(1, args.repeats - 2))

        trainer = build_trainer(config, dataset, args.variant)
        test = to_device(dataset.test)

        def evaluate():
            logits = trainer.predict_logits(run.params, run.model_state, test["features"])
            jax.block_until_ready(trainer.click_probability(logits))

        evaluate_s = timed(evaluate, args.repeats)
    n, catalogue = len(pairs), len(vocab["item_id"])
    rows = {
        "predict (raw pairs -> frame)": n / predict_s,
        "recommend (full catalogue, pairs)": len(users) * catalogue / recommend_s,
        "training-time evaluation": n / evaluate_s,
    }
    print(f"{config['model']}_ml100k {args.variant}, {len(run.members)} members, chunk {run.chunk_limit} rows, "
          f"backend {jax.default_backend()}")
    print("| measure | pairs/s | / evaluation |\n|---|---|---|")
    for name, rate in rows.items():
        print(f"| {name} | {rate:,.0f} | {rate / rows['training-time evaluation']:.3f} |")
    print(f"recommendations: {len(users) / recommend_s:,.1f} users/s (top-10 of {catalogue:,} items each, "
          f"{len(users)} users in {recommend_s:.2f} s); predict: {n:,} pairs in {predict_s:.3f} s")


if __name__ == "__main__":
    main()
