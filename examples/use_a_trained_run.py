"""Use a trained run: load it, score (user, item) pairs, recommend top-k items, export, reload.

    python examples/use_a_trained_run.py [RUN_DIR] [--variant smooth]

RUN_DIR is a run of `python -m experiments.main` (default: the newest runs/dcnv2_ml100k/*, which
the README's first command makes). Prints the click probability of 3 (user, item) pairs, the
top-5 unseen items of 2 users, and the largest difference between the exported `jax.export`
program's probabilities and the in-process model's (float32 rounding: 0 to about 1e-7).
"""
import argparse
import glob
import tempfile

import numpy as np
import pandas as pd

import lipctr


def main(run_dir: str, variant: str = "smooth"):
    run = lipctr.load_run(run_dir, variant=variant)  # the model, each member's best params, vocabularies
    users, items = (run.files.vocabularies[field][:3] for field in ("user_id", "item_id"))  # raw ids
    pairs = pd.DataFrame({"user_id": users, "item_id": items})
    scores = run.predict(pairs)  # probability = ensemble mean; one column per member; rating_1..N if smooth
    print(scores[["user_id", "item_id", "probability"]].to_string(index=False))
    print(run.recommend(users[:2], k=5).to_string(index=False))  # training items of each user excluded
    with tempfile.TemporaryDirectory() as folder:
        run.export(f"{folder}/scoring.export")  # a jax.export program + vocabularies: no lipctr model code
        again = lipctr.load_exported(f"{folder}/scoring.export").predict(pairs)
    difference = np.abs(again.probability - scores.probability).max()
    print(f"exported program: max |probability difference| = {difference:.2e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="load a finished run, predict, recommend, export")
    parser.add_argument("run_dir", nargs="?", help="a run directory (default: newest runs/dcnv2_ml100k/*)")
    parser.add_argument("--variant", default="smooth", help="orig, smooth or lambda_sweep (default smooth)")
    args = parser.parse_args()
    runs = sorted(glob.glob("runs/dcnv2_ml100k/*/"))
    if args.run_dir is None and not runs:
        parser.error("no run given and none under runs/dcnv2_ml100k/: run "
                     "`python -m experiments.main --config dcnv2_ml100k` first, or pass RUN_DIR")
    main(args.run_dir or runs[-1], args.variant)
