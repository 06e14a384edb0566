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
import numbers
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

Aggregation = Literal["prob", "logit_sum"]
AGGREGATIONS: tuple[Aggregation, ...] = ("prob", "logit_sum")


def check_aggregation(aggregation, where: str = "aggregation") -> None:
    """ValueError naming `where` unless aggregation is one of AGGREGATIONS."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"{where} must be 'prob' or 'logit_sum', got {aggregation!r}")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """How logits [B, K] are trained and scored: lambda_r weighs the rating CE against the click
    BCE (eq. 13); threshold t_sh (ratings > t_sh are clicks); aggregation of p_hat ("prob": eq. 11,
    "logit_sum": the authors' code); scale_penalty: the backbone's L2 term times (1 - lambda_r);
    aux_rating: K = 1 + N (click logit, then a separate rating head); label_smoothing of the BCE
    target. `lipctr.scaled_supervision_loss` is the per-example form for one's own model."""

    lambda_r: float = 0.7  # a traced per-member value inside the trainer's epoch
    threshold: int = 3  # ratings > threshold are positive
    aggregation: Aggregation = "prob"
    scale_penalty: bool = True
    aux_rating: bool = False  # logits [B, 1 + N]: click logit, then a separate rating head
    label_smoothing: float = 0.0  # also a traced per-member value (lipctr.member_hparams)
    debug: bool = False  # traced ratings checked in multihead_loss via jax.experimental.checkify

    def __post_init__(self):
        check_aggregation(self.aggregation, "LossConfig.aggregation")
        for name, low, high_open in (("lambda_r", 0.0, False), ("label_smoothing", 0.0, True)):
            value = getattr(self, name)  # traced values (inside the trainer) are not checked
            if isinstance(value, numbers.Real) and not (low <= value < 1.0 or (value == 1.0 and not high_open)):
                raise ValueError(f"LossConfig.{name} must lie in [0, 1{')' if high_open else ']'}, got {value!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, numbers.Integral) or self.threshold < 1:
            raise ValueError(f"LossConfig.threshold must be an integer >= 1, got {self.threshold!r}")
        for name in ("scale_penalty", "aux_rating", "debug"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"LossConfig.{name} must be True or False, got {getattr(self, name)!r}")

    def click_logits(self, logits: jax.Array) -> jax.Array:
        """The logits p_hat is read from: [B, 1] of an aux_rating head, else the logits themselves."""
        return logits[..., :1] if self.aux_rating else logits


def binary_log_probs(logits: jax.Array, threshold: int, aggregation: Aggregation = "prob"):
    """(log p_hat, log(1 - p_hat)), each [B], for a [B, 1] binary or [B, N] rating head."""
    if logits.shape[-1] == 1:
        z = logits[..., 0]
        return jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z)
    if not 1 <= threshold < logits.shape[-1]:
        raise ValueError(f"threshold {threshold} leaves no positive or no negative class of a "
                         f"{logits.shape[-1]}-wide rating head; expected 1 <= threshold < {logits.shape[-1]}")
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


def check_ratings(rating, weights, num_classes: int, debug: bool = False) -> None:
    """ValueError unless every rating [B] of weight > 0 lies in 1..num_classes (a rating above the
    head width would give NaN, a rating of 0 would silently train the last class). Concrete values
    are checked here; traced ones only with debug=True, through jax.experimental.checkify (wrap the
    jitted function in checkify.checkify and call err.throw()), so the default program is unchanged."""
    if not isinstance(rating, jax.core.Tracer) and not isinstance(weights, jax.core.Tracer):
        values = np.asarray(rating)
        if weights is not None:
            values = values[np.asarray(weights) > 0]
        bad = values[(values < 1) | (values > num_classes)]
        if bad.size:
            raise ValueError(f"multihead_loss: rating must lie in 1..{num_classes} (the rating head's width), "
                             f"got {bad.size} outside it, e.g. {bad.flat[0].item()!r}")
    elif debug:
        live = jnp.ones(jnp.shape(rating), bool) if weights is None else weights > 0
        outside = live & ((rating < 1) | (rating > num_classes))
        checkify.check(~jnp.any(outside), "multihead_loss: {n} ratings outside 1..{k}, e.g. {r}",
                       n=outside.sum(), k=jnp.int32(num_classes), r=jnp.where(outside, rating, 0).max())


def multihead_loss(logits, rating, label, config: LossConfig, penalty=0.0, weights=None):
    """Scalar training loss (eq. 13 for K = N, BCE for K = 1, both terms on their own columns for
    an aux_rating head), a weighted mean over the batch.

    logits [B, K]; rating int [B] in 1..N (checked by `check_ratings`); label float [B]; weights
    float [B] (1 = real example, 0 = padding) or None; penalty: the backbone's explicit L2 term.
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
    check_ratings(rating, weights, rating_logits.shape[-1], config.debug)
    ce = (rating_ce_per_example(rating_logits, rating) * weights).sum() / denominator
    lam = config.lambda_r
    if config.scale_penalty:
        return lam * ce + (1.0 - lam) * (bce + penalty)
    return lam * ce + (1.0 - lam) * bce + penalty
