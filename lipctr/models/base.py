"""Shared building blocks of every backbone: field embeddings, the first-order term, the MLP.

Every backbone is a `CTRModel`: a flax.linen module called as

    logits = model.apply(variables, features, deterministic=..., embedding_offset=None,
                         rngs={"dropout": key}, mutable=[...])

with `features` a dict of batched field arrays (see lipctr.data.schema) and logits [B, K],
K = `num_outputs` (1: original binary model; N: one logit per rating). `embedding_offset`
([B, F, d] or None) is added to the field embeddings before any interaction layer; analyses use
it for noise robustness and for Jacobians with respect to the input embeddings.

User and item embedding tables live at params["embedding"][<field name>]["embedding"].
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipctr import random_bits
from lipctr.data.schema import Field, Schema

xavier_normal = nn.initializers.xavier_normal()
zeros = nn.initializers.zeros


POOLINGS = ("mean", "sum")  # how a token_seq field's rows are pooled (see `pool_sequence`)


def check_first_order_pooling(pooling: str) -> None:
    """ValueError (one line naming the hyper-parameter) unless `pooling` is one of POOLINGS."""
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ValueError(f"first_order_pooling must be one of {', '.join(map(repr, POOLINGS))} (how the first-order "
                         f"term pools a token_seq field's weights), got {pooling!r}")


def pool_sequence(table: jax.Array, ids: jax.Array, pooling: str = "mean") -> jax.Array:
    """Mean ("mean") or sum ("sum") of table rows over the non-padding ids (id 0 is padding):
    ids [B, L] -> [B, width]. A row of padding only pools to zeros."""
    mask = (ids != 0).astype(table.dtype)
    summed = jnp.einsum("bl,blw->bw", mask, table[ids])
    if pooling == "sum":
        return summed
    return summed / jnp.maximum(mask.sum(-1, keepdims=True), 1.0)


def embed_field(table_or_vector: jax.Array, field: Field, values: jax.Array, pooling: str = "mean") -> jax.Array:
    """One field's batch of values -> [B, width], from its table ([vocab, width]) or vector ([width]);
    a token_seq field's rows pooled by `pooling` ("mean" or "sum", `pool_sequence`)."""
    if field.kind == "token":
        return table_or_vector[values]
    if field.kind == "token_seq":
        return pool_sequence(table_or_vector, values, pooling)
    if field.kind == "float":
        return values[:, None].astype(table_or_vector.dtype) * table_or_vector
    raise ValueError(f"field {field.name!r} has unknown kind {field.kind!r}")


def table_rows(schema: Schema, field: Field) -> int:
    """Rows of the RecBole table `field` is stored in (see `Schema.recbole_tables`)."""
    group = next(g for g in schema.recbole_tables() if field in g)
    return sum(1 if f.kind == "float" else f.vocab_size for f in group)


class FieldTables(nn.Module):
    """One parameter per field, named after the field: a [vocab, width] table, or a [width] vector
    scaling the value of a float field. Returns the stacked per-field outputs [B, F, width].

    Initialised xavier-normal as RecBole's concatenated tables are: std sqrt(2 / (rows + width))
    with rows = `table_rows` (so a 3-id field such as gender starts as small as user_id).
    A token_seq field's rows are pooled over its non-padding ids by `pooling`: "mean" (the field
    embeddings, RecBole's and FuxiCTR's) or "sum".
    """

    schema: Schema
    width: int
    pooling: str = "mean"

    @nn.compact
    def __call__(self, features: dict[str, jax.Array]) -> jax.Array:
        outputs = []
        for field in self.schema.fields:
            init = nn.initializers.normal(stddev=(2.0 / (table_rows(self.schema, field) + self.width)) ** 0.5)
            if field.kind == "float":
                param = self.param(field.name, init, (self.width,))
            else:
                param = nn.Embed(field.vocab_size, self.width, embedding_init=init, name=field.name).embedding
            outputs.append(embed_field(param, field, features[field.name], self.pooling))
        return jnp.stack(outputs, axis=1)


class FeatureEmbedding(nn.Module):
    """Field embeddings [B, F, d]; token_seq fields are mean-pooled over non-padding ids."""

    schema: Schema
    dim: int = 16

    @nn.compact
    def __call__(self, features: dict[str, jax.Array]) -> jax.Array:
        return FieldTables(self.schema, self.dim, name="tables")(features)


