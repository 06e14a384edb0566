"""Theorem 1's softmax Jacobian against numpy closed forms and brute-force optimisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipctr import softmax_jacobian as sj


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_softmax_jacobian(z, tau=1.0):
    p = np_softmax(z / tau)
    return (np.diag(p) - np.outer(p, p)) / tau


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("n", [2, 5, 13])
def test_jacfwd_equals_closed_form(tau, n):
    rng = np.random.default_rng(n)
    with jax.enable_x64(True):
        for z in rng.normal(scale=3.0, size=(4, n)):
            auto = np.asarray(sj.softmax_jacobian(z, tau))
            assert np.abs(auto - np.asarray(sj.softmax_jacobian_closed_form(z, tau))).max() < 1e-6
            assert np.abs(auto - np_softmax_jacobian(z, tau)).max() < 1e-6


def test_batched_frobenius_norms_match_numpy():
    z = np.random.default_rng(1).normal(scale=2.0, size=(37, 6))
    with jax.enable_x64(True):
        norms = sj.jacobian_frobenius_norms(z, tau=0.7, chunk_size=8)
        from_probs = np.asarray(sj.frobenius_norm_from_probs(np_softmax(z / 0.7), tau=0.7))
    expected = np.array([np.linalg.norm(np_softmax_jacobian(row, 0.7)) for row in z])
    np.testing.assert_allclose(norms, expected, rtol=1e-10)
    np.testing.assert_allclose(from_probs, expected, rtol=1e-10)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_uniform_norm_table(tau):
    with jax.enable_x64(True):
        table = sj.norm_vs_bandwidth(range(2, 65), tau)
    n = np.arange(2, 65)
    np.testing.assert_allclose(table["norm_uniform"], np.sqrt(n - 1) / (n * tau), rtol=1e-12)
    np.testing.assert_allclose(table["norm_uniform_closed_form"], np.sqrt(n - 1) / (n * tau), rtol=1e-12)
    np.testing.assert_allclose(table["paper_bound"], 1 / (tau * np.sqrt(n)), rtol=1e-12)
    # uniform logits always satisfy the bound; the supremum 1/(2 tau) only for N <= 4
    assert (table["norm_uniform"] < table["paper_bound"]).all()
    assert (table["bound_holds_everywhere"] == (0.5 / tau <= table["paper_bound"] + 1e-12)).all()


@pytest.mark.parametrize("n", [2, 5, 10, 64])
def test_two_class_concentration_limit(n):
    with jax.enable_x64(True):
        z = np.zeros(n)
        z[:2] = 40.0  # p -> (1/2, 1/2, 0, ...)
        norm = float(jnp.linalg.norm(sj.softmax_jacobian(z)))
    assert abs(norm - 0.5) < 1e-12
    assert (norm > 1 / np.sqrt(n)) == (n >= 5)


def project_to_simplex(v):
    """Euclidean projection of each row of v [M, N] onto the probability simplex (sort-based)."""
    u = -jnp.sort(-v, axis=-1)
    css = jnp.cumsum(u, axis=-1) - 1.0
    j = jnp.arange(1, v.shape[-1] + 1)
    rho = jnp.sum(u - css / j > 0, axis=-1, keepdims=True)
    theta = jnp.take_along_axis(css, rho - 1, axis=-1) / rho
    return jnp.maximum(v - theta, 0.0)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_supremum_found_by_optimisation(n):
    """Projected gradient ascent of ||diag(p) - p p^T||_F over the simplex, from many random
    starts, never beats 1/2 and reaches it at p uniform on two classes; nor do random points."""
    with jax.enable_x64(True):
        def norm(p):
            return jnp.linalg.norm(jnp.diag(p) - jnp.outer(p, p))
        grad = jax.vmap(jax.grad(norm))
        def step(ps, _):
            return (project_to_simplex(ps + 0.05 * grad(ps)), None)
        rng = np.random.default_rng(n)
        start = jnp.asarray(rng.dirichlet(np.ones(n), 64))
        ps, _ = jax.lax.scan(step, start, None, length=500)
        norms = np.asarray(jax.vmap(norm)(ps))
        best = np.sort(np.asarray(ps)[np.argmax(norms)])
        dirichlet = np.concatenate([rng.dirichlet(np.full(n, a), 5000) for a in (0.05, 0.3, 1.0, 10.0)])
        sampled = np.asarray(sj.frobenius_norm_from_probs(dirichlet))
    np.testing.assert_allclose(np.asarray(ps).sum(-1), 1.0, atol=1e-12)
    assert norms.max() <= sj.supremum_norm() + 1e-12
    assert abs(norms.max() - sj.supremum_norm()) < 1e-9
    np.testing.assert_allclose(best[-2:], [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(best[:-2], 0.0, atol=1e-6)
    assert sampled.max() <= sj.supremum_norm() + 1e-12


def test_distribution_fraction_above_bound():
    table = sj.norm_distribution_by_scale(jax.random.key(1), 10, scales=(0.1, 1.0, 2.0), num=500)
    small = table[table["scale"] == 0.1].iloc[0]
    assert small["fraction_above_bound"] == 0.0  # near uniform the bound holds
    assert abs(small["mean"] - sj.uniform_norm(10)) < 0.01
    assert table["fraction_above_bound"].max() > 0.0  # and away from uniform it fails
    assert (table["max"] <= 0.5 + 1e-6).all()
    logits = np.asarray(sj.random_logits(jax.random.key(2), 500, 10, 2.0))
    dist = sj.jacobian_norm_distribution(logits)
    expected = np.array([np.linalg.norm(np_softmax_jacobian(z)) for z in logits])
    np.testing.assert_allclose(dist.norms, expected, rtol=1e-4)
    assert dist.fraction_above == np.mean(expected > 1 / np.sqrt(10))


def test_softmax_errors():
    with pytest.raises(ValueError, match=r"logits must have shape \[N\]"):
        sj.softmax_jacobian(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="tau must be > 0"):
        sj.softmax_jacobian(np.zeros(3), tau=0.0)
    with pytest.raises(ValueError, match=r"\[M, N\] with N >= 2"):
        sj.jacobian_norm_distribution(np.zeros((4, 1)))
