"""Wide & Deep (Cheng et al. 2016), as RecBole 1.2.1 defines it: first-order linear part + MLP.

`scalar_side_branches=True` keeps the wide part width 1 under a K-wide head, broadcast to every
logit, as the authors' code does (under eq. 11 it then cancels in the softmax)."""

from __future__ import annotations

import flax.linen as nn

from lipctr.models.base import MLP, CTRModel, FirstOrderLinear, prediction_layer


class WideDeep(CTRModel):
    """Wide & Deep: features -> logits [B, num_outputs] = K-wide first-order (wide) term + MLP over
    the flat field embeddings [B, F * d]; fields: hyper-parameters (authors' ML-1M defaults)."""

    mlp_hidden_size: tuple[int, ...] = (128, 128, 128)
    dropout_prob: float = 0.2
    scalar_side_branches: bool = False
    first_order_pooling: str = "mean"  # a token_seq field's first-order weights: "mean", or "sum" as RecBole

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        emb = self.field_embeddings(features, embedding_offset)  # [B, F, d]
        deep = MLP(self.mlp_hidden_size, self.dropout_prob, name="mlp")(
            emb.reshape(emb.shape[0], -1), deterministic
        )
        wide = FirstOrderLinear(self.schema, self.side_outputs, self.first_order_pooling, name="wide")(features)
        return wide + prediction_layer(self.num_outputs)(deep)  # [B, K]
