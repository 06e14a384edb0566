"""Local Lipschitz constants of trained models w.r.t. their input field embeddings.

`apply_fn(features, offset) -> logits [B, K]` with offset [B, F, d] added to the field
embeddings (see lipctr.models.base); or, with `variables=...`,
`apply_fn(variables, features, offset)`, which compiles once for all members of a model.
Per example, at offset 0, we measure
- the L2 norm of the gradient of the click probability p_hat (lipctr.losses.click_probability)
  w.r.t. the F*d concatenated field embeddings (`input_gradient_norms`);
- the spectral norm of the Jacobian of the probability vector (softmax over K logits, or
  [p, 1 - p] for K = 1) or of the logits themselves, by power iteration with jvp / vjp, with a
  central finite difference along the found direction as a check (`input_spectral_norms`).
Examples are processed one at a time under vmap (no cross-example coupling is assumed; keep
batch-norm in eval mode), in chunks of `chunk_size` to bound memory. The softmax's own Jacobian
(Theorem 1) is in lipctr.softmax_jacobian.

The one measurement of a trained ensemble, used by the analyses of a run and the bandwidth sweep:
`example_subset` (which test examples), `member_tables` (every member's per-example measures, by
forward-mode AD) and `embedding_weight_norms` (the user / item embedding tables' norms).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lipctr.losses import Aggregation, LossConfig, click_probability
from lipctr.models import embedding_table

ApplyFn = Callable[[Mapping[str, jax.Array], jax.Array], jax.Array]
Output = Literal["probs", "logits"]


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


def example_subset(features: Mapping[str, np.ndarray], num_examples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """min(num_examples, n) examples of features [n, ...] drawn without replacement by a seeded
    generator, in the order drawn: [m, ...]."""
    n = _num_examples(features)
    pick = np.random.default_rng(seed).choice(n, size=min(num_examples, n), replace=False)
    return {k: np.asarray(v)[pick] for k, v in features.items()}


def member_tables(model, loss: LossConfig, params, model_state, features, num_iters: int = 100,
                  seed: int = 0) -> list[pd.DataFrame]:
    """`local_lipschitz` of p_hat (read from loss.click_logits) for every member of a stacked
    ensemble of the flax `model` (params / model_state leaves [M, ...]) on the same features
    [m, ...], jacfwd, power iteration from key `seed`; one program for all members: M tables [m, measures]."""
    emb_shape = (model.schema.num_fields, model.embedding_dim)

    def apply_fn(variables, batch, offset):
        return loss.click_logits(model.apply(variables, batch, deterministic=True, embedding_offset=offset))

    tables = []
    for i in range(len(jax.tree.leaves(params)[0])):
        member = operator.itemgetter(i)  # x -> x[i]: member i's slice of a stacked leaf
        variables = {"params": jax.tree.map(member, params), **jax.tree.map(member, model_state)}
        tables.append(local_lipschitz(apply_fn, features, emb_shape, loss.threshold, loss.aggregation, num_iters,
                                      key=jax.random.key(seed), mode="jacfwd", variables=variables))
    return tables


def embedding_weight_norms(params, schema) -> dict[str, np.ndarray]:
    """Frobenius norms of every member's user and item embedding tables (params leaves [M, ...]):
    {"user_weight_norm": [M], "item_weight_norm": [M]}."""
    return {f"{side}_weight_norm":
            np.asarray(jax.vmap(lambda p, f=field: jnp.linalg.norm(embedding_table(p, f)))(params))
            for side, field in (("user", schema.user_field), ("item", schema.item_field))}
