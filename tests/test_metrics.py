"""lipctr.metrics and lipctr.ranking against brute-force numpy references and hand-computed cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipctr.data.schema import Dataset, Field, Schema, Split
from lipctr.metrics import auc, log_loss, rank_range, ranking_metrics
from lipctr.ranking import (
    candidate_features,
    flatten_candidates,
    ranking_candidates,
    sample_negatives,
    unflatten_scores,
)

# ---------------------------------------------------------------- independent references


def pairwise_auc(scores, labels, weights=None):
    """O(n^2) definition: weighted fraction of (pos, neg) pairs ordered right, ties half."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels)
    w = np.ones_like(s) if weights is None else np.asarray(weights, np.float64)
    sp, wp = s[y == 1], w[y == 1]
    sn, wn = s[y == 0], w[y == 0]
    wins = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
    return float((wp[:, None] * wn[None, :] * wins).sum() / (wp.sum() * wn.sum()))


def midranks(values):
    """1-based ranks with tied values given the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def mann_whitney_auc(scores, labels):
    """Closed form: (sum of positive midranks - P(P+1)/2) / (P N)."""
    r = midranks(np.asarray(scores, np.float64))
    pos = np.asarray(labels) == 1
    p, n = pos.sum(), (~pos).sum()
    return float((r[pos].sum() - p * (p + 1) / 2) / (p * n))


def sklearn_style_log_loss(probs, labels, weights=None, eps=None):
    """sklearn >= 1.5: stack (1 - p, p), clip each to [eps, 1 - eps], mean -log of the true one."""
    p = np.asarray(probs)
    eps = np.finfo(p.dtype).eps if eps is None else eps
    pair = np.clip(np.stack([1 - p, p], axis=1), eps, 1 - eps)
    y = np.asarray(labels).astype(int)
    loss = -np.log(pair[np.arange(len(p)), y].astype(np.float64))
    w = np.ones(len(p)) if weights is None else np.asarray(weights, np.float64)
    return float((w * loss).sum() / w.sum())


def brute_force_rank(scores):
    """Pessimistic 1-based rank of column 0 per row: sort by descending score, column 0 last
    among its ties, and find where it lands."""
    ranks = []
    for row in np.asarray(scores):
        is_target = np.zeros(len(row), int)
        is_target[0] = 1
        order = np.lexsort((is_target, -row))
        ranks.append(int(np.flatnonzero(order == 0)[0]) + 1)
    return np.array(ranks)


def brute_force_ranking(scores, relevant, k):
    rank = brute_force_rank(scores)
    ndcg = np.where(rank <= k, 1.0 / np.log2(rank + 1.0), 0.0)
    rel = np.asarray(relevant)
    return ndcg[rel].mean(), (rank <= k)[rel].mean()


def random_scores(rng, n, ties=None):
    labels = (rng.random(n) < 0.4).astype(np.float32)
    scores = rng.normal(size=n) + labels
    if ties is not None:
        scores = np.round(scores * ties) / ties
    return scores.astype(np.float32), labels


# ---------------------------------------------------------------- AUC


@pytest.mark.parametrize("ties", [None, 2.0, 0.3])
def test_auc_equals_pairwise_and_mann_whitney(ties):
    rng = np.random.default_rng(1)
    for n in (2, 7, 300):
        scores, labels = random_scores(rng, n, ties)
        labels[:2] = (0, 1)
        got = float(auc(scores, labels))
        assert got == pytest.approx(pairwise_auc(scores, labels), abs=1e-6)
        assert got == pytest.approx(mann_whitney_auc(scores, labels), abs=1e-6)
    if ties == 0.3:
        assert len(np.unique(scores)) <= 5  # the heavily tied case really is tied


def test_auc_all_equal_scores_is_half_and_perfect_order_is_one():
    labels = np.array([0, 1, 1, 0, 1], np.float32)
    assert float(auc(np.full(5, 0.3, np.float32), labels)) == 0.5
    assert float(auc(labels * 2.0, labels)) == 1.0
    assert float(auc(-labels, labels)) == 0.0


def test_auc_weights_mask_padding_and_weight_pairs():
    rng = np.random.default_rng(2)
    scores, labels = random_scores(rng, 200, ties=1.0)
    mask = (rng.random(200) < 0.6).astype(np.float32)
    padded_scores = np.where(mask > 0, scores, 1e9).astype(np.float32)  # garbage in padding
    got = float(auc(padded_scores, labels, mask))
    keep = mask > 0
    assert got == pytest.approx(pairwise_auc(scores[keep], labels[keep]), abs=1e-6)
    weights = rng.random(200).astype(np.float32) * 3
    assert float(auc(scores, labels, weights)) == pytest.approx(
        pairwise_auc(scores, labels, weights), abs=1e-6
    )


def test_auc_undefined_cases_are_nan():
    assert np.isnan(auc(np.arange(4.0), np.ones(4)))
    assert np.isnan(auc(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1])))
    masked_nan = auc(np.array([0.1, np.nan, 0.3, 0.2]), np.array([0, 1, 1, 1]), np.array([1, 0, 1, 1]))
    assert float(masked_nan) == 1.0


def test_auc_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    scores, labels = random_scores(rng, 5000, ties=4.0)
    weights = rng.random(5000).astype(np.float32)
    assert float(auc(scores, labels)) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-6)
    assert float(auc(scores, labels, weights)) == pytest.approx(
        metrics.roc_auc_score(labels, scores, sample_weight=weights), abs=1e-6
    )


def test_auc_and_log_loss_jit_and_vmap_over_seeds():
    rng = np.random.default_rng(4)
    seeds, n = 5, 257
    labels = (rng.random(n) < 0.5).astype(np.float32)
    scores = np.round(rng.normal(size=(seeds, n)) + labels, 1).astype(np.float32)
    mask = (np.arange(n) < 250).astype(np.float32)
    batched = jax.jit(jax.vmap(auc, in_axes=(0, None, None)))(scores, labels, mask)
    expected = [pairwise_auc(s[:250], labels[:250]) for s in scores]
    np.testing.assert_allclose(np.asarray(batched), expected, atol=1e-6)
    probs = jax.nn.sigmoid(scores)
    losses = jax.jit(jax.vmap(log_loss, in_axes=(0, None, None)))(probs, labels, mask)
    expected = [sklearn_style_log_loss(np.asarray(p)[:250], labels[:250]) for p in probs]
    np.testing.assert_allclose(np.asarray(losses), expected, rtol=1e-6)


# ---------------------------------------------------------------- LogLoss


def test_log_loss_extreme_probabilities_clipped_like_sklearn():
    probs = np.array([0.0, 1.0, 1e-12, 1 - 1e-9, 0.5, 0.3, 1.0, 0.0], np.float32)
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0], np.float32)
    got = float(log_loss(probs, labels))
    assert np.isfinite(got)
    assert got == pytest.approx(sklearn_style_log_loss(probs, labels), rel=1e-6)
    # a certain and wrong prediction costs exactly -log(eps) in float32
    assert float(log_loss(np.float32([0.0]), np.float32([1.0]))) == pytest.approx(
        -np.log(np.finfo(np.float32).eps), rel=1e-6
    )
    explicit = float(log_loss(probs, labels, eps=1e-4))
    assert explicit == pytest.approx(sklearn_style_log_loss(probs, labels, eps=1e-4), rel=1e-6)


def test_log_loss_weighted_matches_numpy_and_sklearn():
    rng = np.random.default_rng(5)
    probs = rng.random(1000).astype(np.float32)
    labels = (rng.random(1000) < probs).astype(np.float32)
    weights = (rng.random(1000) < 0.7).astype(np.float32)
    got = float(log_loss(probs, labels, weights))
    assert got == pytest.approx(sklearn_style_log_loss(probs, labels, weights), rel=1e-6)
    metrics = pytest.importorskip("sklearn.metrics")
    assert got == pytest.approx(metrics.log_loss(labels, probs, sample_weight=weights), rel=1e-5)
    edge = np.array([0.0, 1.0, 0.2, 1.0], np.float32)
    assert float(log_loss(edge, np.float32([1, 0, 0, 1]))) == pytest.approx(
        metrics.log_loss(np.float32([1, 0, 0, 1]), edge), rel=1e-5
    )


# ---------------------------------------------------------------- NDCG / Recall


def scores_with_ranks(ranks, num_candidates=30):
    """Rows whose column 0 (score 0.5) has exactly rank - 1 negatives above it and none tied."""
    rows = []
    for rank in ranks:
        negatives = np.full(num_candidates - 1, 0.1)
        negatives[: rank - 1] = 0.9
        rows.append(np.concatenate([[0.5], negatives]))
    return np.array(rows, np.float32)


def test_ranking_metrics_hand_computed():
    scores = scores_with_ranks([1, 3, 15, 25, 1])
    relevant = np.array([True, True, True, True, False])
    got = {k: float(v) for k, v in ranking_metrics(scores, relevant).items()}
    # ndcg@10 = (1/log2 2 + 1/log2 4) / 4; ndcg@20 adds 1/log2 16 = 0.25
    assert got["ndcg@10"] == pytest.approx(0.375, abs=1e-7)
    assert got["ndcg@20"] == pytest.approx(0.4375, abs=1e-7)
    assert got["recall@10"] == pytest.approx(0.5, abs=1e-7)
    assert got["recall@20"] == pytest.approx(0.75, abs=1e-7)


def test_ranking_tie_rules():
    # column 0 ties with 2 negatives, 1 negative above: ranks 2..4
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]], np.float32)
    rel = np.array([True])
    np.testing.assert_array_equal(rank_range(jnp.asarray(scores), "pessimistic"), [[4], [4]])
    np.testing.assert_array_equal(rank_range(jnp.asarray(scores), "optimistic"), [[2], [2]])
    pess = ranking_metrics(scores, rel, ks=(3,))
    opt = ranking_metrics(scores, rel, ks=(3,), ties="optimistic")
    mean = ranking_metrics(scores, rel, ks=(3,), ties="mean")
    assert float(pess["recall@3"]) == 0.0 and float(pess["ndcg@3"]) == 0.0
    assert float(opt["ndcg@3"]) == pytest.approx(1 / np.log2(3), abs=1e-7)
    assert float(mean["recall@3"]) == pytest.approx(2 / 3, abs=1e-7)
    assert float(mean["ndcg@3"]) == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 3, abs=1e-7)
    mean10 = ranking_metrics(scores, rel, ks=(10,), ties="mean")
    expected = np.mean([1 / np.log2(r + 1) for r in (2, 3, 4)])
    assert float(mean10["ndcg@10"]) == pytest.approx(expected, abs=1e-7)
    flat = ranking_metrics(np.zeros((2, 101), np.float32), np.array([True, True]), ks=(10,))
    assert float(flat["recall@10"]) == 0.0  # a constant scorer ranks its item last


def test_ranking_metrics_random_vs_brute_force_jit_vmap():
    rng = np.random.default_rng(6)
    seeds, m, c = 3, 64, 101
    scores = np.round(rng.normal(size=(seeds, m, c)), 1).astype(np.float32)
    relevant = rng.random(m) < 0.7
    fn = jax.jit(jax.vmap(lambda s: ranking_metrics(s, relevant, ks=(10, 20))))
    got = fn(scores)
    for seed in range(seeds):
        for k in (10, 20):
            ndcg, recall = brute_force_ranking(scores[seed], relevant, k)
            assert float(got[f"ndcg@{k}"][seed]) == pytest.approx(ndcg, abs=1e-6)
            assert float(got[f"recall@{k}"][seed]) == pytest.approx(recall, abs=1e-6)


def test_ranking_metrics_undefined_cases_are_nan():
    scores = scores_with_ranks([1, 2])
    assert np.isnan(ranking_metrics(scores, np.array([False, False]))["ndcg@10"])
    scores[1, 3] = np.nan
    assert np.isnan(ranking_metrics(scores, np.array([True, True]))["recall@10"])
    assert float(ranking_metrics(scores, np.array([True, False]))["recall@10"]) == 1.0
    with pytest.raises(ValueError, match="ties"):
        ranking_metrics(scores, np.array([True, True]), ties="random")


# ---------------------------------------------------------------- candidates


NUM_USERS, NUM_ITEMS = 6, 30  # ids 1..5 and 1..29; 0 is padding


def tiny_dataset(seed=0):
    """5 users, 29 items; user 5 rated 25 items. Fields of every source and kind."""
    rng = np.random.default_rng(seed)
    schema = Schema(
        fields=(
            Field("user_id", "token", "user", NUM_USERS),
            Field("item_id", "token", "item", NUM_ITEMS),
            Field("age", "token", "user", 4),
            Field("genre", "token_seq", "item", 8, max_len=3),
            Field("price", "float", "item"),
            Field("hour", "token", "inter", 25),
        )
    )
    per_user = {1: 8, 2: 12, 3: 5, 4: 15, 5: 25}
    pairs = [(u, i) for u, k in per_user.items() for i in rng.choice(np.arange(1, NUM_ITEMS), k, False)]
    pairs = np.array(pairs)[rng.permutation(len(pairs))]
    user_features = {"user_id": np.arange(NUM_USERS, dtype=np.int32), "age": rng.integers(0, 4,
                                                                                          NUM_USERS).astype(np.int32)}
    item_features = {
        "item_id": np.arange(NUM_ITEMS, dtype=np.int32),
        "genre": rng.integers(0, 8, (NUM_ITEMS, 3)).astype(np.int32),
        "price": rng.random(NUM_ITEMS).astype(np.float32),
    }

    def split(part):
        users, items = part[:, 0].astype(np.int32), part[:, 1].astype(np.int32)
        rating = rng.integers(1, 6, len(part)).astype(np.int32)
        features = {
            "user_id": users,
            "item_id": items,
            "age": user_features["age"][users],
            "genre": item_features["genre"][items],
            "price": item_features["price"][items],
            "hour": rng.integers(0, 25, len(part)).astype(np.int32),
        }
        return Split(features, rating, (rating > 3).astype(np.float32))

    n = len(pairs)
    return Dataset(
        "tiny", schema, split(pairs[: n * 6 // 10]), split(pairs[n * 6 // 10 : n * 8 // 10]),
        split(pairs[n * 8 // 10 :]), user_features, item_features,
    )


def all_pairs(dataset):
    return {
        (int(u), int(i))
        for s in dataset.splits.values()
        for u, i in zip(s.features["user_id"], s.features["item_id"])
    }


def test_candidates_shapes_dtypes_and_never_interacted():
    ds = tiny_dataset()
    cand = ranking_candidates(ds, num_negatives=4, seed=0)
    m = len(ds.test)
    assert cand.items.shape == (m, 5) and cand.items.dtype == np.int32
    np.testing.assert_array_equal(cand.items[:, 0], ds.test.features["item_id"])
    seen = all_pairs(ds)
    users = ds.test.features["user_id"]
    for user, row in zip(users, cand.items):
        negatives = row[1:]
        assert len(set(negatives.tolist())) == 4  # distinct
        assert all((int(user), int(i)) not in seen and 1 <= i < NUM_ITEMS for i in negatives)
    feats = cand.features
    assert set(feats) == set(ds.schema.names)
    assert feats["genre"].shape == (m, 5, 3) and feats["genre"].dtype == np.int32
    assert feats["price"].dtype == np.float32 and feats["hour"].shape == (m, 5)
    np.testing.assert_array_equal(feats["genre"][:, 0], ds.test.features["genre"])
    np.testing.assert_array_equal(feats["genre"], ds.item_features["genre"][cand.items])
    for name in ("user_id", "age", "hour"):  # row fields repeated over the candidates
        np.testing.assert_array_equal(feats[name], np.repeat(ds.test.features[name][:, None], 5, 1))


def test_candidates_deterministic_by_seed_and_relevance_modes():
    ds = tiny_dataset()
    a = ranking_candidates(ds, num_negatives=4, seed=7)
    b = ranking_candidates(ds, num_negatives=4, seed=7)
    c = ranking_candidates(ds, num_negatives=4, seed=8)
    np.testing.assert_array_equal(a.items, b.items)
    assert not np.array_equal(a.items, c.items)
    np.testing.assert_array_equal(a.relevant, ds.test.label == 1)
    assert 0 < a.relevant.sum() < len(ds.test)
    anything = ranking_candidates(ds, num_negatives=4, seed=7, relevance="any")
    assert anything.relevant.all() and anything.relevant.dtype == bool
    np.testing.assert_array_equal(anything.items, a.items)
    valid = ranking_candidates(ds, split="valid", num_negatives=4)
    np.testing.assert_array_equal(valid.items[:, 0], ds.valid.features["item_id"])


def test_sampler_uniform_distinct_and_exact_for_nearly_full_users():
    keys = np.array([1 * 30 + i for i in range(1, 11)] + [2 * 30 + i for i in range(1, 26)])
    rng = np.random.default_rng(0)
    users = np.repeat(np.array([1, 2]), [3000, 50])
    items = sample_negatives(users, keys, 30, 4, rng)
    light, heavy = items[:3000], items[3000:]
    counts = np.bincount(light.ravel(), minlength=30)
    assert counts[:11].sum() == 0  # padding and the 10 seen items never drawn
    expected = 3000 * 4 / 19
    assert np.all(np.abs(counts[11:] - expected) < 0.1 * expected)
    assert all(len(set(r)) == 4 for r in light[:200])
    assert (np.diff(light, axis=1) > 0).all(axis=1).mean() < 0.2  # columns come in random order
    # user 2 saw 25 of 29 items: each row must be exactly the 4 others
    np.testing.assert_array_equal(np.sort(heavy, axis=1), np.tile([26, 27, 28, 29], (50, 1)))


def test_candidates_clear_errors():
    ds = tiny_dataset()
    assert 5 in ds.test.features["user_id"]
    with pytest.raises(ValueError, match=r"user id 5 interacted with 25 of the 29 items.*num_negatives=5"):
        ranking_candidates(ds, num_negatives=5)
    with pytest.raises(ValueError, match="relevance"):
        ranking_candidates(ds, relevance="rated")
    with pytest.raises(ValueError, match="split"):
        ranking_candidates(ds, split="dev")
    ds.item_features["price"] = ds.item_features["price"][:-1]
    with pytest.raises(ValueError, match=r"item_features\['price'\] has 29 rows, expected 30"):
        ranking_candidates(ds, num_negatives=2)
    del ds.item_features["genre"]
    with pytest.raises(ValueError, match="'tiny'.*'genre'.*item_features"):
        ranking_candidates(ds, num_negatives=2)


def test_flatten_chunks_and_jnp_gather_score_like_the_whole():
    ds = tiny_dataset()
    cand = ranking_candidates(ds, num_negatives=4, seed=1).padded(4)
    assert cand.num_rows % 4 == 0 and not cand.relevant[len(ds.test) :].any()
    weights = {"item_id": 0.3, "user_id": -0.2, "genre": 0.05, "price": 1.5, "hour": 0.01, "age": 0.1}

    def score(flat):  # a toy model on the flattened inputs [b * C, ...]
        return sum(weights[k] * (v.sum(-1) if v.ndim == 2 else v) for k, v in flat.items())

    whole = unflatten_scores(score(flatten_candidates(cand.features)), cand.num_candidates)

    @jax.jit
    def chunk_scores(items, rows):
        return unflatten_scores(score(flatten_candidates(candidate_features(rows, tables, items))), 5)

    tables = jax.tree.map(jnp.asarray, cand.item_features)
    parts = [
        chunk_scores(jnp.asarray(sub.items), jax.tree.map(jnp.asarray, sub.row_features))
        for sub in (cand.select(slice(i, i + 4)) for i in range(0, cand.num_rows, 4))
    ]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6)
    assert whole.shape == (cand.num_rows, 5)
    full = ranking_metrics(whole, cand.relevant)
    unpadded = ranking_metrics(whole[: len(ds.test)], cand.relevant[: len(ds.test)])
    for key in full:
        assert float(full[key]) == pytest.approx(float(unpadded[key]))
