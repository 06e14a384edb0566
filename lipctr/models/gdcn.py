"""GDCN (Wang et al., CIKM 2023: gated deep cross network), as FuxiCTR's model zoo defines it.

Gated cross layer l: x_{l+1} = x_0 * (x_l W_l + b_l) * sigmoid(x_l Wg_l) + x_l,
W_l, Wg_l [D, D] (bias-free, xavier-normal), b_l [D] uniform(0, 1), D = F * d.

structure "stacked" (FuxiCTR's GDCN, the paper's GDCN-S): logits = MLPBlock(cross(x_0)) -> dense K.
structure "parallel" (FuxiCTR's GDCNP, GDCN-P): logits = dense K([cross(x_0) || MLPBlock(x_0)]).
The MLP is FuxiCTR's MLP_Block (dense -> [batch-norm] -> ReLU -> dropout). The one output layer
is K wide. No explicit L2 term (FuxiCTR's net_regularizer 0).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipctr.models.base import CTRModel, prediction_layer, xavier_normal
from lipctr.models.mlp_block import MLPBlock

_STRUCTURES = ("stacked", "parallel")


class GatedCrossNetwork(nn.Module):
    """Gated cross layers: [B, D] -> [B, D]. Params w_l, wg_l [D, D] (x @ w), b_l [D]."""

    num_layers: int

    @nn.compact
    def __call__(self, x0: jax.Array) -> jax.Array:
        width = x0.shape[-1]
        x = x0
        for layer in range(self.num_layers):
            w = self.param(f"w_{layer}", xavier_normal, (width, width)).astype(x.dtype)
            wg = self.param(f"wg_{layer}", xavier_normal, (width, width)).astype(x.dtype)
            b = self.param(f"b_{layer}", nn.initializers.uniform(scale=1.0), (width,)).astype(x.dtype)
            x = x0 * (x @ w + b) * nn.sigmoid(x @ wg) + x
        return x


class GDCN(CTRModel):
    num_cross_layers: int = 3
    dnn_hidden_units: tuple[int, ...] = (1024, 512, 256)
    net_dropout: float = 0.0
    batch_norm: bool = False
    structure: str = "stacked"

    def _check(self) -> None:
        if self.structure not in _STRUCTURES:
            raise ValueError(f"GDCN.structure must be one of {_STRUCTURES}, got {self.structure!r}")
        if not self.dnn_hidden_units:
            raise ValueError("GDCN.dnn_hidden_units needs at least one layer")

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        self._check()
        emb = self.field_embeddings(features, embedding_offset)  # [B, F, d]
        x0 = emb.reshape(emb.shape[0], -1)  # [B, D]
        cross = GatedCrossNetwork(self.num_cross_layers, name="cross")(x0)
        mlp = MLPBlock(tuple(self.dnn_hidden_units), self.net_dropout, self.batch_norm, name="mlp")
        top = mlp(cross, deterministic) if self.structure == "stacked" else jnp.concatenate(
            [cross, mlp(x0, deterministic)], axis=-1)
        return prediction_layer(self.num_outputs)(top)  # [B, K]
