"""Evaluation metrics: pure jnp functions, jitted, and vmap-able over a leading seed axis.

- `auc`: exact ROC AUC with ties counted half, i.e. sklearn's `roc_auc_score` (with
  `sample_weight`), in O(n log n): one sort, then cumulative weights per tie group.
- `log_loss`: sklearn's binary `log_loss` (sklearn >= 1.5, checked against 1.9): the prediction
  p becomes the pair (1 - p, p), each entry is clipped to [eps, 1 - eps] with
  eps = finfo(dtype).eps (1.19e-7 for float32), and the loss is the weighted mean of -log of the
  entry of the true class. (RecBole's LogLoss instead clips p to [1e-15, 1 - 1e-15] in float64;
  pass `eps=1e-15` with float64 inputs to mimic it.)
- `ranking_metrics`: NDCG@k and Recall@k of one relevant item (column 0) among sampled
  negatives (columns 1..), averaged over the relevant rows.

Where sklearn raises (a single class, NaN scores) these functions cannot raise under jit and
return NaN instead; all inputs are assumed finite-or-NaN, labels in {0, 1}, weights >= 0.
The argument order is (scores, labels), the reverse of sklearn's (y_true, y_score): concrete
labels outside {0, 1} (e.g. swapped arguments) raise ValueError; traced ones are not checked.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

TieRule = Literal["pessimistic", "optimistic", "mean"]


def _weights(labels: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.ones(labels.shape, jnp.float32)
    return jnp.asarray(weights, jnp.float32)


def check_labels(labels, where: str) -> None:
    """ValueError unless concrete labels are all 0 or 1 (tracers pass unchecked)."""
    if isinstance(labels, jax.core.Tracer):
        return
    values = np.asarray(labels)
    bad = values[~np.isin(values, (0, 1))]
    if bad.size:
        raise ValueError(f"{where}: labels must be 0 or 1, got {bad.size} other values, e.g. {bad.flat[0].item()!r}; "
                         f"the order is {where}(scores, labels), the reverse of sklearn's (y_true, y_score)")


def auc(scores: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """ROC AUC of scores [n] for labels [n] in {0, 1} (checked when concrete); see `_auc`."""
    check_labels(labels, "auc")
    return _auc(scores, labels, weights)


def log_loss(probs: jax.Array, labels: jax.Array, weights: jax.Array | None = None,
             eps: float | None = None) -> jax.Array:
    """Binary log loss of probs [n] for labels [n] in {0, 1} (checked when concrete); see `_log_loss`."""
    check_labels(labels, "log_loss")
    return _log_loss(probs, labels, weights, eps)


@jax.jit
def _auc(scores: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """ROC AUC of scores [n] for labels [n] in {0, 1}, example weights [n] (0 masks padding).

    AUC = sum over (positive i, negative j) of w_i w_j ([s_i > s_j] + 0.5 [s_i == s_j]),
    divided by W_pos W_neg. NaN when a class has zero weight or a weighted score is NaN.
    With 0/1 weights the per-group counts are exact integers in float32 (n < 2**24).
    """
    scores = jnp.asarray(scores)
    labels = jnp.asarray(labels, jnp.float32)
    w = _weights(labels, weights)
    n = scores.shape[0]
    pos, neg = w * labels, w * (1.0 - labels)
    s, pos, neg = jax.lax.sort((scores, pos, neg), num_keys=1)
    index = jnp.arange(n)
    first = jnp.concatenate([jnp.ones((1,), bool), s[1:] != s[:-1]])
    last = jnp.concatenate([s[1:] != s[:-1], jnp.ones((1,), bool)])
    start = jax.lax.cummax(jnp.where(first, index, 0))  # first index of each element's tie group
    end = jax.lax.cummin(jnp.where(last, index, n - 1), reverse=True)  # its last index
    neg_before = jnp.concatenate([jnp.zeros((1,), neg.dtype), jnp.cumsum(neg)])  # [n + 1]
    below = neg_before[start]  # negative weight strictly below the element's score
    tied = neg_before[end + 1] - below  # negative weight at the same score
    total_pos, total_neg = pos.sum(), neg.sum()
    pairs = (pos * (below + 0.5 * tied) / total_neg).sum() / total_pos
    has_nan = jnp.any(jnp.isnan(scores) & (w > 0))
    return jnp.where(has_nan, jnp.nan, pairs)


@jax.jit
def _log_loss(
    probs: jax.Array, labels: jax.Array, weights: jax.Array | None = None, eps: float | None = None
) -> jax.Array:
    """Weighted mean binary log loss of probabilities probs [n] for labels [n] in {0, 1}.

    Clipped as sklearn does: p_true = label ? p : 1 - p, clipped to [eps, 1 - eps] with
    eps = finfo(probs.dtype).eps by default.
    """
    probs = jnp.asarray(probs)
    if not jnp.issubdtype(probs.dtype, jnp.floating):
        probs = probs.astype(jnp.float32)
    labels = jnp.asarray(labels, probs.dtype)
    w = _weights(labels, weights).astype(probs.dtype)
    eps = float(jnp.finfo(probs.dtype).eps) if eps is None else eps
    p_pos = jnp.clip(probs, eps, 1.0 - eps)
    p_neg = jnp.clip(1.0 - probs, eps, 1.0 - eps)
    loss = -(labels * jnp.log(p_pos) + (1.0 - labels) * jnp.log(p_neg))
    return (w * loss).sum() / w.sum()


def _discount_prefix(num_candidates: int) -> np.ndarray:
    """D[j] = sum_{r=1..j} 1 / log2(r + 1) for j = 0..num_candidates, float32 [C + 1]."""
    ranks = np.arange(1, num_candidates + 1, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(ranks + 1.0))]).astype(np.float32)


def rank_range(scores: jax.Array, ties: TieRule = "pessimistic") -> tuple[jax.Array, jax.Array]:
    """1-based rank range [lo, hi] of column 0 within each row of scores [m, C], int32 [m] each.

    Negatives tied with the test item put it below them ("pessimistic": lo = hi = worst rank),
    above them ("optimistic": lo = hi = best rank), or anywhere in between with equal chance
    ("mean": lo = best, hi = worst; metrics are then expectations over a random tie-break).
    """
    if ties not in ("pessimistic", "optimistic", "mean"):
        raise ValueError(f"ties must be 'pessimistic', 'optimistic' or 'mean', got {ties!r}")
    target, negatives = scores[:, :1], scores[:, 1:]
    above = (negatives > target).sum(-1, dtype=jnp.int32)
    tied = (negatives == target).sum(-1, dtype=jnp.int32)
    best, worst = 1 + above, 1 + above + tied
    if ties == "pessimistic":
        return worst, worst
    if ties == "optimistic":
        return best, best
    return best, worst


def ranking_metrics(
    scores: jax.Array,
    relevant: jax.Array,
    ks: Sequence[int] = (10, 20),
    ties: TieRule = "pessimistic",
) -> dict[str, jax.Array]:
    """{"ndcg@k", "recall@k"} for k in ks: means over the relevant rows of scores [m, C].

    Column 0 holds the relevant (test) item, columns 1.. the sampled negatives; each row has a
    single relevant item, so IDCG = 1, NDCG@k = 1 / log2(rank + 1) and Recall@k = [rank <= k].
    relevant [m] bool masks the rows that count (padding and non-relevant rows are False).
    NaN when no row is relevant or a relevant row has a NaN score.
    """
    return _ranking_metrics(scores, relevant, tuple(ks), ties)


@functools.partial(jax.jit, static_argnames=("ks", "ties"))
def _ranking_metrics(scores, relevant, ks: tuple[int, ...], ties: TieRule) -> dict[str, jax.Array]:
    scores = jnp.asarray(scores)
    relevant = jnp.asarray(relevant, bool)
    discount = jnp.asarray(_discount_prefix(scores.shape[1]))
    lo, hi = rank_range(scores, ties)
    width = (hi - lo + 1).astype(jnp.float32)
    weight = relevant.astype(jnp.float32)
    has_nan = jnp.any(jnp.isnan(scores).any(-1) & relevant)
    out = {}
    for k in ks:
        top, below = jnp.minimum(hi, k), jnp.minimum(lo - 1, k)
        ndcg = (discount[top] - discount[below]) / width
        recall = (top - below).astype(jnp.float32) / width
        for name, value in (("ndcg", ndcg), ("recall", recall)):
            mean = (weight * value).sum() / weight.sum()
            out[f"{name}@{k}"] = jnp.where(has_nan, jnp.nan, mean)
    return out