class FirstOrderLinear(nn.Module):
    """The first-order (wide / linear) term: sum over fields of a K-wide weight per id, plus a bias.

    Returns [B, K]; K = num_outputs, so that under the rating head the linear part has one
    output per rating (a scalar broadcast to all logits would cancel in the softmax).

    `pooling` (the backbones' `first_order_pooling` hyper-parameter) is how a token_seq field's
    weights combine over its non-padding ids: "mean" (the default; FuxiCTR mean-pools sequence
    features) or "sum" (RecBole 1.2.1's FMFirstOrderLinear, the authors' code base). The two
    differ only on token_seq fields; the parameters (names, shapes, initialisation) are the same.
    """

    schema: Schema
    num_outputs: int = 1
    pooling: str = "mean"

    @nn.compact
    def __call__(self, features: dict[str, jax.Array]) -> jax.Array:
        check_first_order_pooling(self.pooling)
        per_field = FieldTables(self.schema, self.num_outputs, self.pooling, name="weights")(features)
        bias = self.param("bias", zeros, (self.num_outputs,))
        return per_field.sum(axis=1) + bias


class Dropout(nn.Module):
    """flax's nn.Dropout, also for a rate that is a traced per-member value (a float32 [] array,
    lipctr.member_hparams): the same make_rng("dropout"), bernoulli(keep_prob) mask (drawn by
    lipctr.random_bits: jax.random.bernoulli's bits, computed once in one fused pass) and
    select(mask, x / keep_prob, 0), so a Python-float rate gives flax's bits (and a traced rate
    the same bits where float32(1 - rate) = 1 - float32(rate), e.g. 0.1 to 0.5 but 0.29, 0.33; else
    the scale differs by one float32 ulp). A
    Python rate of 0 returns x without drawing a key, as flax does; a traced rate always draws
    one (at 0 the mask is all ones and x * 1 = x). Rates lie in [0, 1) (a traced 1 divides by 0)."""

    rate: float | jax.Array

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        static = isinstance(self.rate, (int, float))
        if deterministic or (static and self.rate == 0.0):
            return x
        if static and self.rate == 1.0:
            return jnp.zeros_like(x)
        keep_prob = 1.0 - self.rate
        mask = random_bits.bernoulli(self.make_rng("dropout"), keep_prob, x.shape)
        # XLA computes x / constant as x * (1 / constant); a traced rate does the same explicitly
        scaled = x / keep_prob if static else x * (1.0 / keep_prob)
        return jax.lax.select(mask, scaled, jnp.zeros_like(x))


class MLP(nn.Module):
    """RecBole's MLPLayers: per layer dropout -> dense -> [batch-norm] -> activation. [B, D] -> [B, hidden[-1]]."""

    hidden: Sequence[int]
    dropout: float | jax.Array = 0.0
    activation: str = "relu"
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        activation = {"relu": nn.relu, "sigmoid": nn.sigmoid, "tanh": nn.tanh}[self.activation]
        for width in self.hidden:
            x = Dropout(self.dropout)(x, deterministic)
            x = nn.Dense(width, kernel_init=xavier_normal, bias_init=zeros)(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=deterministic, momentum=0.9, epsilon=1e-5)(x)
            x = activation(x)
        return x


def prediction_layer(num_outputs: int, name: str = "prediction") -> nn.Dense:
    """The final prediction layer: width 1 (original) or N (one logit per rating)."""
    return nn.Dense(num_outputs, kernel_init=xavier_normal, bias_init=zeros, name=name)


class CTRModel(nn.Module):
    """Base class of every backbone. Subclasses define `__call__` (see module docstring) and,
    where the reference model has an explicit L2 term, override `penalty`."""

    schema: Schema
    num_outputs: int = 1
    embedding_dim: int = 16

    def field_embeddings(self, features, embedding_offset=None) -> jax.Array:
        """Field embeddings [B, F, d] plus the optional offset. Call from a compact __call__."""
        emb = FeatureEmbedding(self.schema, self.embedding_dim, name="embedding")(features)
        return emb if embedding_offset is None else emb + embedding_offset

    @property
    def side_outputs(self) -> int:
        """Width of a scalar side branch: 1 when the backbone keeps them scalar (its
        `scalar_side_branches` hyper-parameter, as in the authors' code), else K."""
        return 1 if getattr(self, "scalar_side_branches", False) else self.num_outputs

    def penalty(self, params) -> jax.Array:
        """The backbone's explicit regularisation term, already weighted (0 when it has none)."""
        return jnp.zeros(())


def embedding_table(params, field_name: str) -> jax.Array:
    """The [vocab, d] embedding table of a token field (e.g. "user_id", "item_id")."""
    return params["embedding"]["tables"][field_name]["embedding"]
