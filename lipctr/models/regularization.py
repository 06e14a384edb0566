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

    `tables` is the params of a `FieldTables` (one entry per field); one norm per RecBole table
    (`Schema.recbole_tables`: all token fields, all float fields, each token_seq field).
    """

    def weight(field):
        return tables[field.name] if field.kind == "float" else tables[field.name]["embedding"]

    return sum((group_norm([weight(f) for f in group]) for group in schema.recbole_tables()), jnp.zeros(()))
