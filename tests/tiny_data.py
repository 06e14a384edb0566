"""A tiny hand-built Dataset with planted signal, independent of the data pipeline."""

from __future__ import annotations

import numpy as np

from lipctr.data.schema import Dataset, Field, Schema, Split


def tiny_dataset(seed: int = 0, num_users: int = 60, num_items: int = 80, num_interactions: int = 3000) -> Dataset:
    rng = np.random.default_rng(seed)
    users = rng.integers(1, num_users + 1, num_interactions)
    items = rng.integers(1, num_items + 1, num_interactions)
    user_factors = rng.normal(size=(num_users + 1, 3))
    item_factors = rng.normal(size=(num_items + 1, 3))
    preference = (user_factors[users] * item_factors[items]).sum(1) + 0.3 * rng.normal(size=num_interactions)
    rating = np.digitize(preference, np.quantile(preference, [0.06, 0.17, 0.44, 0.78])) + 1
    genre = rng.integers(0, 6, (num_items + 1, 2)).astype(np.int32)
    features = {"user_id": users.astype(np.int32), "item_id": items.astype(np.int32), "genre": genre[items]}
    schema = Schema((
        Field("user_id", "token", "user", num_users + 1),
        Field("item_id", "token", "item", num_items + 1),
        Field("genre", "token_seq", "item", 6, 2),
    ))
    order = rng.permutation(num_interactions)
    cuts = [int(0.8 * num_interactions), int(0.9 * num_interactions)]

    def split(index):
        return Split({k: v[index] for k, v in features.items()}, rating[index].astype(np.int32),
                     (rating[index] > 3).astype(np.float32))

    return Dataset(
        "tiny", schema, split(order[: cuts[0]]), split(order[cuts[0]: cuts[1]]), split(order[cuts[1]:]),
        user_features={"user_id": np.arange(num_users + 1, dtype=np.int32)},
        item_features={"item_id": np.arange(num_items + 1, dtype=np.int32), "genre": genre},
    )
