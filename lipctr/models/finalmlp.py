"""FinalMLP (Mao et al., AAAI 2023), as FuxiCTR's model zoo defines it, with a K-wide fusion.

  e = flat field embeddings [B, D], D = F * d
  g_i = 2 * sigmoid(Gate_i(c_i))            Gate_i: MLPBlock(fs_hidden_units) -> dense D   (i = 1, 2)
  h_1 = MLP_1(e * g_1),  h_2 = MLP_2(e * g_2)   MLPBlocks (dense -> ReLU -> dropout), widths X, Y
  logit_o = w_x[:, o] . h_1 + w_y[:, o] . h_2 + sum_heads h_1,k^T W_k[:, o, :] h_2,k + biases

The context c_i is the flattened embeddings of the fields in fs<i>_context, from tables of their
own (FuxiCTR's FeatureEmbedding over the context columns), or, for an empty context, a learned
[d] vector initialised to zeros. "user" / "item" name the schema's user / item field. FuxiCTR's
template leaves both contexts empty; then the gate's input and first hidden layer are 0 and
relu'(0) = 0, so only the gate's output layer ever trains. The defaults condition stream 1 on
the user and stream 2 on the item (the user- / item-specific gating of the paper).

The bilinear weights are stored [H, X/H, K, Y/H] (FuxiCTR's w_xy [H*X/H*Y/H, K] viewed so), so
that output o owns the slice [:, :, o, :]. `use_fs=False` feeds e to both streams (DualMLP's
inputs). No explicit L2 term (FuxiCTR's net_regularizer 0).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipctr.data.schema import Schema
from lipctr.models.base import CTRModel, FieldTables, xavier_normal, zeros
from lipctr.models.mlp_block import MLPBlock


def context_fields(schema: Schema, context: tuple[str, ...], name: str) -> tuple[str, ...]:
    """Field names of a gate context ("user" / "item" -> the schema's user / item field)."""
    alias = {"user": schema.user_field, "item": schema.item_field}
    names = tuple(alias.get(entry, entry) for entry in context)
    unknown = [n for n in names if n not in schema.names]
    if unknown:
        raise ValueError(f"FinalMLP.{name}: no field {unknown[0]!r} in the data (fields: {', '.join(schema.names)})")
    return names


class FeatureGate(nn.Module):
    """2 * sigmoid(MLP(context)) [B, D]: one stream's feature-selection gate."""

    schema: Schema
    context: tuple[str, ...]
    hidden: tuple[int, ...]
    width: int
    embedding_dim: int

    @nn.compact
    def __call__(self, features, batch: int) -> jax.Array:
        if self.context:
            sub = Schema(tuple(self.schema[n] for n in self.context))
            ctx = FieldTables(sub, self.embedding_dim, name="context_embedding")(features).reshape(batch, -1)
        else:
            bias = self.param("context_bias", zeros, (self.embedding_dim,))
            ctx = jnp.broadcast_to(bias, (batch, self.embedding_dim))
        gate = MLPBlock(self.hidden, output_dim=self.width, output_activation="sigmoid", name="mlp")(ctx, True)
        return 2.0 * gate


def _bilinear_init(key, shape, dtype=jnp.float32):
    """xavier-normal of FuxiCTR's w_xy [H * X/H * Y/H, K]: std sqrt(2 / (H X/H Y/H + K))."""
    heads, hx, k, hy = shape
    return jax.random.normal(key, shape, dtype) * (2.0 / (heads * hx * hy + k)) ** 0.5


class InteractionAggregation(nn.Module):
    """Multi-head bilinear fusion of h_1 [B, X] and h_2 [B, Y] -> [B, K]."""

    num_outputs: int
    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        heads, k = self.num_heads, self.num_outputs
        hx, hy = x.shape[-1] // heads, y.shape[-1] // heads
        out = nn.Dense(k, kernel_init=xavier_normal, bias_init=zeros, name="w_x")(x)
        out = out + nn.Dense(k, kernel_init=xavier_normal, bias_init=zeros, name="w_y")(y)
        w_xy = self.param("w_xy", _bilinear_init, (heads, hx, k, hy)).astype(x.dtype)
        xh, yh = x.reshape(-1, heads, hx), y.reshape(-1, heads, hy)
        return out + jnp.einsum("bhi,hioj,bhj->bo", xh, w_xy, yh)


class FinalMLP(CTRModel):
    mlp1_hidden_units: tuple[int, ...] = (1024, 512)
    mlp1_dropout: float = 0.0
    mlp1_batch_norm: bool = False
    mlp2_hidden_units: tuple[int, ...] = (1024, 512, 256)
    mlp2_dropout: float = 0.0
    mlp2_batch_norm: bool = False
    use_fs: bool = True
    fs_hidden_units: tuple[int, ...] = (1024, 512)
    fs1_context: tuple[str, ...] = ("user",)
    fs2_context: tuple[str, ...] = ("item",)
    num_heads: int = 2

    def _check(self) -> None:
        if not self.mlp1_hidden_units or not self.mlp2_hidden_units:
            raise ValueError("FinalMLP.mlp1_hidden_units and mlp2_hidden_units need at least one layer each")
        widths = (self.mlp1_hidden_units[-1], self.mlp2_hidden_units[-1])
        if self.num_heads < 1 or any(w % self.num_heads for w in widths):
            raise ValueError(f"FinalMLP.num_heads={self.num_heads} must divide the last widths of both MLPs {widths}")

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        self._check()
        emb = self.field_embeddings(features, embedding_offset)  # [B, F, d]
        batch = emb.shape[0]
        flat = emb.reshape(batch, -1)  # [B, D]
        inputs = [flat, flat]
        if self.use_fs:
            for i, context in enumerate((self.fs1_context, self.fs2_context), start=1):
                names = context_fields(self.schema, tuple(context), f"fs{i}_context")
                gate = FeatureGate(self.schema, names, tuple(self.fs_hidden_units), flat.shape[-1],
                                   self.embedding_dim, name=f"fs{i}_gate")(features, batch)
                inputs[i - 1] = flat * gate.astype(flat.dtype)
        mlp1 = MLPBlock(self.mlp1_hidden_units, self.mlp1_dropout, self.mlp1_batch_norm, name="mlp1")
        mlp2 = MLPBlock(self.mlp2_hidden_units, self.mlp2_dropout, self.mlp2_batch_norm, name="mlp2")
        h1, h2 = mlp1(inputs[0], deterministic), mlp2(inputs[1], deterministic)
        return InteractionAggregation(self.num_outputs, self.num_heads, name="fusion")(h1, h2)  # [B, K]
