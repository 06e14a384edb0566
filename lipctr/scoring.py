"""Scoring with a trained ensemble: (user, item) pairs -> click probabilities, users -> top-k items.

`Scorer` holds a run's files (lipctr.run_files) and a function batch -> logits [M, C, K] for a
features dict of C rows; `lipctr.inference.Run` (the flax model in process) and
`lipctr.export.ExportedRun` (a `jax.export` program) are Scorers. Rows are scored in chunks of a
fixed size C (the run's eval batch size, or the next power of two above a smaller input, the last
chunk padded), so device memory stays bounded and each chunk size compiles once. Click
probabilities are then taken op by op from the logits of the whole request (of each user's
catalogue in `recommend`), exactly as the training run's evaluation does, so a run's
`predictions.npz` is reproduced bit for bit and `recommend` agrees with `predict`.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm import tqdm

from lipctr.encoding import InputError, Vocabulary
from lipctr.losses import LossConfig, click_probability, click_score
from lipctr.run_files import RunFiles


def chunk_size(num_rows: int, limit: int, minimum: int = 1) -> int:
    """Rows per device call: the next power of two >= num_rows, at most `limit`, at least `minimum`."""
    return max(minimum, min(limit, 1 << max(0, int(num_rows) - 1).bit_length()))


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of scores [G, I]: (columns [G, k], their scores) in descending order, ties by lower
    column; at most k, -inf entries (excluded items) left out by a caller reading the scores."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


class Scorer:
    """Predictions and recommendations of one trained variant (see the module docstring)."""

    def __init__(self, files: RunFiles, logits_fn):
        self.files, self.logits_fn = files, logits_fn
        self.schema = files.schema
        self.vocabulary = Vocabulary(files.schema, files.vocabularies, files.user_tables, files.item_tables)
        meta = files.meta
        self.members = [m["member"] for m in meta["members"]]
        self.member_seeds = [int(m["seed"]) for m in meta["members"]]
        self.member_lambdas = [float(m["lambda_r"]) for m in meta["members"]]
        self.num_outputs = int(meta["model"]["num_outputs"])
        self.threshold, self.aggregation = int(meta["loss"]["threshold"]), meta["loss"]["aggregation"]
        self.loss_config = LossConfig(threshold=self.threshold, aggregation=self.aggregation,
                                      aux_rating=bool(meta["loss"].get("aux_rating", False)))
        self.chunk_limit = int(meta["eval_batch_size"])
        self.min_chunk = 1  # a mesh's "data" axis size: every chunk splits over it

    def logits(self, features: dict[str, np.ndarray], progress=None) -> np.ndarray:
        """Model features of n rows -> logits float32 [M, n, K], scored chunk by chunk."""
        n = len(next(iter(features.values())))
        size = chunk_size(n, self.chunk_limit, self.min_chunk)
        parts = []
        for start in range(0, n, size):
            rows = np.minimum(np.arange(start, start + size), n - 1)  # the last chunk repeats its last row
            parts.append(np.asarray(self.logits_fn({k: v[rows] for k, v in features.items()}))[:, : n - start])
            if progress is not None:
                progress.update(min(size, n - start))
        if not parts:
            return np.zeros((len(self.members), 0, self.num_outputs), np.float32)
        return np.concatenate(parts, axis=1)

    def probabilities(self, logits: np.ndarray, ratings: bool = True) -> dict[str, np.ndarray]:
        """logits [M, n, K] -> {"member_probability" [M, n], "probability" [n] (ensemble mean), and
        for a rating head "ratings" [n, K] (mean softmax over members)}. Computed op by op on the
        whole array, as the training run's evaluation does (XLA's elementwise results can depend
        on an array's shape in the last bit)."""
        logits = jnp.asarray(logits)
        probability = self.click_probability(logits)
        out = {"member_probability": np.asarray(probability), "probability": np.asarray(jnp.mean(probability, axis=0))}
        rating_logits = logits[..., 1:] if self.loss_config.aux_rating else logits
        if ratings and rating_logits.shape[-1] > 1:
            out["ratings"] = np.asarray(jnp.mean(jax.nn.softmax(rating_logits, axis=-1), axis=0))
        return out

    def click_probability(self, logits) -> jax.Array:
        """p_hat [...] of logits [..., K] (the click column of an aux_rating head)."""
        return click_probability(self.loss_config.click_logits(logits), self.threshold, self.aggregation)

    def click_score(self, logits) -> jax.Array:
        """The ranking score (log-odds of p_hat) [...] of logits [..., K], as training's AUC uses."""
        return click_score(self.loss_config.click_logits(logits), self.threshold, self.aggregation)

    def predict(self, frame: pd.DataFrame, unknown: str = "map", progress: bool = False,
                source: str = "predict") -> pd.DataFrame:
        """Score every row of `frame` (raw user_id, item_id, optional feature columns; see
        lipctr.encoding) -> DataFrame of user_id, item_id, probability (ensemble mean),
        probability_<member> for each member and, for a rating head, rating_1..rating_N (mean
        predicted distribution) and expected_rating. attrs["unknown"]: unknown values per column;
        `source` names the frame in error messages."""
        features, counts = self.vocabulary.features(frame, unknown, source=source)
        user, item = self.schema.user_field, self.schema.item_field
        out = pd.DataFrame({user: frame[user].to_numpy(), item: frame[item].to_numpy()})
        if len(frame) == 0:
            return out.assign(probability=np.zeros(0, np.float32))
        large = len(frame) > self.chunk_limit  # a bar only when scoring takes several device calls
        with tqdm(total=len(frame), unit="pair", disable=not (progress and large), file=sys.stderr,
                  desc="scoring") as bar:
            scores = self.probabilities(self.logits(features, bar))
        columns = {"probability": scores["probability"]}
        columns.update({f"probability_{m}": scores["member_probability"][i] for i, m in enumerate(self.members)})
        if "ratings" in scores:
            ratings = scores["ratings"]
            columns.update({f"rating_{r + 1}": ratings[:, r] for r in range(ratings.shape[1])})
            columns["expected_rating"] = ratings @ np.arange(1, ratings.shape[1] + 1, dtype=np.float32)
        out = pd.concat([out, pd.DataFrame(columns)], axis=1)
        out.attrs["unknown"] = counts
        return out

    def recommend(self, users, k: int = 10, exclude_seen: bool = True, unknown: str = "map",
                  progress: bool = False) -> pd.DataFrame:
        """Top-k items of the full catalogue for each raw user id, by ensemble-mean click
        probability; with exclude_seen, items the user interacted with in training are left out.
        -> DataFrame of user_id, rank (1..k), item_id (raw), probability."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"recommend: k must be a positive integer, got {k!r}")
        inter = [f.name for f in self.schema.fields if f.source == "inter"]
        if inter:
            raise InputError(f"recommend: the model takes interaction-side field(s) {inter}, which a (user, item) "
                             "pair alone does not give; score explicit pairs with predict")
        users = list(users)
        user_ids, _ = self.vocabulary.ids(users, self.schema.user_field, unknown, "recommend")
        num_items = self.schema[self.schema.item_field].vocab_size - 1
        catalogue = np.arange(1, num_items + 1, dtype=np.int32)
        group = max(1, 16 * self.chunk_limit // num_items)
        item_names = self.files.vocabularies[self.schema.item_field]
        frames = []
        with tqdm(total=len(users), unit="user", disable=not (progress and len(users) > group), file=sys.stderr,
                  desc="recommending") as bar:
            for start in range(0, len(users), group):
                block = user_ids[start: start + group]
                features = self.vocabulary.gather(np.repeat(block, num_items), np.tile(catalogue, len(block)))
                logits = self.logits(features)
                probability = np.stack([self.probabilities(logits[:, row * num_items: (row + 1) * num_items],
                                                           ratings=False)["probability"]
                                        for row in range(len(block))])  # per user, as predict on its catalogue
                if exclude_seen:
                    for row, user in enumerate(block):
                        probability[row, self.files.seen(int(user)) - 1] = -np.inf
                columns, values = top_k(probability, k)
                keep = np.isfinite(values)
                rows = np.repeat(np.arange(len(block)), keep.sum(1))
                frames.append(pd.DataFrame({
                    self.schema.user_field: np.asarray(users[start: start + group], dtype=object)[rows],
                    "rank": np.nonzero(keep)[1] + 1,
                    self.schema.item_field: item_names[columns[keep]],
                    "probability": values[keep],
                }))
                bar.update(len(block))
        if not frames:
            return pd.DataFrame(columns=[self.schema.user_field, "rank", self.schema.item_field, "probability"])
        return pd.concat(frames, ignore_index=True)
