"""Scaled supervision for any model, in the style of optax.losses: pure per-example functions.

A CTR model's last layer is widened from 1 logit to N (one per rating 1..N) and trained with

    loss_i = lambda_r * CE(logits_i, rating_i - 1) + (1 - lambda_r) * BCE(p_hat_i, label_i),
    p_hat_i = sum_{k > threshold} softmax(logits_i)_k     (label_i = rating_i > threshold)

(`scaled_supervision_loss`), or a click head is kept and a separate rating head is added beside it
(`aux_rating_loss`). Both are built on the per-example pieces of lipctr.losses, the pieces the
engine's `multihead_loss` averages (`multihead_loss` = the weighted batch mean of each term, then
the lambda_r mix; equal to the mean of these per-example values up to float32 rounding).

Typical use in a training step::

    logits = model.apply(variables, batch)                      # [B, 5], e.g. from RatingHead
    loss = scaled_supervision_loss(logits, batch["rating"], lambda_r=0.7).mean()
    p_click = click_probability(logits)                         # [B], for AUC / serving
"""

from __future__ import annotations

import numbers

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipctr.losses import bce_per_example, check_aggregation, click_probability, click_score, rating_ce_per_example

__all__ = ["RatingHead", "aux_rating_loss", "click_probability", "click_score", "scaled_supervision_loss"]


def _check(logits, ratings, labels, lambda_r, threshold, width: int, name: str):
    """labels float [B] (ratings > threshold when None), after checking shapes and ranges."""
    if jnp.ndim(logits) != 2 or jnp.ndim(ratings) != 1 or jnp.shape(ratings)[0] != jnp.shape(logits)[0]:
        raise ValueError(f"{name}: expected logits [B, K] and ratings [B], got shapes "
                         f"{jnp.shape(logits)} and {jnp.shape(ratings)}")
    if isinstance(lambda_r, numbers.Real) and not 0.0 <= lambda_r <= 1.0:
        raise ValueError(f"{name}: lambda_r must lie in [0, 1], got {lambda_r!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Integral) or not 1 <= threshold < width:
        raise ValueError(f"{name}: threshold must be an integer in 1..{width - 1} for {width} rating logits, "
                         f"got {threshold!r}")
    if labels is None:
        return (ratings > threshold).astype(logits.dtype)
    if jnp.shape(labels) != jnp.shape(ratings):
        raise ValueError(f"{name}: labels must have the shape of ratings {jnp.shape(ratings)}, got {jnp.shape(labels)}")
    return jnp.asarray(labels, logits.dtype)


def scaled_supervision_loss(logits: jax.Array, ratings: jax.Array, labels: jax.Array | None = None, *,
                            lambda_r: float, threshold: int = 3, aggregation: str = "prob") -> jax.Array:
    """Per-example scaled-supervision loss of an N-wide rating head (eq. 13 of the paper).

    Args:
      logits: float [B, N], one logit per rating 1..N (N >= 2).
      ratings: int [B], each in 1..N.
      labels: float [B] in {0, 1}, or None for `ratings > threshold`.
      lambda_r: weight of the rating cross-entropy, in [0, 1] (0: BCE of p_hat alone).
      threshold: ratings above it are clicks (1..N-1); p_hat sums the classes above it.
      aggregation: "prob" (p_hat = sum of the softmax above threshold, eq. 11) or "logit_sum"
        (the authors' code: sigmoid of the positive minus the negative logits' sum).

    Returns:
      float [B]: lambda_r * CE(logits, ratings - 1) + (1 - lambda_r) * BCE(p_hat, labels).
      Average it (`.mean()`) for the batch loss; add any weight penalty yourself.
    """
    check_aggregation(aggregation, "scaled_supervision_loss: aggregation")
    labels = _check(logits, ratings, labels, lambda_r, threshold, logits.shape[-1], "scaled_supervision_loss")
    ce = rating_ce_per_example(logits, ratings)
    bce = bce_per_example(logits, labels, threshold, aggregation)
    return lambda_r * ce + (1.0 - lambda_r) * bce


def aux_rating_loss(logits: jax.Array, ratings: jax.Array, labels: jax.Array | None = None, *,
                    lambda_r: float, threshold: int = 3) -> jax.Array:
    """Per-example loss of a click head plus a separate rating head (`RatingHead(aux=True)`).

    The click is scored by column 0 alone (sigmoid, BCE), as in an unchanged binary model; columns
    1..N are a rating head trained by cross-entropy only. At lambda_r = 0 this is plain BCE.

    Args:
      logits: float [B, 1 + N]: the click logit, then N rating logits.
      ratings: int [B], each in 1..N.
      labels: float [B] in {0, 1}, or None for `ratings > threshold`.
      lambda_r: weight of the rating cross-entropy, in [0, 1].
      threshold: ratings above it are clicks (only used for the default labels).

    Returns:
      float [B]: lambda_r * CE(logits[:, 1:], ratings - 1) + (1 - lambda_r) * BCE(sigmoid(logits[:, 0]), labels).
      Score clicks with `click_probability(logits[:, :1])`.
    """
    labels = _check(logits, ratings, labels, lambda_r, threshold, logits.shape[-1] - 1, "aux_rating_loss")
    ce = rating_ce_per_example(logits[:, 1:], ratings)
    bce = bce_per_example(logits[:, :1], labels)
    return lambda_r * ce + (1.0 - lambda_r) * bce


class RatingHead(nn.Module):
    """A final Dense layer with one logit per rating: [B, H] -> [B, N] (or [B, 1 + N] with aux).

    The side-branch rule: every branch your model adds to the final logits (a wide / linear part, a
    first-order term, a bias) must be N wide too, one value per rating. A scalar added to all N
    logits cancels in the softmax of p_hat, so that branch would get no gradient from the loss.

    Attributes:
      num_ratings: N, the number of rating classes (5 for MovieLens stars).
      aux: False: N logits for `scaled_supervision_loss`; True: 1 + N logits (a click logit, then
        a separate rating head) for `aux_rating_loss`.
    """

    num_ratings: int = 5
    aux: bool = False

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        """hidden [B, H] -> logits [B, N] or [B, 1 + N]."""
        if isinstance(self.num_ratings, bool) or not isinstance(self.num_ratings, int) or self.num_ratings < 2:
            raise ValueError(f"RatingHead.num_ratings must be an integer >= 2, got {self.num_ratings!r}")
        return nn.Dense(self.num_ratings + int(self.aux), name="logits")(hidden)
