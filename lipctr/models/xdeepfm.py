"""xDeepFM (Lian et al. 2018), as RecBole 1.2.1 defines it, with every branch K wide.

logits = first-order linear [B, K] + CIN -> sum-pool over d -> linear [B, K] + DNN [B, K].

CIN layer k: z = X^{k-1} (outer) X^0 over fields, per embedding dim -> a 1x1 convolution
(a dense layer over the H_{k-1} * F channels) -> ReLU. With `direct=False` every layer but the
last sends half its maps to the output and half to the next layer; with `direct=True` all of
them go to both.

The DNN is RecBole's MLP followed by dropout and the K-wide output layer, WITHOUT RecBole's
ReLU after that output layer (a quirk that forces the DNN logit to be >= 0).

Explicit L2 (RecBole's calculate_reg_loss): reg_weight * (sum of the Frobenius norms of the DNN
kernels, of the CIN kernels and of the first-order weights, grouped as RecBole stores them);
biases, embeddings and the CIN output layer are not penalised.

`scalar_side_branches=True` keeps the first-order and CIN outputs width 1 under a K-wide head,
broadcast to every logit, as the authors' code does.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from lipctr.models.base import MLP, CTRModel, Dropout, FirstOrderLinear, prediction_layer, xavier_normal, zeros
from lipctr.models.regularization import first_order_norm, sum_of_norms


def cin_output_width(layer_sizes: Sequence[int], direct: bool) -> int:
    """Number of CIN feature maps sent to the output."""
    if direct:
        return sum(layer_sizes)
    return sum(size // 2 for size in layer_sizes[:-1]) + layer_sizes[-1]


@jax.custom_vjp
def feature_map_dense(z: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """CIN's 1x1 convolution: [B, d, C] @ [C, O] + [O] -> [B, d, O], the values of nn.Dense.

    Its backward runs the kernel gradient as one 2-D dot, [B*d, C]^T @ [B*d, O]. For nn.Dense on
    the 3-D input XLA:CPU chose a transposed copy of the cotangent and a dot it runs at about half
    the rate (ML-100K: 127 vs 233 GFLOP/s, benchmarks/profile_epoch.py). The bias gradient is the
    same sum over (B, d) as nn.Dense's; the optimization barrier stops XLA fusing that sum into the
    cotangent's producer, which changes its summation order. So the gradients are bit-identical to
    nn.Dense's on XLA:CPU (tests/test_interaction_layers.py)."""
    b, d, c = z.shape
    return (z.reshape(b * d, c) @ kernel + bias).reshape(b, d, -1)


def _feature_map_dense_forward(z, kernel, bias):
    return feature_map_dense(z, kernel, bias), (z, kernel)


def _feature_map_dense_backward(residuals, cotangent):
    z, kernel = residuals
    b, d, c = z.shape
    flat = cotangent.reshape(b * d, -1)  # [B*d, O]
    bias = jax.lax.optimization_barrier(cotangent).sum(axis=(0, 1))
    return (flat @ kernel.T).reshape(z.shape), z.reshape(b * d, c).T @ flat, bias


feature_map_dense.defvjp(_feature_map_dense_forward, _feature_map_dense_backward)


class FeatureMapDense(nn.Module):
    """nn.Dense over the last axis of [B, d, C] (params "kernel" [C, O], "bias" [O], initialised
    as nn.Dense's) through `feature_map_dense`."""

    features: int

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        kernel = self.param("kernel", xavier_normal, (z.shape[-1], self.features))
        bias = self.param("bias", zeros, (self.features,))
        return feature_map_dense(*promote_dtype(z, kernel, bias, dtype=None))  # nn.Dense's dtype rule


class CIN(nn.Module):
    """Compressed interaction network: [B, F, d] -> sum-pooled feature maps [B, cin_output_width]."""

    layer_sizes: tuple[int, ...]
    direct: bool = False

    @nn.compact
    def __call__(self, x0: jax.Array) -> jax.Array:
        batch, fields, dim = x0.shape
        base = jnp.swapaxes(x0, 1, 2)  # [B, d, F]
        hidden, outputs = base, []
        for index, size in enumerate(self.layer_sizes):
            z = (hidden[..., :, None] * base[..., None, :]).reshape(batch, dim, -1)  # [B, d, H*F]
            maps = nn.relu(FeatureMapDense(size, name=f"conv_{index}")(z))
            if self.direct or index == len(self.layer_sizes) - 1:
                hidden, direct_maps = maps, maps
            else:
                hidden, direct_maps = maps[..., : size // 2], maps[..., size // 2 :]
            outputs.append(direct_maps)
        return jnp.concatenate(outputs, axis=-1).sum(axis=1)


class XDeepFM(CTRModel):
    """xDeepFM: features -> logits [B, num_outputs] = first-order + CIN + DNN, each K wide;
    `penalty(params)`: reg_weight * the DNN, CIN and first-order weight norms; fields: hyper-parameters."""

    mlp_hidden_size: tuple[int, ...] = (512, 512, 512)
    cin_layer_size: tuple[int, ...] = (200, 200, 200)
    dropout_prob: float = 0.1
    reg_weight: float = 5e-4
    direct: bool = False
    scalar_side_branches: bool = False
    first_order_pooling: str = "mean"  # a token_seq field's first-order weights: "mean", or "sum" as RecBole

    def _check(self) -> None:
        if not self.cin_layer_size:
            raise ValueError("XDeepFM.cin_layer_size must name at least one CIN layer")
        odd = [size for size in self.cin_layer_size[:-1] if size % 2]
        if not self.direct and odd:
            raise ValueError(
                f"XDeepFM.cin_layer_size {self.cin_layer_size}: with direct=False every layer but "
                f"the last is split in half, so it must be even (odd: {odd})"
            )

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        self._check()
        emb = self.field_embeddings(features, embedding_offset)  # [B, F, d]
        cin = CIN(tuple(self.cin_layer_size), self.direct, name="cin")(emb)
        cin_logits = prediction_layer(self.side_outputs, name="cin_output")(cin)
        hidden = MLP(self.mlp_hidden_size, self.dropout_prob, name="mlp")(emb.reshape(emb.shape[0], -1), deterministic)
        hidden = Dropout(self.dropout_prob)(hidden, deterministic)
        dnn_logits = prediction_layer(self.num_outputs, name="dnn_output")(hidden)
        first_order = FirstOrderLinear(self.schema, self.side_outputs, self.first_order_pooling, name="first_order")
        linear = first_order(features)
        return linear + cin_logits + dnn_logits  # [B, K]

    def penalty(self, params) -> jax.Array:
        """reg_weight * (DNN kernel norms + CIN kernel norms + grouped first-order weight norms)."""
        dnn = [layer["kernel"] for layer in params["mlp"].values()] + [params["dnn_output"]["kernel"]]
        cin = [layer["kernel"] for layer in params["cin"].values()]
        linear = first_order_norm(params["first_order"]["weights"], self.schema)
        return self.reg_weight * (sum_of_norms(dnn) + sum_of_norms(cin) + linear)
