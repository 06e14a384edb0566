"""DCN (Wang et al. 2017, the first cross network), as RecBole 1.2.1 defines it.

Cross layer l (vector weights): x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l, w_l, b_l [D], D = F * d.
logits = linear([cross(x_0) || MLP(x_0)]) [B, K]; the MLP uses batch-norm (RecBole's
MLPLayers with bn=True: dropout -> dense -> batch-norm -> ReLU). The one output layer is K wide,
so both branches reach every logit through their own columns.

RecBole creates w_l with torch.randn (standard normal; its xavier init only visits nn.Linear /
nn.Embedding) and b_l as zeros. Explicit L2: reg_weight * sum_l ||w_l||_2 (RecBole's RegLoss).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipctr.models.base import MLP, CTRModel, prediction_layer, zeros
from lipctr.models.regularization import sum_of_norms


class VectorCrossNetwork(nn.Module):
    """DCN's cross layers: [B, D] -> [B, D]. Params w_l [D] (standard normal), b_l [D] (zeros)."""

    num_layers: int

    @nn.compact
    def __call__(self, x0: jax.Array) -> jax.Array:
        width = x0.shape[-1]
        x = x0
        for layer in range(self.num_layers):
            w = self.param(f"w_{layer}", nn.initializers.normal(stddev=1.0), (width,))
            b = self.param(f"b_{layer}", zeros, (width,))
            x = x0 * (x @ w)[:, None] + b + x
        return x


class DCN(CTRModel):
    cross_layer_num: int = 6
    mlp_hidden_size: tuple[int, ...] = (256, 256, 256)
    dropout_prob: float = 0.2
    reg_weight: float = 2.0

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        emb = self.field_embeddings(features, embedding_offset)  # [B, F, d]
        x0 = emb.reshape(emb.shape[0], -1)  # [B, D]
        cross = VectorCrossNetwork(self.cross_layer_num, name="cross")(x0)
        deep = MLP(self.mlp_hidden_size, self.dropout_prob, batch_norm=True, name="mlp")(x0, deterministic)
        return prediction_layer(self.num_outputs)(jnp.concatenate([cross, deep], axis=-1))  # [B, K]

    def penalty(self, params) -> jax.Array:
        """reg_weight * sum over cross layers of ||w_l||_2."""
        cross = params["cross"]
        return self.reg_weight * sum_of_norms([cross[f"w_{layer}"] for layer in range(self.cross_layer_num)])
