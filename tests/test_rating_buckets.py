"""Quantile bucketing of continuous signals against brute-force rank computations."""

import numpy as np
import pytest

from lipctr.rating_buckets import assign_classes, bucketize, quantile_levels, threshold_class


def test_equal_mass_classes_match_ranks():
    """1..100 into 5 classes at quantile 0.6: class = ceil(rank / 20), positive = top 40."""
    values = np.random.default_rng(0).permutation(np.arange(1, 101)).astype(float)
    buckets = bucketize(values, 5, 0.6)
    np.testing.assert_array_equal(buckets.classes, np.ceil(values / 20).astype(int))
    assert buckets.threshold == 3
    np.testing.assert_array_equal(buckets.labels, (values > 60).astype(np.float32))


@pytest.mark.parametrize("num_classes", [2, 3, 5, 10, 20])
def test_class_masses_follow_quantile_levels(num_classes):
    values = np.random.default_rng(0).lognormal(size=10_000)  # a skewed, dwell-time-like signal
    buckets = bucketize(values, num_classes, 0.6)
    counts = np.bincount(buckets.classes, minlength=num_classes + 1)[1:]
    levels = np.concatenate([[0.0], quantile_levels(num_classes, 0.6), [1.0]])
    np.testing.assert_allclose(counts, np.diff(levels) * values.size, atol=2)
    # brute force: the linear-interpolation quantile at level L lies strictly between the values
    # of ranks floor(L (n - 1)) + 1 and the next (no level here makes L (n - 1) an integer)
    ranks = np.argsort(np.argsort(values)) + 1
    last_rank = np.floor(levels[1:-1] * (values.size - 1)) + 1
    np.testing.assert_array_equal(buckets.classes, np.searchsorted(last_rank, ranks, side="left") + 1)


def test_binary_threshold_is_the_same_quantile_for_every_n():
    values = np.random.default_rng(0).normal(size=5_001)
    cut = np.quantile(values, 0.6)
    for n in (2, 3, 5, 10, 20):
        buckets = bucketize(values, n, 0.6)
        np.testing.assert_array_equal(buckets.labels, (values > cut).astype(np.float32))
        assert abs(buckets.threshold / n - 0.6) <= 0.5 / n  # the class count nearest the quantile
    # a quantile off the class grid: N = 3 at 0.6 gives masses 0.3, 0.3, 0.4
    np.testing.assert_allclose(np.diff(np.concatenate([[0], quantile_levels(3, 0.6), [1]])), [0.3, 0.3, 0.4])


def test_explicit_threshold_keeps_the_binary_cut():
    """ML-100K's negative share 0.4462 with the paper's t_sh = 3 of 5: 3 classes below the cut."""
    values = np.random.default_rng(4).normal(size=4_000)
    buckets = bucketize(values, 5, 0.4462, threshold=3)
    assert buckets.threshold == 3
    np.testing.assert_array_equal(buckets.labels, (values > np.quantile(values, 0.4462)).astype(np.float32))
    counts = np.bincount(buckets.classes, minlength=6)[1:]
    np.testing.assert_allclose(counts / values.size, [0.4462 / 3] * 3 + [0.5538 / 2] * 2, atol=1e-3)
    with pytest.raises(ValueError, match=r"threshold must be an integer in 1..4, got 5"):
        bucketize(values, 5, 0.5, threshold=5)


def test_threshold_class_stays_inside():
    assert threshold_class(2, 0.05) == 1
    assert threshold_class(2, 0.95) == 1
    assert threshold_class(10, 0.95) == 9


def test_ties_share_a_class_and_assign_reuses_edges():
    counts = np.random.default_rng(0).poisson(20.0, size=3_000).astype(float)  # a play-count-like signal, many ties
    buckets = bucketize(counts, 5, 0.6, name="play_count")
    for value in np.unique(counts):
        assert np.unique(buckets.classes[counts == value]).size == 1
    np.testing.assert_array_equal(buckets.assign(counts), buckets.classes)
    new = np.array([counts.min() - 1, counts.max() + 1, buckets.edges[0], buckets.edges[0] + 1e-9])
    np.testing.assert_array_equal(assign_classes(new, buckets.edges), [1, 5, 1, 2])


def test_errors_name_the_problem():
    values = np.arange(10.0)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        bucketize(values, 1)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        bucketize(values, 2.5)
    with pytest.raises(ValueError, match=r"threshold_quantile must lie in \(0, 1\)"):
        bucketize(values, 3, 1.0)
    with pytest.raises(ValueError, match="dwell_time has 1 NaN or infinite value.*index 4"):
        bucketize(np.where(values == 4, np.nan, values), 3, name="dwell_time")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        bucketize(np.where(values == 2, np.inf, values), 3)
    with pytest.raises(ValueError, match="1-D"):
        bucketize(values.reshape(2, 5), 3)
    with pytest.raises(ValueError, match="3 distinct value.*5 classes"):
        bucketize(np.array([1.0, 2, 3, 3, 1]), 5)
    with pytest.raises(ValueError, match=r"clicks: class\(es\) \[2, 3, 4\] of 5 are empty"):
        bucketize(np.concatenate([np.zeros(90), np.arange(1, 11)]), 5, name="clicks")
