"""DeepFM (Guo et al. 2017), as RecBole 1.2.1 defines it, with every branch K wide.

logits = first-order linear [B, K] + FM [B, K] + MLP(flat embeddings) -> linear [B, K].

FM second order: the bi-interaction vector p = 0.5 * ((sum_f e_f)^2 - sum_f e_f^2) [B, d];
RecBole sums it over d (one scalar per example, no parameters). Under a K-wide head a scalar
added to every logit cancels in the softmax, so here the sum is a learned readout
p @ fm_weights, fm_weights [d, K] initialised to ones: at initialisation every column is
RecBole's FM, and each rating gets its own weighting of the d interaction dimensions
(K = 1: RecBole's model plus d parameters). `scalar_side_branches=True` gives RecBole's model
exactly: no fm_weights, the FM scalar and a width-1 first-order term broadcast to every logit.

The MLP is RecBole's MLPLayers (dropout -> dense -> ReLU, no batch-norm); no explicit L2 term.
"""

from __future__ import annotations

import flax.linen as nn

from lipctr.models.base import MLP, CTRModel, FirstOrderLinear, prediction_layer
from lipctr.models.nfm import bi_interaction


class DeepFM(CTRModel):
    mlp_hidden_size: tuple[int, ...] = (128, 128, 128)
    dropout_prob: float = 0.2
    scalar_side_branches: bool = False
    first_order_pooling: str = "mean"  # a token_seq field's first-order weights: "mean", or "sum" as RecBole

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        emb = self.field_embeddings(features, embedding_offset)  # [B, F, d]
        pairs = bi_interaction(emb)  # [B, d]
        if self.scalar_side_branches:
            fm = pairs.sum(axis=-1, keepdims=True)  # [B, 1], RecBole's FM
        else:
            weights = self.param("fm_weights", nn.initializers.ones, (emb.shape[-1], self.num_outputs))
            fm = pairs @ weights.astype(pairs.dtype)  # [B, K]
        hidden = MLP(self.mlp_hidden_size, self.dropout_prob, name="mlp")(emb.reshape(emb.shape[0], -1), deterministic)
        deep = prediction_layer(self.num_outputs, name="deep_output")(hidden)
        first_order = FirstOrderLinear(self.schema, self.side_outputs, self.first_order_pooling, name="first_order")
        linear = first_order(features)
        return linear + fm + deep  # [B, K]
