"""Evaluation of one member: logits over a split in fixed-size chunks, and its AUC / LogLoss.

`member_metrics` is the one per-member evaluation: vmap it over an ensemble's scores."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lipctr import metrics, sharding
from lipctr.models.base import CTRModel


def make_predict_fn(model: CTRModel, num_examples: int, eval_batch_size: int, mesh=None):
    """predict(params, model_state, features) -> logits [n, K] for ONE member, in fixed-size chunks
    (each chunk split over the mesh's "data" axis when there is a mesh)."""
    chunk = min(eval_batch_size, num_examples)
    num_chunks = math.ceil(num_examples / chunk)
    chunks = (jnp.arange(num_chunks * chunk) % num_examples).reshape(num_chunks, chunk)

    def predict(params, model_state, features):
        def body(_, index):
            batch = jax.tree.map(lambda x: x[index], features)
            if mesh is not None:
                batch = sharding.constrain_batch(batch, mesh)
            return None, model.apply({"params": params, **model_state}, batch, deterministic=True)

        _, logits = jax.lax.scan(body, None, chunks)
        return logits.reshape(num_chunks * chunk, -1)[:num_examples]

    return predict


def member_metrics(scores: jax.Array, probs: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """{"auc", "logloss"} [M] of every member: scores / probs [M, n] (click_score / click_probability
    of each member's logits), labels [n]."""
    return {"auc": jax.vmap(metrics.auc, in_axes=(0, None))(scores, labels),
            "logloss": jax.vmap(metrics.log_loss, in_axes=(0, None))(probs, labels)}
