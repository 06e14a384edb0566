"""Theorem 1, the softmax alone: Jacobian norms of p = softmax(z / tau) against the paper's bound.

The Jacobian is J = (diag(p) - p p^T) / tau and, writing s2 = sum p_i^2 and s3 = sum p_i^3,

    tau^2 ||J||_F^2 = s2 - 2 s3 + s2^2.

At uniform logits ||J||_F = sqrt(N - 1) / (N tau) < 1 / (tau sqrt(N)) (the paper's bound). Its
supremum over the simplex, for every N >= 2, is exactly 1 / (2 tau): by Cauchy-Schwarz
s2^2 = (sum p^(1/2) p^(3/2))^2 <= (sum p)(sum p^3) = s3, hence
tau^2 ||J||_F^2 <= s2 - s2^2 = s2 (1 - s2) <= 1/4, with equality iff p is uniform on its support
(Cauchy-Schwarz) and s2 = 1/2, i.e. p uniform on exactly two classes. So the paper's bound
1 / sqrt(N) holds everywhere only for N <= 4; for N >= 5 it fails near two-class distributions.
Trained models' local Lipschitz constants are measured in lipctr.lipschitz.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd


def _check_logits(logits, ndim: int, name: str = "logits") -> jax.Array:
    logits = jnp.asarray(logits)
    if logits.ndim != ndim or logits.shape[-1] < 2:
        shape = "[N]" if ndim == 1 else "[M, N]"
        raise ValueError(f"{name} must have shape {shape} with N >= 2, got {logits.shape}")
    return logits


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"temperature tau must be > 0, got {tau}")


def softmax_jacobian(logits, tau: float = 1.0) -> jax.Array:
    """d softmax(z / tau) / dz by jax.jacfwd: logits [N] -> [N, N]."""
    _check_tau(tau)
    logits = _check_logits(logits, 1)
    return jax.jacfwd(lambda z: jax.nn.softmax(z / tau))(logits)


def softmax_jacobian_closed_form(logits, tau: float = 1.0) -> jax.Array:
    """(diag(p) - p p^T) / tau with p = softmax(z / tau): logits [N] -> [N, N]."""
    _check_tau(tau)
    p = jax.nn.softmax(_check_logits(logits, 1) / tau)
    return (jnp.diag(p) - jnp.outer(p, p)) / tau


def frobenius_norm_from_probs(probs, tau: float = 1.0) -> jax.Array:
    """||J||_F = sqrt(s2 - 2 s3 + s2^2) / tau from probabilities [..., N] -> [...]."""
    s2 = jnp.sum(probs**2, axis=-1)
    s3 = jnp.sum(probs**3, axis=-1)
    return jnp.sqrt(jnp.maximum(s2 - 2.0 * s3 + s2**2, 0.0)) / tau


@jax.jit
def _frobenius_chunk(logits, tau):
    return jax.vmap(lambda z: jnp.linalg.norm(jax.jacfwd(lambda y: jax.nn.softmax(y / tau))(z)))(logits)


def jacobian_frobenius_norms(logits, tau: float = 1.0, chunk_size: int = 4096) -> np.ndarray:
    """||J||_F of the jacfwd softmax Jacobian for each row: logits [M, N] -> [M]."""
    _check_tau(tau)
    logits = _check_logits(logits, 2)
    parts = [_frobenius_chunk(logits[s : s + chunk_size], tau) for s in range(0, logits.shape[0], chunk_size)]
    return np.concatenate([np.asarray(p) for p in parts]) if parts else np.zeros(0)


def uniform_norm(num_classes: int, tau: float = 1.0) -> float:
    """||J||_F at uniform logits: sqrt(N - 1) / (N tau)."""
    return float(np.sqrt(num_classes - 1) / (num_classes * tau))


def paper_bound(num_classes: int, tau: float = 1.0) -> float:
    """The bound of Theorem 1 on ||J||_F, 1 / sqrt(N), scaled by 1 / tau like the Jacobian."""
    return float(1.0 / (tau * np.sqrt(num_classes)))


def supremum_norm(tau: float = 1.0) -> float:
    """sup of ||J||_F over the simplex for any N >= 2: 1 / (2 tau), at p uniform on two classes."""
    return 0.5 / tau


def norm_vs_bandwidth(class_counts: Iterable[int] = range(2, 65), tau: float = 1.0) -> pd.DataFrame:
    """One row per N: jacfwd ||J||_F at uniform logits, its closed form, the paper's bound and the
    supremum; `bound_holds_everywhere` is sup <= bound, i.e. N <= 4.

    All N share one compiled call: row N holds N zero logits padded with -inf, whose classes get
    probability exactly 0 and so add only zero rows and columns to J.
    """
    class_counts = [int(n) for n in class_counts]
    if not class_counts or min(class_counts) < 2:
        raise ValueError(f"class_counts must be non-empty with every N >= 2, got {class_counts}")
    width = max(class_counts)
    padded = np.full((len(class_counts), width), -np.inf)
    for row, n in enumerate(class_counts):
        padded[row, :n] = 0.0
    norms = jacobian_frobenius_norms(padded, tau)
    return pd.DataFrame(
        {
            "N": class_counts,
            "norm_uniform": norms,
            "norm_uniform_closed_form": [uniform_norm(n, tau) for n in class_counts],
            "paper_bound": [paper_bound(n, tau) for n in class_counts],
            "supremum": supremum_norm(tau),
            "bound_holds_everywhere": [n <= 4 for n in class_counts],
        }
    )


@dataclasses.dataclass(frozen=True)
class NormDistribution:
    """Per-example ||J||_F [M] of N-way softmax Jacobians, against the paper's bound."""

    norms: np.ndarray
    num_classes: int
    tau: float

    @property
    def bound(self) -> float:
        return paper_bound(self.num_classes, self.tau)

    @property
    def fraction_above(self) -> float:
        """Fraction of examples with ||J||_F > the paper's bound (where Theorem 1 fails)."""
        return float(np.mean(self.norms > self.bound)) if self.norms.size else float("nan")

    def summary(self) -> dict:
        return {
            "N": self.num_classes,
            "tau": self.tau,
            "count": int(self.norms.size),
            "mean": float(np.mean(self.norms)),
            "median": float(np.median(self.norms)),
            "max": float(np.max(self.norms)),
            "paper_bound": self.bound,
            "uniform": uniform_norm(self.num_classes, self.tau),
            "supremum": supremum_norm(self.tau),
            "fraction_above_bound": self.fraction_above,
        }


def jacobian_norm_distribution(logits, tau: float = 1.0) -> NormDistribution:
    """||J||_F for each row of logits [M, N] (random, or a trained model's test logits)."""
    logits = _check_logits(logits, 2)
    return NormDistribution(jacobian_frobenius_norms(logits, tau), int(logits.shape[1]), float(tau))


def random_logits(key: jax.Array, num: int, num_classes: int, scale: float) -> jax.Array:
    """Gaussian logits of standard deviation `scale`: [num, num_classes]. Small scale = near uniform."""
    return scale * jax.random.normal(key, (num, num_classes))


def norm_distribution_by_scale(
    key: jax.Array,
    num_classes: int,
    scales: Iterable[float] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0),
    num: int = 2000,
    tau: float = 1.0,
) -> pd.DataFrame:
    """One summary row (NormDistribution.summary plus `scale`) per logit scale."""
    rows = []
    for i, scale in enumerate(scales):
        logits = random_logits(jax.random.fold_in(key, i), num, num_classes, scale)
        rows.append({"scale": float(scale), **jacobian_norm_distribution(logits, tau).summary()})
    return pd.DataFrame(rows)
