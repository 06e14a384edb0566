"""Theorem 1, measured: softmax-Jacobian norms and local Lipschitz constants of trained models.

Part 1, the softmax alone. For p = softmax(z / tau) the Jacobian is J = (diag(p) - p p^T) / tau
and, writing s2 = sum p_i^2 and s3 = sum p_i^3,

    tau^2 ||J||_F^2 = s2 - 2 s3 + s2^2.

At uniform logits ||J||_F = sqrt(N - 1) / (N tau) < 1 / (tau sqrt(N)) (the paper's bound). Its
supremum over the simplex, for every N >= 2, is exactly 1 / (2 tau): by Cauchy-Schwarz
s2^2 = (sum p^(1/2) p^(3/2))^2 <= (sum p)(sum p^3) = s3, hence
tau^2 ||J||_F^2 <= s2 - s2^2 = s2 (1 - s2) <= 1/4, with equality iff p is uniform on its support
(Cauchy-Schwarz) and s2 = 1/2, i.e. p uniform on exactly two classes. So the paper's bound
1 / sqrt(N) holds everywhere only for N <= 4; for N >= 5 it fails near two-class distributions.

Part 2, trained models. `apply_fn(features, offset) -> logits [B, K]` with offset [B, F, d] added
to the field embeddings (see lipctr.models.base); or, with `variables=...`,
`apply_fn(variables, features, offset)`, which compiles once for all members of a model.
Per example, at offset 0, we measure
- the L2 norm of the gradient of the click probability p_hat (lipctr.losses.click_probability)
  w.r.t. the F*d concatenated field embeddings (`input_gradient_norms`);
- the spectral norm of the Jacobian of the probability vector (softmax over K logits, or
  [p, 1 - p] for K = 1) or of the logits themselves, by power iteration with jvp / vjp, with a
  central finite difference along the found direction as a check (`input_spectral_norms`).
Examples are processed one at a time under vmap (no cross-example coupling is assumed; keep
batch-norm in eval mode), in chunks of `chunk_size` to bound memory.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lipctr.losses import Aggregation, click_probability

ApplyFn = Callable[[Mapping[str, jax.Array], jax.Array], jax.Array]
Output = Literal["probs", "logits"]


# ---------------------------------------------------------------- part 1: the softmax Jacobian


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


def norm_vs_bandwidth(Ns: Iterable[int] = range(2, 65), tau: float = 1.0) -> pd.DataFrame:
    """One row per N: jacfwd ||J||_F at uniform logits, its closed form, the paper's bound and the
    supremum; `bound_holds_everywhere` is sup <= bound, i.e. N <= 4.

    All N share one compiled call: row N holds N zero logits padded with -inf, whose classes get
    probability exactly 0 and so add only zero rows and columns to J.
    """
    Ns = [int(n) for n in Ns]
    if not Ns or min(Ns) < 2:
        raise ValueError(f"Ns must be non-empty with every N >= 2, got {Ns}")
    width = max(Ns)
    padded = np.full((len(Ns), width), -np.inf)
    for row, n in enumerate(Ns):
        padded[row, :n] = 0.0
    norms = jacobian_frobenius_norms(padded, tau)
    return pd.DataFrame(
        {
            "N": Ns,
            "norm_uniform": norms,
            "norm_uniform_closed_form": [uniform_norm(n, tau) for n in Ns],
            "paper_bound": [paper_bound(n, tau) for n in Ns],
            "supremum": supremum_norm(tau),
            "bound_holds_everywhere": [n <= 4 for n in Ns],
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


# ---------------------------------------------------------- part 2: Lipschitz constants of models


def _num_examples(features: Mapping[str, jax.Array]) -> int:
    if not features:
        raise ValueError("features must be a non-empty dict of per-field arrays")
    lengths = {name: int(np.shape(a)[0]) for name, a in features.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"feature arrays must share their first dimension, got {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("features hold no examples")
    return n


def _check_emb_shape(emb_shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in emb_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"emb_shape must be (num_fields, embedding_dim), got {emb_shape}")
    return shape


def _example_logits(apply_fn, emb_shape, dtype) -> Callable:
    """(variables, one example's features, flat offset [F*d]) -> logits [K], via a batch of one.
    apply_fn(variables, batch, offset) -> logits [B, K]."""

    def logits_fn(variables, example, flat_offset):
        batch = jax.tree.map(lambda a: a[None], example)
        logits = apply_fn(variables, batch, flat_offset.astype(dtype).reshape((1, *emb_shape)))
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise ValueError(f"apply_fn must return logits [B, K]; for B = 1 it returned {logits.shape}")
        return logits[0]

    return logits_fn


def _bind(apply_fn, variables):
    """(apply_fn taking (variables, batch, offset), variables). Without `variables`, apply_fn is
    called as apply_fn(batch, offset); with them, as apply_fn(variables, batch, offset), and the
    compiled programs (cached per apply_fn) take the variables as an argument, so measuring many
    members of one model compiles once."""
    if variables is None:
        return (lambda _, batch, offset: apply_fn(batch, offset)), ()
    return apply_fn, variables


def probability_vector(logits: jax.Array) -> jax.Array:
    """Class probabilities [..., K'] of logits [..., K]: softmax for K > 1, [p, 1 - p] for K = 1."""
    if logits.shape[-1] == 1:
        p = jax.nn.sigmoid(logits)
        return jnp.concatenate([p, 1.0 - p], axis=-1)
    return jax.nn.softmax(logits, axis=-1)


def _map_chunks(fn: Callable, variables, features, extra: np.ndarray, chunk_size: int) -> list[np.ndarray]:
    """fn(variables, chunk features, chunk extra) over fixed-size chunks (the last padded by
    repetition); returns fn's outputs, each cut back to the real examples and concatenated."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n = _num_examples(features)
    size = min(chunk_size, n)
    host = {name: np.asarray(a) for name, a in features.items()}
    outputs = []
    for start in range(0, n, size):
        idx = np.minimum(np.arange(start, start + size), n - 1)
        out = fn(variables, {name: a[idx] for name, a in host.items()}, extra[idx])
        outputs.append([np.asarray(o)[: n - start] for o in out])
    return [np.concatenate(col) for col in zip(*outputs)]


@functools.lru_cache(maxsize=32)
def _gradient_norm_program(apply_fn, emb_shape, threshold, aggregation, mode, dtype):
    logits_fn = _example_logits(apply_fn, emb_shape, dtype)
    jac = jax.jacfwd if mode == "jacfwd" else jax.jacrev
    size = emb_shape[0] * emb_shape[1]

    def one(variables, example):
        p_hat = lambda x: click_probability(logits_fn(variables, example, x)[None], threshold, aggregation)[0]  # noqa: E731
        return jnp.linalg.norm(jac(p_hat)(jnp.zeros(size, dtype)))

    return jax.jit(lambda variables, feats, _: (jax.vmap(one, in_axes=(None, 0))(variables, feats),))


@functools.lru_cache(maxsize=32)
def _spectral_norm_program(apply_fn, emb_shape, output, num_iters, fd_step, dtype):
    logits_fn = _example_logits(apply_fn, emb_shape, dtype)
    size = emb_shape[0] * emb_shape[1]

    def one(variables, key, example, index):
        def out(x):
            logits = logits_fn(variables, example, x)
            return probability_vector(logits) if output == "probs" else logits

        x0 = jnp.zeros(size, dtype)
        _, jvp_fn = jax.linearize(out, x0)
        vjp_fn = jax.linear_transpose(jvp_fn, x0)

        def step(_, v):
            w = vjp_fn(jvp_fn(v))[0]
            return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(dtype).tiny)

        v = jax.random.normal(jax.random.fold_in(key, index), (size,), dtype)
        v = jax.lax.fori_loop(0, num_iters, step, v / jnp.linalg.norm(v))
        sigma = jnp.linalg.norm(jvp_fn(v))
        fd = jnp.linalg.norm(out(x0 + fd_step * v) - out(x0 - fd_step * v)) / (2.0 * fd_step)
        return sigma, fd

    return jax.jit(lambda bound, feats, index: jax.vmap(one, in_axes=(None, None, 0, 0))(*bound, feats, index))


def input_gradient_norms(
    apply_fn: ApplyFn,
    features: Mapping[str, jax.Array],
    emb_shape: tuple[int, int],
    threshold: int = 3,
    aggregation: Aggregation = "prob",
    chunk_size: int = 256,
    mode: Literal["jacfwd", "jacrev"] = "jacfwd",
    dtype=jnp.float32,
    variables=None,
) -> np.ndarray:
    """||d p_hat / d e||_2 per example at offset 0, e the [F*d] concatenated field embeddings: [n].

    mode "jacfwd" (F*d forward tangents) or "jacrev" (one backward pass; same numbers, cheaper).
    """
    emb_shape = _check_emb_shape(emb_shape)
    if mode not in ("jacfwd", "jacrev"):
        raise ValueError(f"mode must be 'jacfwd' or 'jacrev', got {mode!r}")
    apply_fn, variables = _bind(apply_fn, variables)
    program = _gradient_norm_program(apply_fn, emb_shape, threshold, aggregation, mode, dtype)
    n = _num_examples(features)
    return _map_chunks(program, variables, features, np.zeros(n), chunk_size)[0]


def input_spectral_norms(
    apply_fn: ApplyFn,
    features: Mapping[str, jax.Array],
    emb_shape: tuple[int, int],
    output: Output = "probs",
    num_iters: int = 100,
    fd_step: float = 1e-3,
    key: jax.Array | None = None,
    chunk_size: int = 256,
    dtype=jnp.float32,
    variables=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example spectral norm of d out / d e at offset 0, out = the probability vector
    (`probability_vector`) or the logits; e = the [F*d] concatenated field embeddings.

    Power iteration v <- J^T J v / ||J^T J v|| (jvp / vjp of one linearisation) from a random
    start, sigma = ||J v||, a lower bound converging at rate (sigma_2 / sigma_1)^(2 num_iters).
    Returns (sigma [n], fd [n]) with fd = ||out(e + h v) - out(e - h v)|| / 2h the central finite
    difference along the final v (h = fd_step), an independent check; in float32 its error is
    about eps / h, and larger where a ReLU kink lies within h of e.
    """
    emb_shape = _check_emb_shape(emb_shape)
    if output not in ("probs", "logits"):
        raise ValueError(f"output must be 'probs' or 'logits', got {output!r}")
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    key = jax.random.key(0) if key is None else key
    apply_fn, variables = _bind(apply_fn, variables)
    program = _spectral_norm_program(apply_fn, emb_shape, output, num_iters, fd_step, dtype)
    n = _num_examples(features)
    sigma, fd = _map_chunks(program, (variables, key), features, np.arange(n, dtype=np.int32), chunk_size)
    return sigma, fd


def local_lipschitz(
    apply_fn: ApplyFn,
    features: Mapping[str, jax.Array],
    emb_shape: tuple[int, int],
    threshold: int = 3,
    aggregation: Aggregation = "prob",
    num_iters: int = 100,
    key: jax.Array | None = None,
    chunk_size: int = 256,
    mode: Literal["jacfwd", "jacrev"] = "jacfwd",
    variables=None,
) -> pd.DataFrame:
    """All per-example measures, one row per example: grad_norm (p_hat), spectral_probs and its
    finite-difference check spectral_probs_fd, spectral_logits (L_f locally) and
    ratio = spectral_probs / spectral_logits (Theorem 1's L_p / L_f, claimed <= 1 / sqrt(N))."""
    grad = input_gradient_norms(apply_fn, features, emb_shape, threshold, aggregation, chunk_size, mode,
                                variables=variables)
    probs, probs_fd = input_spectral_norms(apply_fn, features, emb_shape, "probs", num_iters, key=key,
                                           chunk_size=chunk_size, variables=variables)
    logits, _ = input_spectral_norms(apply_fn, features, emb_shape, "logits", num_iters, key=key,
                                     chunk_size=chunk_size, variables=variables)
    ratio = np.divide(probs, logits, out=np.full_like(probs, np.nan), where=logits > 0)
    return pd.DataFrame(
        {
            "grad_norm": grad,
            "spectral_probs": probs,
            "spectral_probs_fd": probs_fd,
            "spectral_logits": logits,
            "ratio": ratio,
        }
    )


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """mean, median and max of each column: [3, columns]."""
    return table.agg(["mean", "median", "max"])
