"""The synthetic generator: deterministic, realistic rating shares, learnable signal, and a
continuous preference aligned with every split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lipctr.data import DataError, load_dataset, synthetic_dataset
from lipctr.data.synthetic import (
    ML100K_COUNTS,
    SyntheticSizes,
    bucket_preference,
    rating_proportions,
    synthetic_config,
    synthetic_raw,
)


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    ranks = pd.Series(score).rank().to_numpy()
    positive = label == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_same_seed_same_data_other_seed_other_data():
    a, pref_a = synthetic_raw("tiny", 3, return_preference=True)
    b, pref_b = synthetic_raw("tiny", 3, return_preference=True)
    c = synthetic_raw("tiny", 4)
    for name in ("inter", "user", "item"):
        pd.testing.assert_frame_equal(getattr(a, name).frame, getattr(b, name).frame)
    np.testing.assert_array_equal(pref_a, pref_b)
    assert not a.inter.frame["rating"].equals(c.inter.frame["rating"])


def test_raw_has_the_requested_distinct_pairs_and_ml100k_shares():
    raw = synthetic_raw(SyntheticSizes(400, 300, 20_000), 0)
    frame = raw.inter.frame
    assert len(frame) == 20_000 and not frame.duplicated(["user_id", "item_id"]).any()
    shares = np.bincount(frame["rating"], minlength=6)[1:] / len(frame)
    np.testing.assert_allclose(shares, np.array(ML100K_COUNTS) / sum(ML100K_COUNTS), atol=1e-3)


def test_rating_proportions_interpolate_the_ml100k_distribution():
    counts = np.array(ML100K_COUNTS) / sum(ML100K_COUNTS)
    np.testing.assert_allclose(rating_proportions(5), counts)
    below_half = counts[0] + counts[1] + counts[2] / 2  # cdf at 0.5, linear inside rating 3's fifth
    np.testing.assert_allclose(rating_proportions(2), [below_half, 1 - below_half])
    for n in (3, 10, 20):
        shares = rating_proportions(n)
        assert len(shares) == n and np.all(shares > 0) and np.isclose(shares.sum(), 1)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 20])
def test_bucketing_matches_sorted_ranks(n):
    values = np.random.default_rng(n).normal(size=5000)
    ratings = bucket_preference(values, n)
    order = np.argsort(values)
    edges = np.round(np.cumsum(rating_proportions(n)) * 5000).astype(int)
    expected = np.empty(5000, int)
    expected[order] = np.searchsorted(edges, np.arange(5000), side="right") + 1
    assert np.mean(ratings == expected) > 0.998  # equal up to the quantile interpolation at the cuts
    assert ratings.min() == 1 and ratings.max() == n
    with pytest.raises(DataError, match="proportions must be"):
        bucket_preference(values, n, proportions=[1.0] * n)


def test_preference_is_aligned_with_every_split():
    raw, preference = synthetic_raw("tiny", 1, return_preference=True)
    cuts = np.quantile(preference, np.cumsum(rating_proportions(5))[:-1])
    dataset, per_split = synthetic_dataset("tiny", 1, return_preference=True)
    for name, split in dataset.splits.items():
        assert len(per_split[name]) == len(split)
        np.testing.assert_array_equal(split.rating, np.searchsorted(cuts, per_split[name], side="right") + 1)


def test_signal_is_learnable_from_the_training_split():
    dataset = synthetic_dataset("small", 0)
    train, test = dataset.train, dataset.test
    prior = train.label.mean()

    def smoothed_mean(field):
        size = dataset.schema[field].vocab_size
        total = np.bincount(train.features[field], train.label, size)
        count = np.bincount(train.features[field], None, size)
        return (total + 5 * prior) / (count + 5)

    score = smoothed_mean("user_id")[test.features["user_id"]] + smoothed_mean("item_id")[test.features["item_id"]]
    assert auc(score, test.label) > 0.68
    assert 0.5 < train.label.mean() < 0.6


def test_presets_mimic_the_paper_fields():
    assert synthetic_dataset("tiny").schema.names == (
        "user_id", "item_id", "age", "gender", "occupation", "release_year", "genre")
    yelp = synthetic_dataset(SyntheticSizes(300, 200, 4000, "yelp"), k_core=0).schema
    assert yelp.names == ("user_id", "item_id", "user_review_count", "item_review_count", "categories")
    amazon = synthetic_dataset(SyntheticSizes(300, 200, 4000, "amazon"), k_core=0).schema
    assert amazon.names == ("user_id", "item_id", "sales_type", "sales_rank", "categories", "price", "brand")
    assert [amazon[f].kind for f in ("sales_rank", "categories", "price")] == ["float", "token_seq", "float"]


def test_other_rating_scales_and_load_dataset_route():
    ten = synthetic_dataset("tiny", 0, num_ratings=10)
    assert ten.schema.num_ratings == 10 and ten.schema.threshold == 6
    assert set(np.unique(ten.train.rating)) == set(range(1, 11))
    via_loader = load_dataset(synthetic_config("tiny", 0), cache=False)
    np.testing.assert_array_equal(via_loader.test.rating, synthetic_dataset("tiny", 0).test.rating)


def test_impossible_sizes_and_unknown_presets():
    with pytest.raises(DataError, match="impossible"):
        synthetic_raw(SyntheticSizes(3, 3, 10))
    with pytest.raises(DataError, match="unknown synthetic preset 'huge'"):
        synthetic_raw("huge")
