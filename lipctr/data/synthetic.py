"""Synthetic rating data from a planted latent preference model, deterministic by seed.

For user u and item i the continuous preference is

    s_ui = b_u + b_i + <p_u, q_i> + noise,
    p_u = z_u + sum of the user's feature effects,  q_i = w_i + mean of the item's feature effects,

where biases and vectors also get contributions from the user / item features (token effects
and numeric features), so features carry signal as well as ids. Interactions are sampled with
skewed user activity and item popularity (popular items are somewhat better liked, as in real
data); s is then bucketed into ratings 1..N by quantiles so the ratings follow a realistic
distribution (ML-100K's 6% / 11% / 27% / 34% / 21% for N = 5).

Synthetic data is for tests and benchmarks; never present results on it as real results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lipctr.data.config import DataConfig
from lipctr.data.errors import DataError
from lipctr.data.raw import RawData, RawTable
from lipctr.data.registry import SyntheticSizes, synthetic_preset

GENERATOR_VERSION = 1
DIM = 8
ML100K_COUNTS = (6110, 11370, 27145, 34174, 21201)


# Feature specifications: (name, kind, cardinality or distribution, effect scale).
USER_FEATURES = {
    "movielens": (("age", "token", 7, 0.25), ("gender", "token", 2, 0.2), ("occupation", "token", 21, 0.2)),
    "yelp": (("user_review_count", "float", "lognormal", 0.25),),
    "amazon": (),
}
ITEM_FEATURES = {
    "movielens": (("release_year", "token", 80, 0.2), ("genre", "token_seq", 18, 0.35)),
    "yelp": (("item_review_count", "float", "lognormal", 0.25), ("categories", "token_seq", 500, 0.3)),
    "amazon": (
        ("sales_type", "token", 8, 0.15), ("sales_rank", "float", "lognormal", 0.2),
        ("categories", "token_seq", 300, 0.3), ("price", "float", "lognormal", 0.15),
        ("brand", "token", 20_000, 0.25),
    ),
}


def rating_proportions(num_ratings: int) -> np.ndarray:
    """Share of each rating 1..N: ML-100K's for N = 5; otherwise the piecewise-linear
    interpolation of ML-100K's cumulative distribution at k / N."""
    cdf = np.concatenate([[0.0], np.cumsum(ML100K_COUNTS) / np.sum(ML100K_COUNTS)])
    grid = np.interp(np.arange(num_ratings + 1) / num_ratings, np.linspace(0, 1, 6), cdf)
    return np.diff(grid)


def bucket_preference(preference: np.ndarray, num_ratings: int, proportions=None) -> np.ndarray:
    """Continuous preference [n] -> int64 ratings 1..N by quantile cuts, so rating k has share
    proportions[k-1] (default `rating_proportions(N)`)."""
    shares = rating_proportions(num_ratings) if proportions is None else np.asarray(proportions, float)
    if len(shares) != num_ratings or np.any(shares <= 0) or not np.isclose(shares.sum(), 1.0):
        raise DataError(f"proportions must be {num_ratings} positive shares summing to 1, got {proportions}")
    cuts = np.quantile(preference, np.cumsum(shares)[:-1])
    return np.searchsorted(cuts, preference, side="right").astype(np.int64) + 1


def default_threshold(num_ratings: int) -> int:
    """Label threshold at 3/5 of the scale: 3 for N = 5 (the paper), 6 for 10, 1 for 2."""
    return min(max(int(round(0.6 * num_ratings)), 1), num_ratings - 1)


def synthetic_raw(preset: str | SyntheticSizes = "tiny", seed: int = 0, *, num_ratings: int = 5,
                  proportions=None, return_preference: bool = False):
    """RawData (the readers' form) of a synthetic preset; with return_preference also the
    continuous preference float64 [n] of every interaction row."""
    name, sizes = synthetic_preset(preset)
    if min(sizes.users, sizes.items, sizes.interactions) < 1 or sizes.interactions > sizes.users * sizes.items:
        raise DataError(f"synthetic sizes {sizes} are impossible (need 1 <= interactions <= users * items)")
    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    user_table, user_effects = _side_features(rng, sizes.users, USER_FEATURES[sizes.features])
    item_table, item_effects = _side_features(rng, sizes.items, ITEM_FEATURES[sizes.features])
    user_bias = rng.normal(0.0, 0.35, sizes.users) + user_effects[0]
    item_bias = rng.normal(0.0, 0.45, sizes.items) + item_effects[0]
    user_vec = rng.normal(0.0, 0.45, (sizes.users, DIM)) + user_effects[1]
    item_vec = rng.normal(0.0, 0.45, (sizes.items, DIM)) + item_effects[1]
    users, items = _sample_pairs(rng, sizes, item_bias)
    preference = user_bias[users] + item_bias[items] + _rowwise_dot(user_vec, item_vec, users, items)
    preference += rng.normal(0.0, sizes.noise, len(users))
    rating = bucket_preference(preference, num_ratings, proportions)
    timestamp = rng.integers(880_000_000, 1_040_000_000, len(users))
    source = f"<synthetic {name} seed {seed}>"
    inter = pd.DataFrame({"user_id": users + 1, "item_id": items + 1, "rating": rating, "timestamp": timestamp})
    kinds = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
    raw = RawData(
        RawTable(inter, kinds, source),
        _table(user_table, "user_id", sizes.users, source),
        _table(item_table, "item_id", sizes.items, source),
    )
    return (raw, preference) if return_preference else raw


