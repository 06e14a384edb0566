"""DCNv3 (Li et al. 2024: linear and exponential cross networks), as FuxiCTR's model zoo defines it.

Embeddings: one table of width H * d per field; each head h takes its d columns, and its input
is x_0 = [first halves of the F field vectors || second halves] [B, H, D], D = F * d
(FuxiCTR's MultiHeadFeatureEmbedding). Cross layer l of either network, on [B, H, D]:

  h = x_l W_l                      W_l [D, D/2], bias-free, shared by the heads
  m = relu(LayerNorm(h))           the self-mask (relu(h) without layer_norm)
  c = [h || h * m] + b_l           b_l [D] uniform(0, 1)
  LCN (shallow, linear):      x_{l+1} = dropout(x_0 * c + x_l)
  ECN (deep, exponential):    x_{l+1} = dropout(x_l * c + x_l)

Each network ends in a dense K layer, averaged over the heads; logits = (ECN + LCN) / 2 [B, K].
`batch_norm` adds FuxiCTR's BatchNorm1d over the head axis on h.

`tri_bce=True` (off by default): the training step (lipctr.train.loss_fn) adds the paper's
Tri-BCE terms, loss = L + w_d L_d + w_s L_s, with L the data loss of the logits, L_d, L_s the same
loss (the multi-head loss of the variant, no L2 term) on each network's own logits [B, K], and
w_b = max(L_b - L, 0), not detached, as in FuxiCTR (`tri_bce_terms`). In training the model
then sows the two branch logits into the "intermediates" collection.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipctr.models.base import CTRModel, Dropout, FeatureEmbedding, xavier_normal, zeros


def head_inputs(emb: jax.Array, num_heads: int) -> jax.Array:
    """[B, F, H * d] -> [B, H, F * d]: per head, all fields' first d/2 columns, then their second."""
    batch, fields, width = emb.shape
    d = width // num_heads
    heads = jnp.swapaxes(emb.reshape(batch, fields, num_heads, d), 1, 2)  # [B, H, F, d]
    first = -(-d // 2)  # torch.tensor_split gives the first chunk the extra column
    return jnp.concatenate([heads[..., :first].reshape(batch, num_heads, -1),
                            heads[..., first:].reshape(batch, num_heads, -1)], axis=-1)


class CrossNetwork(nn.Module):
    """LCN (`exponential=False`) or ECN: [B, H, D] -> logits [B, K] (mean over heads)."""

    num_layers: int
    num_outputs: int
    exponential: bool
    dropout: float | jax.Array = 0.0
    layer_norm: bool = True
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x0: jax.Array, deterministic: bool) -> jax.Array:
        width = x0.shape[-1]
        x = x0
        for layer in range(self.num_layers):
            h = nn.Dense(width // 2, use_bias=False, kernel_init=xavier_normal, name=f"w_{layer}")(x)
            if self.batch_norm:
                h = nn.BatchNorm(use_running_average=deterministic, axis=1, momentum=0.9, epsilon=1e-5,
                                 name=f"batch_norm_{layer}")(h)
            normed = nn.LayerNorm(epsilon=1e-5, name=f"layer_norm_{layer}")(h) if self.layer_norm else h
            b = self.param(f"b_{layer}", nn.initializers.uniform(scale=1.0), (width,)).astype(x.dtype)
            c = jnp.concatenate([h, h * nn.relu(normed)], axis=-1) + b
            x = (x if self.exponential else x0) * c + x
            x = Dropout(self.dropout)(x, deterministic)
        logits = nn.Dense(self.num_outputs, kernel_init=xavier_normal, bias_init=zeros, name="output")(x)
        return logits.mean(axis=1)


class DCNv3(CTRModel):
    num_deep_cross_layers: int = 4
    num_shallow_cross_layers: int = 4
    deep_net_dropout: float = 0.1
    shallow_net_dropout: float = 0.3
    layer_norm: bool = True
    batch_norm: bool = False
    num_heads: int = 1
    tri_bce: bool = False

    def _check(self) -> None:
        if self.num_heads < 1:
            raise ValueError(f"DCNv3.num_heads must be >= 1, got {self.num_heads}")
        if (self.schema.num_fields * self.embedding_dim) % 2:
            raise ValueError(f"DCNv3: fields x embedding_dim = {self.schema.num_fields} x {self.embedding_dim} "
                             "must be even (each cross layer maps D to D/2 and back to D)")

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        self._check()
        emb = FeatureEmbedding(self.schema, self.embedding_dim * self.num_heads, name="embedding")(features)
        if embedding_offset is not None and embedding_offset.shape[-1] != emb.shape[-1]:
            raise ValueError(f"DCNv3 with num_heads={self.num_heads}: embedding_offset must be [B, F, "
                             f"{emb.shape[-1]}] (H * d), got {embedding_offset.shape}; the embedding analyses "
                             "take [B, F, d] and so need num_heads=1")
        emb = emb if embedding_offset is None else emb + embedding_offset  # [B, F, H * d]
        x0 = head_inputs(emb, self.num_heads)  # [B, H, D]
        norms = {"layer_norm": self.layer_norm, "batch_norm": self.batch_norm}
        deep = CrossNetwork(self.num_deep_cross_layers, self.num_outputs, True, self.deep_net_dropout,
                            **norms, name="ecn")(x0, deterministic)
        shallow = CrossNetwork(self.num_shallow_cross_layers, self.num_outputs, False, self.shallow_net_dropout,
                               **norms, name="lcn")(x0, deterministic)
        if self.tri_bce and not deterministic:  # read by tri_bce_terms in the training loss
            self.sow("intermediates", "branch_logits", jnp.stack([deep, shallow]))  # [2, B, K]
        return 0.5 * (deep + shallow)  # [B, K]

    @staticmethod
    def tri_bce_terms(loss_of, logits: jax.Array, intermediates) -> jax.Array:
        """sum over the ECN and LCN logits of L_b * max(L_b - L, 0), L = loss_of(logits) and
        L_b = loss_of(branch logits) (loss_of: logits [B, K] -> the data loss [])."""
        (branches,) = intermediates["branch_logits"]  # [2, B, K]
        main = loss_of(logits)
        terms = [loss_of(branches[i]) for i in range(branches.shape[0])]
        return sum((term * jnp.maximum(term - main, 0.0) for term in terms), jnp.zeros(()))
