"""Preprocessing checked against independent computations: brute-force k-core, RecBole's split
rounding, de-duplication, remapping, encodings and label/rating handling."""

from __future__ import annotations

import collections

import numpy as np
import pandas as pd
import pytest

from lipctr.data import DataConfig, load_dataset, read_raw, sequence_lengths
from lipctr.data.encode import encode_floats, encode_token_seq, encode_tokens
from lipctr.data.kcore import kcore_rows
from lipctr.data.loader import load_with_rows
from lipctr.data.split import random_split, split_sizes
from tests.data_files import INTER_HEADER, item_rows, random_interactions, user_rows, write_atomic_dataset, write_table


def brute_force_kcore(pairs: list[tuple[int, int]], k: int) -> list[int]:
    """Remove one violating interaction at a time until none violates (set-based reference)."""
    alive = set(range(len(pairs)))
    while True:
        users = collections.Counter(pairs[r][0] for r in alive)
        items = collections.Counter(pairs[r][1] for r in alive)
        bad = next((r for r in sorted(alive) if users[pairs[r][0]] < k or items[pairs[r][1]] < k), None)
        if bad is None:
            return sorted(alive)
        alive.remove(bad)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_kcore_matches_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    users = rng.integers(0, 15, n) ** 2 % 15  # skewed activity
    items = rng.integers(0, 12, n)
    expected = brute_force_kcore(list(zip(users.tolist(), items.tolist())), k)
    np.testing.assert_array_equal(kcore_rows(users, items, k), expected)


def test_kcore_result_satisfies_the_constraint_and_k1_keeps_all():
    rng = np.random.default_rng(7)
    users, items = rng.integers(0, 200, 6000), rng.integers(0, 150, 6000)
    rows = kcore_rows(users, items, 22)
    assert 0 < len(rows) < 6000
    assert (np.unique(users[rows], return_counts=True)[1] >= 22).all()
    assert (np.unique(items[rows], return_counts=True)[1] >= 22).all()
    np.testing.assert_array_equal(kcore_rows(users, items, 1), np.arange(6000))


@pytest.mark.parametrize(
    "total, expected",
    [(100_000, (80_000, 10_000, 10_000)), (25, (21, 2, 2)), (5, (3, 1, 1)), (12, (10, 1, 1)), (3, (1, 1, 1))],
)
def test_split_sizes_follow_recbole_rounding(total, expected):
    assert split_sizes(total, (0.8, 0.1, 0.1)) == expected


def test_split_is_deterministic_disjoint_and_complete():
    a = random_split(1000, (0.8, 0.1, 0.1), seed=3)
    b = random_split(1000, (0.8, 0.1, 0.1), seed=3)
    c = random_split(1000, (0.8, 0.1, 0.1), seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])
    joined = np.concatenate(a)
    assert len(joined) == 1000 and len(np.unique(joined)) == 1000


def test_encoders_against_hand_computed_values():
    ids, vocab = encode_tokens(np.array(["b", "", "a", "b"], dtype=object))
    np.testing.assert_array_equal(ids, [1, 0, 2, 1])
    assert vocab == 3
    seq, vocab = encode_token_seq([["x", "y", "z"], [], ["y"]], max_len=2)
    np.testing.assert_array_equal(seq, [[1, 2], [0, 0], [2, 0]])
    assert vocab == 4
    np.testing.assert_array_equal(sequence_lengths(seq), [2, 0, 1])
    floats, missing = encode_floats([2.0, np.nan, 6.0, 4.0])
    np.testing.assert_allclose(floats, [0.0, 0.5, 1.0, 0.5])
    assert missing == 1
    np.testing.assert_array_equal(encode_floats([3.0, 3.0])[0], [0.0, 0.0])


@pytest.fixture
def toy(tmp_path):
    """60 users x 40 items, 900 ratings, plus a duplicate, an interaction of a user without a
    user row and one of an item without an item row."""
    inter = random_interactions(60, 40, 900, seed=1)
    inter.append((inter[0][0], inter[0][1], 1 if inter[0][2] != 1 else 2, inter[0][3] + 5))  # newer duplicate
    inter.append(("ghost", "i0", 4, 7))
    inter.append(("u0", "nothing", 4, 7))
    folder = write_atomic_dataset(tmp_path, "toy", inter, user_rows(60, 1), item_rows(40, 1))
    return folder, inter


def _config(folder, **overrides):
    return DataConfig("toy", path=str(folder), **overrides)


def test_pipeline_counts_against_pandas(toy):
    folder, inter = toy
    dataset = load_dataset(_config(folder), cache=False)
    frame = pd.DataFrame(inter, columns=["user", "item", "rating", "time"])
    kept = frame.sort_values("time", kind="stable").drop_duplicates(["user", "item"], keep="last")
    kept = kept[(kept.user != "ghost") & (kept.item != "nothing")]
    s = dataset.stats
    assert s["raw_interactions"] == len(frame)
    assert s["duplicates_dropped"] == 1 and s["missing_user_dropped"] == 1 and s["missing_item_dropped"] == 1
    assert s["interactions"] == len(kept)
    assert s["users"] == kept.user.nunique() and s["items"] == kept.item.nunique()
    assert s["positives"] == int((kept.rating > 3).sum())
    assert s["rating_counts"] == {str(r): int((kept.rating == r).sum()) for r in range(1, 6)}
    assert (s["train"], s["valid"], s["test"]) == split_sizes(len(kept), (0.8, 0.1, 0.1))


