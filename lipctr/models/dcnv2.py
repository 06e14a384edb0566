"""DCN-V2 (Wang et al. 2021), as RecBole 1.2.1 defines it.

Cross layer (full rank):  x_{l+1} = x_0 * (x_l W_l + b_l) + x_l,            W_l [D, D]
Mixed (low-rank experts): x_{l+1} = x_l + sum_e softmax(g(x_l))_e * x_0 * (U_e tanh(C_e tanh(V_e^T x_l)) + b_l)
with D = fields * d. `parallel`: prediction on [cross(x_0) || MLP(x_0)]; `stacked`: on MLP(cross(x_0)).
The MLP uses batch-norm. The explicit L2 term is reg_weight * sum of the Frobenius norms of the
cross weights (W, or U, V and C), as RecBole's RegLoss computes it.

RecBole creates the cross weights with `torch.randn` and never re-initialises them (its
xavier init only visits nn.Linear / nn.Embedding): `cross_init="normal"` (default) keeps that
standard-normal init, `cross_init="xavier"` uses xavier-normal per expert matrix instead.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipctr.models.base import MLP, CTRModel, prediction_layer, zeros
from lipctr.models.regularization import sum_of_norms

_STRUCTURES = ("parallel", "stacked")
_CROSS_INITS = ("normal", "xavier")


def _cross_initializer(kind: str):
    """Standard normal (RecBole's torch.randn) or xavier-normal per matrix (leading expert axis)."""
    if kind == "normal":
        return nn.initializers.normal(stddev=1.0)

    def xavier(key, shape, dtype=jnp.float32):
        batch_axis = (0,) if len(shape) == 3 else ()
        return nn.initializers.xavier_normal(batch_axis=batch_axis)(key, shape, dtype)

    return xavier


class CrossNetwork(nn.Module):
    """Full-rank cross layers: [B, D] -> [B, D]. Params w_l [D, D], b_l [D]."""

    num_layers: int
    init: str = "normal"

    @nn.compact
    def __call__(self, x0: jax.Array) -> jax.Array:
        width = x0.shape[-1]
        x = x0
        for layer in range(self.num_layers):
            w = self.param(f"w_{layer}", _cross_initializer(self.init), (width, width))
            b = self.param(f"b_{layer}", zeros, (width,))
            x = x0 * (x @ w + b) + x
        return x


class MixedCrossNetwork(nn.Module):
    """Cross layers as a softmax-gated mixture of low-rank experts: [B, D] -> [B, D].

    Params per layer l: u_l [E, r, D], v_l [E, D, r], c_l [E, r, r], b_l [D]; one linear gate
    per expert, gate_kernel_l [E, D, 1] and gate_bias_l [E], shared across layers as in RecBole
    (where the gates are not per layer).
    """

    num_layers: int
    expert_num: int
    low_rank: int
    init: str = "normal"

    @nn.compact
    def __call__(self, x0: jax.Array) -> jax.Array:
        width, experts, rank = x0.shape[-1], self.expert_num, self.low_rank
        init = _cross_initializer(self.init)
        gate_kernel = self.param("gate_kernel", nn.initializers.xavier_normal(batch_axis=(0,)), (experts, width, 1))
        gate_bias = self.param("gate_bias", zeros, (experts,))
        x = x0
        for layer in range(self.num_layers):
            u = self.param(f"u_{layer}", init, (experts, rank, width))
            v = self.param(f"v_{layer}", init, (experts, width, rank))
            c = self.param(f"c_{layer}", init, (experts, rank, rank))
            b = self.param(f"b_{layer}", zeros, (width,))
            gates = jax.nn.softmax(jnp.einsum("bd,ed->be", x, gate_kernel[..., 0]) + gate_bias, axis=-1)
            low = jnp.tanh(jnp.einsum("bd,edr->ber", x, v))
            low = jnp.tanh(jnp.einsum("ber,ers->bes", low, c))
            experts_out = x0[:, None, :] * (jnp.einsum("bes,esd->bed", low, u) + b)  # [B, E, D]
            x = x + jnp.einsum("be,bed->bd", gates, experts_out)
        return x


class DCNV2(CTRModel):
    """DCN-V2: features -> logits [B, num_outputs] from cross layers and a batch-norm MLP over the
    flat embeddings [B, F * d] (`structure` parallel or stacked); `penalty(params)`: reg_weight *
    the cross weights' norms; fields: hyper-parameters (authors' ML-1M defaults)."""

    structure: str = "parallel"
    cross_layer_num: int = 2
    mixed: bool = False
    expert_num: int = 4
    low_rank: int = 128
    mlp_hidden_size: tuple[int, ...] = (256, 256, 256)
    dropout_prob: float = 0.2
    reg_weight: float = 2.0
    cross_init: str = "normal"

    def _check(self) -> None:
        if self.structure not in _STRUCTURES:
            raise ValueError(f"DCNV2.structure must be one of {_STRUCTURES}, got {self.structure!r}")
        if self.cross_init not in _CROSS_INITS:
            raise ValueError(f"DCNV2.cross_init must be one of {_CROSS_INITS}, got {self.cross_init!r}")

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        self._check()
        emb = self.field_embeddings(features, embedding_offset)  # [B, F, d]
        x0 = emb.reshape(emb.shape[0], -1)  # [B, D]
        if self.mixed:
            cross = MixedCrossNetwork(
                self.cross_layer_num, self.expert_num, self.low_rank, self.cross_init, name="cross"
            )(x0)
        else:
            cross = CrossNetwork(self.cross_layer_num, self.cross_init, name="cross")(x0)
        mlp = MLP(self.mlp_hidden_size, self.dropout_prob, batch_norm=True, name="mlp")
        if self.structure == "parallel":
            top = jnp.concatenate([cross, mlp(x0, deterministic)], axis=-1)
        else:
            top = mlp(cross, deterministic)
        return prediction_layer(self.num_outputs)(top)  # [B, K]

    def penalty(self, params) -> jax.Array:
        """reg_weight * sum over cross layers of ||W_l||_F (mixed: ||U_l|| + ||V_l|| + ||C_l||)."""
        cross = params["cross"]
        prefixes = ("u_", "v_", "c_") if self.mixed else ("w_",)
        weights = [cross[f"{p}{layer}"] for p in prefixes for layer in range(self.cross_layer_num)]
        return self.reg_weight * sum_of_norms(weights)
