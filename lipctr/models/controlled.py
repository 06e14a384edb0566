"""Backbones under the model-side controls of the mechanism study (lipctr.controls).

`controlled_model(model, controls)` returns the same backbone (same parameter tree, same
`__call__`) with two additions:

- aux_rating: the model is built with K = 1 + N outputs; column 0 is the click logit (the K = 1
  head of orig) and columns 1..N a separate rating head on the same representation. Every
  K-wide parameter (the final layer, the K-wide side branches, FiGNN's per-class scorers) gets
  one slice per column, so the rating columns never feed the click logit. `init` starts the
  click column and every shared parameter exactly where orig (K = 1, same seed) starts, and the
  backbone's own L2 term is taken on that click view (the rating columns carry none); at
  lambda_r = 0 the rating columns get no gradient, so the click logit trains as orig's does.
- embedding_l2: w * sum of the squared Frobenius norms of the field embedding tables is added
  to the backbone's own L2 term (explicit L2 on the embeddings only).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lipctr.controls import Controls
from lipctr.models.base import CTRModel
from lipctr.models.parameter_counts import random_features


def head_axis(click_shape: tuple, full_shape: tuple) -> int | None:
    """The axis where a K = 1 leaf (size 1) is K wide in the full model; None for a shared leaf."""
    if tuple(click_shape) == tuple(full_shape):
        return None
    differing = [i for i, (a, b) in enumerate(zip(click_shape, full_shape)) if a != b]
    if len(click_shape) != len(full_shape) or len(differing) != 1 or click_shape[differing[0]] != 1:
        raise ValueError(f"a K = 1 leaf of shape {click_shape} is not one column of the leaf {full_shape}")
    return differing[0]


def click_view(params, click_shapes):
    """params with every K-wide leaf cut to its first column along its head axis: the K = 1
    model's parameter tree (shapes `click_shapes`, a tree of ShapeDtypeStructs or arrays)."""

    def cut(leaf, like):
        axis = head_axis(like.shape, leaf.shape)
        return leaf if axis is None else jax.lax.slice_in_dim(leaf, 0, 1, axis=axis)

    return jax.tree.map(cut, params, click_shapes)


def with_click_columns(variables, click_variables):
    """variables with every shared leaf, and column 0 of every K-wide leaf, taken from the K = 1
    model's `click_variables` (same tree, K = 1 shapes)."""

    def put(leaf, click):
        axis = head_axis(click.shape, leaf.shape)
        if axis is None:
            return click
        return jnp.concatenate([click, jax.lax.slice_in_dim(leaf, 1, leaf.shape[axis], axis=axis)], axis=axis)

    return jax.tree.map(put, variables, click_variables)


def embedding_square_norm(params) -> jax.Array:
    """Sum over the field embedding tables (and float-field vectors) of their squared Frobenius norms."""
    return sum((jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(params["embedding"])), jnp.zeros(()))


def _example_features(schema) -> dict:
    return random_features(schema, 2, np.random.default_rng(0))


@functools.cache
def controlled_class(cls: type[CTRModel]) -> type[CTRModel]:
    """`cls` with the controls' fields, its `init` and `penalty` extended (see module docstring)."""

    class Controlled(cls):
        aux_rating: bool = False
        embedding_l2: float = 0.0

        def click_model(self) -> CTRModel:
            """The K = 1 model whose parameters are this one's click view."""
            return self.clone(num_outputs=1, aux_rating=False, embedding_l2=0.0)

        def init(self, rngs, *args, **kwargs):
            variables = super().init(rngs, *args, **kwargs)
            if not self.aux_rating:
                return variables
            return with_click_columns(variables, self.click_model().init(rngs, *args, **kwargs))

        def penalty(self, params) -> jax.Array:
            if self.aux_rating:
                click = self.click_model()
                shapes = jax.eval_shape(click.init, jax.random.key(0), _example_features(self.schema))
                params = click_view(params, shapes["params"])
            own = cls.penalty(self, params)
            if isinstance(self.embedding_l2, float) and not self.embedding_l2:
                return own
            return own + self.embedding_l2 * embedding_square_norm(params)  # also a traced per-member weight

    Controlled.__name__ = Controlled.__qualname__ = f"Controlled{cls.__name__}"
    return Controlled


def controlled_model(model: CTRModel, controls: Controls, per_member_embedding_l2: bool = False) -> CTRModel:
    """`model` under the controls' aux_rating and embedding_l2 (itself when both are off, unless
    each member brings its own embedding_l2). For aux_rating, `model` must already have K = 1 + N
    outputs."""
    if not controls.aux_rating and not controls.embedding_l2 and not per_member_embedding_l2:
        return model
    if controls.aux_rating and model.num_outputs < 3:
        raise ValueError(f"aux_rating needs a 1 + N wide head (N >= 2), got num_outputs={model.num_outputs}")
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if f.name not in ("parent", "name", "aux_rating", "embedding_l2")}
    return controlled_class(type(model))(**fields, aux_rating=controls.aux_rating,
                                         embedding_l2=float(controls.embedding_l2))