def test_examples_carry_their_raw_values(toy):
    folder, inter = toy
    config = _config(folder)
    dataset, rows = load_with_rows(config, cache=False)
    raw = read_raw(config)
    users = {u: (a, g, s) for u, a, g, s in raw.user.frame.itertuples(index=False)}
    items = {i: (y, tuple(genre)) for i, y, genre in raw.item.frame.itertuples(index=False)}
    frame = raw.inter.frame
    seen = {}
    for name, split in dataset.splits.items():
        r = rows[name]
        np.testing.assert_array_equal(split.rating, frame["rating"].to_numpy()[r].astype(int))
        np.testing.assert_array_equal(split.label, (split.rating > 3).astype(np.float32))
        for field in ("user_id", "item_id", "age", "gender", "year", "genre"):
            ids = split.features[field]
            keys = ids.tolist() if ids.ndim == 1 else [tuple(x) for x in ids.tolist()]
            for key, row in zip(keys, r):
                user, item = frame["user_id"].iat[row], frame["item_id"].iat[row]
                value = {"user_id": user, "item_id": item, "age": users[user][0], "gender": users[user][1],
                         "year": items[item][0], "genre": items[item][1]}[field]
                assert seen.setdefault((field, key), value) == value  # id -> one raw value
    for field in ("user_id", "item_id", "age", "gender", "year"):
        values = [v for (f, _), v in seen.items() if f == field]
        assert len(values) == len(set(values))  # raw value -> one id
        assert dataset.schema[field].vocab_size == len(values) + 1
    genres = {g for (f, _), v in seen.items() if f == "genre" for g in v}
    assert dataset.schema["genre"].vocab_size == len(genres) + 1
    assert dataset.schema["genre"].max_len == 3


def test_float_feature_is_min_max_normalised_and_rating_is_not(toy):
    folder, _ = toy
    dataset = load_dataset(_config(folder, load_col={"inter": ("user_id", "item_id", "rating"),
                                                     "user": ("user_id", "score")}), cache=False)
    raw = read_raw(_config(folder))
    score = dict(zip(raw.user.frame["user_id"], raw.user.frame["score"]))
    kept_users = {u for u, *_ in raw.inter.frame.itertuples(index=False)} - {"ghost"}
    low, high = min(score[u] for u in kept_users), max(score[u] for u in kept_users)
    table = dataset.user_features["score"]
    assert table[0] == 0.0 and table.dtype == np.float32
    assert table[1:].min() == 0.0 and table[1:].max() == 1.0
    for split in dataset.splits.values():
        assert split.features["score"].min() >= 0.0 and split.features["score"].max() <= 1.0
        assert split.rating.dtype == np.int32 and set(np.unique(split.rating)) <= {1, 2, 3, 4, 5}
    expected = sorted((score[u] - low) / (high - low) for u in kept_users)
    np.testing.assert_allclose(sorted(table[1:]), expected, rtol=1e-6)


def test_duplicates_keep_last_by_timestamp_even_when_listed_first(tmp_path):
    rows = [("u1", "i1", 5, 200), ("u1", "i1", 2, 100), ("u2", "i1", 4, 1), ("u2", "i2", 4, 1), ("u1", "i2", 1, 1)]
    write_table(tmp_path / "toy.inter", INTER_HEADER, rows)
    config = _config(tmp_path, split_ratios=(0.5, 0.25, 0.25))
    dataset, split_rows = load_with_rows(config, cache=False)
    kept = sorted(np.concatenate(list(split_rows.values())).tolist())
    assert kept == [0, 2, 3, 4] and dataset.stats["duplicates_dropped"] == 1


def test_duplicates_without_timestamp_keep_the_last_line(tmp_path):
    rows = [("u1", "i1", 5), ("u1", "i1", 2), ("u2", "i1", 4), ("u2", "i2", 4), ("u1", "i2", 1)]
    write_table(tmp_path / "toy.inter", INTER_HEADER[:3], rows)
    _, split_rows = load_with_rows(_config(tmp_path, split_ratios=(0.5, 0.25, 0.25)), cache=False)
    assert sorted(np.concatenate(list(split_rows.values())).tolist()) == [1, 2, 3, 4]


def test_kcore_in_pipeline_matches_brute_force(tmp_path):
    inter = random_interactions(40, 30, 500, seed=5)
    write_table(tmp_path / "toy.inter", INTER_HEADER, inter)
    _, split_rows = load_with_rows(_config(tmp_path, k_core=10), cache=False)
    kept = sorted(np.concatenate(list(split_rows.values())).tolist())
    assert 0 < len(kept) < len(inter)
    assert kept == brute_force_kcore([(u, i) for u, i, *_ in inter], 10)


def test_split_seed_changes_assignment_not_counts(toy):
    folder, _ = toy
    a = load_with_rows(_config(folder, split_seed=1), cache=False)[1]
    b = load_with_rows(_config(folder, split_seed=1), cache=False)[1]
    c = load_with_rows(_config(folder, split_seed=2), cache=False)[1]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert len(a[name]) == len(c[name])
    assert set(a["test"].tolist()) != set(c["test"].tolist())
    assert not set(a["train"].tolist()) & set(a["test"].tolist())


def test_threshold_and_max_seq_len(toy):
    folder, _ = toy
    dataset = load_dataset(_config(folder, threshold=4, max_seq_len=2), cache=False)
    for split in dataset.splits.values():
        np.testing.assert_array_equal(split.label, (split.rating > 4).astype(np.float32))
        assert split.features["genre"].shape[1] == 2
    assert dataset.schema.threshold == 4 and dataset.schema["genre"].max_len == 2
