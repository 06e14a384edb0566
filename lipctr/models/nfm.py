"""NFM (He & Chua 2017), as RecBole 1.2.1 defines it.

Bi-interaction pooling 0.5 * ((sum_f e_f)^2 - sum_f e_f^2) [B, d] -> batch-norm -> MLP with
sigmoid activations and batch-norm -> bias-free K-wide linear layer, plus the K-wide first-order
linear term.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from lipctr.models.base import MLP, CTRModel, FirstOrderLinear, xavier_normal


def bi_interaction(emb: jax.Array) -> jax.Array:
    """Sum of the pairwise element-wise products of the field embeddings: [B, F, d] -> [B, d]."""
    return 0.5 * (emb.sum(axis=1) ** 2 - (emb**2).sum(axis=1))


class NFM(CTRModel):
    """NFM: features -> logits [B, num_outputs] = MLP(batch-norm(bi-interaction pooling [B, d])) +
    K-wide first-order term; fields: hyper-parameters (authors' ML-1M defaults)."""

    mlp_hidden_size: tuple[int, ...] = (512, 512, 512)
    dropout_prob: float = 0.5
    first_order_pooling: str = "mean"  # a token_seq field's first-order weights: "mean", or "sum" as RecBole

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        emb = self.field_embeddings(features, embedding_offset)  # [B, F, d]
        pooled = nn.BatchNorm(
            use_running_average=deterministic, momentum=0.9, epsilon=1e-5, name="bi_batch_norm"
        )(bi_interaction(emb))
        hidden = MLP(self.mlp_hidden_size, self.dropout_prob, "sigmoid", batch_norm=True, name="mlp")(
            pooled, deterministic
        )
        deep = nn.Dense(self.num_outputs, use_bias=False, kernel_init=xavier_normal, name="prediction")(hidden)
        linear = FirstOrderLinear(self.schema, self.num_outputs, self.first_order_pooling, name="first_order")
        return deep + linear(features)  # [B, K]
