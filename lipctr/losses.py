"""The one multi-head loss shared by every backbone.

Logits have shape [B, K]. K = 1 is the original binary model (sigmoid + BCE). K = N (one
logit per rating 1..N) is the scaled-supervision model of the paper:

    L = lambda_r * CE(logits, rating - 1) + (1 - lambda_r) * (BCE(p_hat, label) + penalty)

with p_hat aggregated from the rating head in one of two ways:

- "prob" (eq. 11 of the paper): p_hat = sum_{k > t_sh} softmax(logits)_k, computed in log space
  as logsumexp(logits[k > t_sh]) - logsumexp(logits), so it never takes log(0).
- "logit_sum" (the authors' code): p_hat = sigmoid(sum_{k > t_sh} logits_k - sum_{k <= t_sh} logits_k).

`penalty` is the backbone's own explicit L2 term; the authors scale it by (1 - lambda_r)
together with the BCE term (`scale_penalty=True`); `scale_penalty=False` keeps it unscaled.

Two controls of the mechanism study (lipctr.controls): `aux_rating` heads have K = 1 + N logits,
column 0 the click logit (sigmoid, BCE) and columns 1..N a separate rating head (CE only);
`label_smoothing` eps trains the BCE term against y (1 - eps) + eps / 2.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

Aggregation = Literal["prob", "logit_sum"]
AGGREGATIONS: tuple[Aggregation, ...] = ("prob", "logit_sum")


def check_aggregation(aggregation, where: str = "aggregation") -> None:
    """ValueError naming `where` unless aggregation is one of AGGREGATIONS."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"{where} must be 'prob' or 'logit_sum', got {aggregation!r}")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    lambda_r: float = 0.7  # a traced per-member value inside the trainer's epoch
    threshold: int = 3  # ratings > threshold are positive
    aggregation: Aggregation = "prob"
    scale_penalty: bool = True
    aux_rating: bool = False  # logits [B, 1 + N]: click logit, then a separate rating head
    label_smoothing: float = 0.0  # also a traced per-member value (lipctr.member_hparams)

    def __post_init__(self):
        check_aggregation(self.aggregation, "LossConfig.aggregation")
        if isinstance(self.label_smoothing, (int, float)) and not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"LossConfig.label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")

    def click_logits(self, logits: jax.Array) -> jax.Array:
        """The logits p_hat is read from: [B, 1] of an aux_rating head, else the logits themselves."""
        return logits[..., :1] if self.aux_rating else logits


def binary_log_probs(logits: jax.Array, threshold: int, aggregation: Aggregation = "prob"):
    """(log p_hat, log(1 - p_hat)), each [B], for a [B, 1] binary or [B, N] rating head."""
    if logits.shape[-1] == 1:
        z = logits[..., 0]
        return jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z)
    negative, positive = logits[..., :threshold], logits[..., threshold:]
    if aggregation == "logit_sum":
        z = positive.sum(-1) - negative.sum(-1)
        return jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z)
    check_aggregation(aggregation)
    log_total = jax.nn.logsumexp(logits, axis=-1)
    return (
        jax.nn.logsumexp(positive, axis=-1) - log_total,
        jax.nn.logsumexp(negative, axis=-1) - log_total,
    )


def click_probability(logits: jax.Array, threshold: int = 3, aggregation: Aggregation = "prob"):
    """p_hat [B] for either head, so evaluation never branches on the variant."""
    log_p, _ = binary_log_probs(logits, threshold, aggregation)
    return jnp.exp(log_p)


def click_score(logits: jax.Array, threshold: int = 3, aggregation: Aggregation = "prob"):
    """log(p_hat / (1 - p_hat)) [B]: a strictly increasing function of p_hat that does not
    saturate in float32, so AUC and ranking see no artificial ties where p_hat rounds to 1."""
    log_p, log_q = binary_log_probs(logits, threshold, aggregation)
    return log_p - log_q


def bce_per_example(logits, label, threshold: int = 3, aggregation: Aggregation = "prob"):
    """Binary cross-entropy of p_hat against label in {0, 1}, [B]."""
    log_p, log_q = binary_log_probs(logits, threshold, aggregation)
    return -(label * log_p + (1.0 - label) * log_q)


def rating_ce_per_example(logits, rating):
    """Categorical cross-entropy of the rating head against rating in 1..N, [B]."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, (rating - 1)[..., None].astype(jnp.int32), axis=-1)[..., 0]


def multihead_loss(logits, rating, label, config: LossConfig, penalty=0.0, weights=None):
    """Scalar training loss (eq. 13 for K = N, BCE for K = 1, both terms on their own columns for
    an aux_rating head), a weighted mean over the batch.

    logits [B, K]; rating int [B] in 1..N; label float [B]; weights float [B] (1 = real
    example, 0 = padding) or None; penalty: the backbone's explicit L2 term (scalar).
    """
    if weights is None:
        weights = jnp.ones(label.shape, logits.dtype)
    denominator = jnp.maximum(weights.sum(), 1.0)
    target = label * (1.0 - config.label_smoothing) + 0.5 * config.label_smoothing
    click = config.click_logits(logits)
    bce = (bce_per_example(click, target, config.threshold, config.aggregation) * weights).sum() / denominator
    if logits.shape[-1] == 1:
        return bce + penalty
    rating_logits = logits[..., 1:] if config.aux_rating else logits
    ce = (rating_ce_per_example(rating_logits, rating) * weights).sum() / denominator
    lam = config.lambda_r
    if config.scale_penalty:
        return lam * ce + (1.0 - lam) * (bce + penalty)
    return lam * ce + (1.0 - lam) * bce + penalty