def synthetic_config(preset: str | SyntheticSizes = "tiny", seed: int = 0, num_ratings: int = 5,
                     threshold: int | None = None, **overrides) -> DataConfig:
    """The DataConfig that `load_dataset` turns into the synthetic dataset (preset's k_core)."""
    name, sizes = synthetic_preset(preset)
    settings = dict(name=name, format="synthetic", k_core=sizes.k_core, num_ratings=num_ratings,
                    threshold=default_threshold(num_ratings) if threshold is None else threshold,
                    synthetic_seed=seed)
    return DataConfig(**{**settings, **overrides})


def _rowwise_dot(left: np.ndarray, right: np.ndarray, rows_left, rows_right, chunk: int = 1 << 20) -> np.ndarray:
    out = np.empty(len(rows_left))
    for start in range(0, len(rows_left), chunk):
        stop = start + chunk
        out[start:stop] = np.einsum("nd,nd->n", left[rows_left[start:stop]], right[rows_right[start:stop]])
    return out


def _sample_pairs(rng, sizes: SyntheticSizes, item_bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs in random order: users by lognormal activity, items by a
    lognormal popularity correlated with their bias."""
    activity = rng.lognormal(0.0, 0.6, sizes.users)
    quality = (item_bias - item_bias.mean()) / (item_bias.std() + 1e-12)
    popularity = np.exp(0.9 * (0.4 * quality + np.sqrt(1 - 0.4**2) * rng.normal(size=sizes.items)))
    activity, popularity = activity / activity.sum(), popularity / popularity.sum()
    keys = np.empty(0, np.int64)
    while len(keys) < sizes.interactions:
        draw = int(1.3 * (sizes.interactions - len(keys))) + 64
        users = rng.choice(sizes.users, draw, p=activity).astype(np.int64)
        keys = np.concatenate([keys, users * sizes.items + rng.choice(sizes.items, draw, p=popularity)])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]
    keys = keys[: sizes.interactions]
    return keys // sizes.items, keys % sizes.items


def _side_features(rng, n: int, specs) -> tuple[dict[str, object], tuple[np.ndarray, np.ndarray]]:
    """Feature columns of n users / items and their summed (bias [n], vector [n, DIM]) effects."""
    columns, bias, vector = {}, np.zeros(n), np.zeros((n, DIM))
    for name, kind, size, scale in specs:
        if kind == "float":
            raw = rng.lognormal(3.0, 1.2, n)
            standard = (np.log(raw) - 3.0) / 1.2
            bias += scale * rng.normal() * standard
            vector += scale * standard[:, None] * rng.normal(0, 1, DIM)
            columns[name] = np.round(raw, 2)
            continue
        share = 1.0 / np.arange(1, size + 1) ** 0.8
        share /= share.sum()
        token_bias, token_vec = rng.normal(0, scale, size), rng.normal(0, scale, (size, DIM))
        if kind == "token":
            tokens = rng.choice(size, n, p=share)
            bias += token_bias[tokens]
            vector += token_vec[tokens]
            columns[name] = tokens + 1
        else:
            lengths = rng.integers(1, 4, n)
            tokens = rng.choice(size, (n, 3), p=share)
            mask = np.arange(3)[None, :] < lengths[:, None]
            bias += (token_bias[tokens] * mask).sum(1) / lengths
            vector += (token_vec[tokens] * mask[..., None]).sum(1) / lengths[:, None]
            columns[name] = [list(row[:k] + 1) for row, k in zip(tokens, lengths)]
    return columns, (bias, vector)


def _table(columns: dict, key: str, n: int, source: str) -> RawTable | None:
    if not columns:
        return None
    frame = pd.DataFrame({key: np.arange(1, n + 1), **columns})
    kinds = {key: "token"}
    for name, values in columns.items():
        if isinstance(values, list):
            kinds[name] = "token_seq"
        else:
            kinds[name] = "float" if values.dtype.kind == "f" else "token"
    return RawTable(frame, kinds, source)
