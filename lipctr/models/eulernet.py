"""EulerNet (Tian et al. 2023), as RecBole 1.2.1 defines it.

Each field embedding e_f [d] becomes a complex vector mu_f e^{i e_f} (r = mu cos e, p = mu sin e).
An Euler interaction layer maps F_in complex fields to F_out:

- explicit part: in polar form, log-modulus and phase of the inputs are mixed linearly by the
  learned orders [F_in, F_out] (plus biases), i.e. out_o = prod_f z_f^{orders[f, o]}, and
  converted back: lam cos(theta), lam sin(theta);
- implicit part: ReLU(W r), ReLU(W p) with one linear map W shared by real and imaginary parts.

Their sum is the layer output. The final `reg` layer (K wide) is applied to the flat real and
imaginary parts and the two results are added (its bias therefore counts twice, as in RecBole).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipctr.models.base import CTRModel, Dropout, zeros


def init_orders(key, shape, dtype=jnp.float32):
    """Orders [F_in, F_out] as RecBole draws them: softmax over F_in of N(0, 1) / 0.01."""
    return jax.nn.softmax(jax.random.normal(key, shape, dtype) / 0.01, axis=0)


def l2_norm(x: jax.Array) -> jax.Array:
    """Frobenius norm of x (not squared, as torch.norm), with a zero gradient at x = 0."""
    squared = jnp.sum(jnp.square(x))
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


class EulerInteractionLayer(nn.Module):
    """(r, p) [B, F_in, d] each -> (r, p) [B, out_fields, d] each."""

    out_fields: int
    drop_ex: float = 0.0
    drop_im: float = 0.0
    apply_norm: bool = False

    @nn.compact
    def __call__(self, r: jax.Array, p: jax.Array, deterministic: bool):
        batch, in_fields, dim = r.shape
        orders = self.param("inter_orders", init_orders, (in_fields, self.out_fields))
        small = nn.initializers.normal(0.01)
        bias_lam = self.param("bias_lam", small, (dim, self.out_fields))
        bias_theta = self.param("bias_theta", small, (dim, self.out_fields))

        def drop(rate, x):
            return Dropout(rate)(x, deterministic)

        log_modulus = drop(self.drop_ex, 0.5 * jnp.log(r**2 + p**2 + 1e-8))
        phase = drop(self.drop_ex, jnp.arctan2(p, r))
        lam = jnp.exp(jnp.einsum("bfd,fo->bod", log_modulus, orders) + bias_lam.T)
        theta = jnp.einsum("bfd,fo->bod", phase, orders) + bias_theta.T

        implicit = nn.Dense(
            self.out_fields * dim, kernel_init=nn.initializers.normal(0.1), bias_init=zeros, name="im"
        )

        def implicit_part(x):
            return nn.relu(implicit(drop(self.drop_im, x).reshape(batch, -1))).reshape(batch, -1, dim)

        out_r = implicit_part(r) + lam * jnp.cos(theta)
        out_p = implicit_part(p) + lam * jnp.sin(theta)
        if self.apply_norm:
            out_r = nn.LayerNorm(epsilon=1e-5, name="norm_r")(out_r)
            out_p = nn.LayerNorm(epsilon=1e-5, name="norm_p")(out_p)
        return out_r, out_p


class EulerNet(CTRModel):
    """EulerNet: features -> logits [B, num_outputs] from Euler interaction layers over complex field
    vectors [B, F, d]; `penalty(params)`: reg_weight * the Euler layers' norms; fields: hyper-parameters."""

    order_list: tuple[int, ...] = (8,)
    drop_ex: float = 0.3
    drop_im: float = 0.5
    apply_norm: bool = False
    reg_weight: float = 5e-4

    @nn.compact
    def __call__(self, features, *, deterministic: bool = True, embedding_offset=None):
        if not self.order_list:
            raise ValueError("EulerNet order_list must name at least one layer width, got ()")
        emb = self.field_embeddings(features, embedding_offset)  # [B, F, d]
        mu = self.param("mu", nn.initializers.ones, (emb.shape[1], 1))
        r, p = mu * jnp.cos(emb), mu * jnp.sin(emb)
        for i, width in enumerate(self.order_list):
            r, p = EulerInteractionLayer(
                width, self.drop_ex, self.drop_im, self.apply_norm, name=f"euler_{i}"
            )(r, p, deterministic)
        reg = nn.Dense(
            self.num_outputs, kernel_init=nn.initializers.normal(0.01), bias_init=zeros, name="reg"
        )
        batch = emb.shape[0]
        return reg(r.reshape(batch, -1)) + reg(p.reshape(batch, -1))  # [B, K]

    def penalty(self, params) -> jax.Array:
        """reg_weight * sum of the (unsquared) L2 norms of every parameter tensor of the Euler
        layers, mu and the reg layer, as RecBole's EulerNet.RegularLoss; embeddings excluded.
        `params` is the "params" collection."""
        names = [f"euler_{i}" for i in range(len(self.order_list))] + ["mu", "reg"]
        missing = [name for name in names if name not in params]
        if missing:
            raise KeyError(
                f"EulerNet.penalty expects the 'params' collection with {names}; missing {missing}"
            )
        leaves = jax.tree.leaves([params[name] for name in names])
        return self.reg_weight * sum(l2_norm(leaf) for leaf in leaves)
