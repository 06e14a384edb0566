"""AutoInt (Song et al. 2019), as RecBole 1.2.1 defines it.

Field embeddings [B, F, d] are projected to the attention size E, passed through `n_layers`
stacked multi-head self-attention layers (no activation between them), optionally added to a
residual projection of the embeddings, ReLU'd and flattened into a K-wide attention output layer.
The model sums that with a K-wide MLP branch over the flat embeddings and the K-wide first-order
linear term. As in RecBole, `dropout_probs[0]` drops attention weights, `dropout_probs[1]` is
the MLP dropout and `dropout_probs[2]` is never applied (RecBole builds that layer but never
calls it). `scalar_side_branches=True` keeps the attention output layer width 1 under a K-wide
head, broadcast to every logit, as the authors' code does.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipctr.models.base import MLP, CTRModel, Dropout, FirstOrderLinear, prediction_layer, xavier_normal, zeros

xavier_uniform = nn.initializers.xavier_uniform()


def dense(width: int, name: str, use_bias: bool = True) -> nn.Dense:
    """A RecBole-initialised linear layer: xavier-normal weights, zero bias."""
    return nn.Dense(width, use_bias=use_bias, kernel_init=xavier_normal, bias_init=zeros, name=name)


class SelfAttention(nn.Module):
    """PyTorch's nn.MultiheadAttention used as self-attention over fields: [B, F, E] -> [B, F, E].

    Parameters: `in_proj` (kernel [E, 3E] holding the q, k, v projections side by side,
    xavier-uniform over the whole [E, 3E] matrix as PyTorch initialises it; zero bias) and
    `out_proj` (kernel [E, E], xavier-normal as RecBole re-initialises it; zero bias).
    Attention weights are dropped with rate `dropout` when not deterministic.

    Both contractions (over a head, c = 4, and over the fields) are broadcast products summed
    over an axis, not batched dots: XLA:CPU runs tiny batched dots as one small matmul per
    example, ~14x slower than the fused multiply-and-sum (docs/benchmarks.md).
    """

    num_heads: int
    dropout: float | jax.Array = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        batch, fields, width = x.shape
        if width % self.num_heads:
            raise ValueError(
                f"attention size {width} must be divisible by num_heads={self.num_heads}"
            )
        head_dim = width // self.num_heads
        qkv = nn.Dense(3 * width, kernel_init=xavier_uniform, bias_init=zeros, name="in_proj")(x)
        q, k, v = (t.reshape(batch, fields, self.num_heads, head_dim) for t in jnp.split(qkv, 3, -1))
        scores = (q[:, :, None] * k[:, None]).sum(-1)  # [B, F, 1, H, c] * [B, 1, F, H, c] -> [B, F, F, H]
        scores = jnp.moveaxis(scores, 3, 1) / math.sqrt(head_dim)  # [B, H, F, F]
        weights = Dropout(self.dropout)(jax.nn.softmax(scores, -1), deterministic)
        out = (jnp.moveaxis(weights, 1, 3)[..., None] * v[:, None]).sum(2)  # [B, F, F, H, c] -> [B, F, H, c]
        return dense(width, "out_proj")(out.reshape(batch, fields, width))


class AutoInt(CTRModel):
    """AutoInt: features -> logits [B, num_outputs] = attention output + MLP branch + first-order
    term, each K wide; fields: hyper-parameters (authors' ML-1M defaults)."""

    attention_size: int = 8
    n_layers: int = 3
    num_heads: int = 2
    dropout_probs: tuple[float, float, float] = (0.2, 0.2, 0.2)
    mlp_hidden_size: tuple[int, ...] = (256, 256, 256)  # () drops the MLP branch
    has_residual: bool = False  # the authors' runs left it unset (False)
    scalar_side_branches: bool = False
    first_order_pooling: str = "mean"  # a token_seq field's first-order weights: "mean", or "sum" as RecBole

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        if len(self.dropout_probs) != 3:
            raise ValueError(
                f"AutoInt dropout_probs must hold 3 rates (attention, MLP, unused), "
                f"got {self.dropout_probs!r}"
            )
        emb = self.field_embeddings(features, embedding_offset)  # [B, F, d]
        batch = emb.shape[0]
        cross = dense(self.attention_size, "att_embedding")(emb)  # [B, F, E]
        for i in range(self.n_layers):
            cross = SelfAttention(self.num_heads, self.dropout_probs[0], name=f"self_attn_{i}")(
                cross, deterministic
            )
        if self.has_residual:
            cross = cross + dense(self.attention_size, "v_res_embedding")(emb)
        logits = prediction_layer(self.side_outputs, "attn_fc")(nn.relu(cross).reshape(batch, -1))
        if self.mlp_hidden_size:
            deep = MLP(self.mlp_hidden_size, self.dropout_probs[1], name="mlp")(
                emb.reshape(batch, -1), deterministic
            )
            logits = logits + prediction_layer(self.num_outputs, "deep_predict_layer")(deep)
        linear = FirstOrderLinear(self.schema, self.num_outputs, self.first_order_pooling,
                                  name="first_order_linear")(features)
        return logits + linear  # [B, K]
