"""Explicit L2 terms as RecBole computes them: sums of (unsquared) Frobenius norms.

RecBole's `RegLoss` and xDeepFM's `reg_loss` add `W.norm(2)` per weight tensor, i.e. the
Frobenius norm itself, not its square (the paper's eq. 8 writes the square).
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp

from lipctr.data.schema import Schema


def group_norm(arrays: Iterable[jax.Array]) -> jax.Array:
    """Frobenius norm of the concatenation of `arrays` (scalar); gradient 0 (not NaN) at 0."""
    squares = sum(jnp.sum(jnp.square(a)) for a in arrays)
    positive = squares > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


def sum_of_norms(arrays: Iterable[jax.Array]) -> jax.Array:
    """Sum over `arrays` of each one's Frobenius norm (RecBole's RegLoss), scalar."""
    return sum((group_norm([a]) for a in arrays), jnp.zeros(()))


def first_order_norm(tables: dict, schema: Schema) -> jax.Array:
    """Norm of a first-order linear part's weights grouped as RecBole stores them.

    `tables` is the params of a `FieldTables` (one entry per field). RecBole keeps all token
    fields in one concatenated table and all float fields in another (one norm each) and one
    table per token_seq field (one norm each).
    """
    token = [tables[f.name]["embedding"] for f in schema.fields if f.kind == "token"]
    floats = [tables[f.name] for f in schema.fields if f.kind == "float"]
    sequences = [tables[f.name]["embedding"] for f in schema.fields if f.kind == "token_seq"]
    return group_norm(token) + group_norm(floats) + sum_of_norms(sequences)
