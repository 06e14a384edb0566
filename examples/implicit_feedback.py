"""Implicit feedback: a continuous signal (dwell time) bucketed into 5 ratings, then trained.

Without star ratings, `lipctr.signal_to_ratings` cuts a signal into N equal-mass classes such that
the click label (class > threshold) is signal > its 60% quantile. The classes become the rating
column of a CSV read by lipctr's data pipeline, and a built-in backbone (NFM, whose bi-interaction
is the product of user and item embeddings) is trained by lipctr's ensemble engine (3 seeds at
once, per-seed early stopping), orig vs scaled supervision.
Prints the class edges, then `<variant> test AUC <mean> ± <std> over 3 seeds`.

    python examples/implicit_feedback.py [--small]   # --small: fewer rows and epochs (the test suite)
"""
import argparse
import tempfile

import numpy as np
import pandas as pd

import lipctr
from lipctr.data import DataConfig, load_dataset
from lipctr.metrics import auc


def dwell_times(num_users=400, num_items=300, rows=60_000, seed=0) -> pd.DataFrame:
    """A stand-in for your logs: seconds spent on an item, from hidden user / item tastes."""
    rng = np.random.default_rng(seed)
    users, items = rng.normal(size=(num_users, 8)), rng.normal(size=(num_items, 8))
    pairs = rng.choice(num_users * num_items, rows, replace=False)  # each (user, item) once
    u, i = pairs // num_items, pairs % num_items
    seconds = 30 * np.exp(0.35 * (users[u] * items[i]).sum(1) + 0.5 * rng.normal(size=rows))
    return pd.DataFrame({"user_id": u, "item_id": i, "dwell_seconds": seconds.round(1)})


def main(small: bool):
    frame = dwell_times(rows=8_000 if small else 60_000)
    rated, buckets = lipctr.signal_to_ratings(frame, "dwell_seconds", num_classes=5, threshold_quantile=0.6)
    print(f"rating classes of dwell_seconds: upper edges {np.round(buckets.edges, 1).tolist()} s; "
          f"click = rating > {buckets.threshold} (dwell > {buckets.edges[buckets.threshold - 1]:.1f} s)")
    with tempfile.TemporaryDirectory() as folder:
        rated.to_csv(f"{folder}/inter.csv", index=False)
        data = load_dataset(DataConfig("dwell", format="csv", path=folder, files={"inter": "inter.csv"},
                                       threshold=buckets.threshold), cache=False)
    config = lipctr.TrainConfig(learning_rate=3e-3, batch_size=1024, max_epochs=2 if small else 40, patience=3)
    for variant, outputs, lambda_r in (("orig", 1, 0.0), ("scaled", 5, 0.7)):
        model = lipctr.build_model("nfm", data.schema, num_outputs=outputs, embedding_dim=16, mlp_hidden_size=(64,))
        loss = lipctr.LossConfig(lambda_r=lambda_r, threshold=buckets.threshold)
        trainer = lipctr.Trainer(model, loss, config, len(data.train), len(data.valid))
        state, stopping = trainer.init(data.train.features, seeds=[0, 1, 2], lambdas=[lambda_r] * 3)
        train, valid = lipctr.to_device(data.train), lipctr.to_device(data.valid)
        state, stopping = lipctr.fit(trainer, state, stopping, train, valid)  # each seed stops on its own
        logits = trainer.predict_logits(stopping.best_params, stopping.best_model_state, data.test.features)
        aucs = [float(auc(trainer.click_score(member), data.test.label)) for member in logits]
        print(f"{variant:6s} test AUC {np.mean(aucs):.4f} ± {np.std(aucs):.4f} over 3 seeds "
              f"(best epochs {np.asarray(stopping.best_epoch).tolist()})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="implicit signal -> ratings -> orig vs scaled supervision")
    parser.add_argument("--small", action="store_true", help="8,000 rows, 2 epochs (the test suite)")
    main(parser.parse_args().small)
