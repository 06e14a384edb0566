"""FuxiCTR's MLP_Block, the MLP of its model zoo (FinalMLP, GDCN).

Per hidden layer: dense -> [batch-norm] -> activation -> dropout (dropout AFTER the activation,
unlike RecBole's MLPLayers in lipctr.models.base.MLP); then an optional output dense layer and
output activation. Dense weights xavier-normal, biases zero (FuxiCTR's reset_parameters).
[B, D] -> [B, hidden[-1]] (or [B, output_dim]).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from lipctr.models.base import Dropout, xavier_normal, zeros

ACTIVATIONS = {"relu": nn.relu, "sigmoid": nn.sigmoid, "tanh": nn.tanh}


class MLPBlock(nn.Module):
    hidden: Sequence[int]
    dropout: float | jax.Array = 0.0
    batch_norm: bool = False
    activation: str = "relu"
    output_dim: int | None = None
    output_activation: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width, kernel_init=xavier_normal, bias_init=zeros)(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=deterministic, momentum=0.9, epsilon=1e-5)(x)
            x = Dropout(self.dropout)(ACTIVATIONS[self.activation](x), deterministic)
        if self.output_dim is not None:
            x = nn.Dense(self.output_dim, kernel_init=xavier_normal, bias_init=zeros, name="output")(x)
        if self.output_activation is not None:
            x = ACTIVATIONS[self.output_activation](x)
        return x
