"""Local Lipschitz constants of models against hand-derived Jacobians, SVD and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipctr import lipschitz as lip
from tests.test_softmax_jacobian import np_softmax, np_softmax_jacobian

F, D = 3, 2  # fields, embedding dim


def np_click_gradient(dz_de, z, threshold, aggregation):
    """Gradient of p_hat w.r.t. e from dz/de [F*D, K] and logits z [K], by hand."""
    if z.size == 1:
        s = 1 / (1 + np.exp(-z[0]))
        return dz_de[:, 0] * s * (1 - s)
    if aggregation == "logit_sum":
        c = np.where(np.arange(z.size) >= threshold, 1.0, -1.0)
        s = 1 / (1 + np.exp(-(c @ z)))
        return dz_de @ (s * (1 - s) * c)
    p = np_softmax(z)
    pos = (np.arange(z.size) >= threshold).astype(float)
    return dz_de @ (p * (pos - p @ pos))


def np_prob_jacobian(dz_de, z):
    """Jacobian [K', F*D] of the probability vector w.r.t. e."""
    if z.size == 1:
        s = 1 / (1 + np.exp(-z[0]))
        g = dz_de[:, 0] * s * (1 - s)
        return np.stack([g, -g])
    return np_softmax_jacobian(z) @ dz_de.T


def linear_model(k, rng):
    a, b = rng.normal(size=(F * D, k)), rng.normal(size=k)
    def apply_fn(f, off):
        return (f["e"] + off).reshape(off.shape[0], -1) @ a + b
    def hand(e):
        return (a, e.reshape(-1) @ a + b)  # (dz/de, z)
    return apply_fn, hand


def mlp_model(k, rng):
    w1, b1 = rng.normal(size=(F * D, 4)), rng.normal(size=4)
    w2, b2 = rng.normal(size=(4, k)), rng.normal(size=k)
    def apply_fn(f, off):
        return jnp.tanh((f["e"] + off).reshape(off.shape[0], -1) @ w1 + b1) @ w2 + b2

    def hand(e):
        h = np.tanh(e.reshape(-1) @ w1 + b1)
        return w1 @ np.diag(1 - h**2) @ w2, h @ w2 + b2

    return apply_fn, hand


@pytest.mark.parametrize("build", [linear_model, mlp_model])
@pytest.mark.parametrize("k,aggregation", [(1, "prob"), (5, "prob"), (5, "logit_sum")])
@pytest.mark.parametrize("mode", ["jacfwd", "jacrev"])
def test_gradient_norms_match_hand_jacobian(build, k, aggregation, mode):
    rng = np.random.default_rng(k)
    apply_fn, hand = build(k, rng)
    feats = {"e": rng.normal(scale=0.5, size=(7, F, D))}
    with jax.enable_x64(True):
        norms = lip.input_gradient_norms(apply_fn, feats, (F, D), 3, aggregation, chunk_size=3, mode=mode,
                                         dtype=jnp.float64)
    expected = [np.linalg.norm(np_click_gradient(*hand(e), 3, aggregation)) for e in feats["e"]]
    np.testing.assert_allclose(norms, expected, rtol=1e-9)


@pytest.mark.parametrize("build", [linear_model, mlp_model])
@pytest.mark.parametrize("k", [1, 5])
def test_spectral_norms_match_svd_and_finite_difference(build, k):
    rng = np.random.default_rng(k)
    apply_fn, hand = build(k, rng)
    feats = {"e": rng.normal(scale=0.5, size=(5, F, D))}
    with jax.enable_x64(True):
        probs, probs_fd = lip.input_spectral_norms(apply_fn, feats, (F, D), "probs", num_iters=200, chunk_size=2,
                                                   dtype=jnp.float64)
        logits, logits_fd = lip.input_spectral_norms(apply_fn, feats, (F, D), "logits", num_iters=200,
                                                     dtype=jnp.float64)
    def svd(m):
        return np.linalg.svd(m, compute_uv=False)[0]
    expected_probs = [svd(np_prob_jacobian(*hand(e))) for e in feats["e"]]
    expected_logits = [svd(hand(e)[0]) for e in feats["e"]]
    np.testing.assert_allclose(probs, expected_probs, rtol=1e-6)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-6)
    np.testing.assert_allclose(probs_fd, probs, rtol=1e-4)
    np.testing.assert_allclose(logits_fd, logits, rtol=1e-4)
    if build is linear_model:  # a linear map has one Lipschitz constant: sigma_max(A) everywhere
        np.testing.assert_allclose(logits, np.full(5, expected_logits[0]), rtol=1e-6)


@pytest.mark.slow  # end-to-end; keeps the default suite under 10 minutes on 2 cores
def test_widedeep_matches_batched_gradient():
    """On a real backbone, the per-example estimates equal an independent whole-batch jax.grad."""
    from lipctr.data.schema import Field, Schema
    from lipctr.models import build_model

    schema = Schema((Field("user_id", "token", "inter", 6), Field("item_id", "token", "inter", 5), Field("genre",
                                                                                                         "token_seq",
                                                                                                         "item", 4, 3)))
    model = build_model("widedeep", schema, num_outputs=5, embedding_dim=4, mlp_hidden_size=(8,))
    rng = np.random.default_rng(3)
    feats = {
        "user_id": jnp.array(rng.integers(1, 6, 9), jnp.int32),
        "item_id": jnp.array(rng.integers(1, 5, 9), jnp.int32),
        "genre": jnp.array(rng.integers(0, 4, (9, 3)), jnp.int32),
    }
    variables = model.init(jax.random.key(0), feats)
    def apply_fn(f, off):
        return model.apply(variables, f, deterministic=True, embedding_offset=off)
    table = lip.local_lipschitz(apply_fn, feats, (3, 4), num_iters=100, chunk_size=4)
    from lipctr.losses import click_probability

    zero = jnp.zeros((9, 3, 4))
    grads = jax.grad(lambda off: click_probability(apply_fn(feats, off)).sum())(zero)
    np.testing.assert_allclose(table["grad_norm"], np.linalg.norm(np.asarray(grads).reshape(9, -1), axis=1), rtol=1e-4)
    jac = jax.jacrev(lambda off: lip.probability_vector(apply_fn(feats, off)))(zero)  # [9, 5, 9, 3, 4]
    per_example = np.stack([np.asarray(jac)[i, :, i].reshape(5, -1) for i in range(9)])
    expected = [np.linalg.svd(m, compute_uv=False)[0] for m in per_example]
    np.testing.assert_allclose(table["spectral_probs"], expected, rtol=1e-3)
    # float32 central differences: absolute error ~ eps / h; a dead-ReLU example has sigma = 0
    np.testing.assert_allclose(table["spectral_probs_fd"], table["spectral_probs"], rtol=2e-2, atol=1e-4)
    assert (table["ratio"].dropna() <= 0.5 + 1e-6).all()  # ||J_softmax||_2 <= 1/2 bounds L_p / L_f
    summary = lip.summarize(table)
    assert summary.loc["max", "grad_norm"] == table["grad_norm"].max()
    assert summary.loc["median", "spectral_logits"] == np.median(table["spectral_logits"])


def test_model_input_errors():
    apply_fn, _ = linear_model(5, np.random.default_rng(0))
    feats = {"e": np.zeros((4, F, D))}
    with pytest.raises(ValueError, match="emb_shape"):
        lip.input_gradient_norms(apply_fn, feats, (F * D,))
    with pytest.raises(ValueError, match="share their first dimension"):
        lip.input_gradient_norms(apply_fn, {"e": feats["e"], "x": np.zeros(3)}, (F, D))
    with pytest.raises(ValueError, match=r"logits \[B, K\]"):
        lip.input_gradient_norms(lambda f, off: apply_fn(f, off)[0], feats, (F, D))
    with pytest.raises(ValueError, match="output must be"):
        lip.input_spectral_norms(apply_fn, feats, (F, D), output="p")


def test_variables_argument_compiles_once_and_matches_closure():
    """Members measured through `variables=` share one compiled program and equal the closure form."""
    from lipctr.lipschitz import _gradient_norm_program, input_gradient_norms

    rng = np.random.default_rng(0)
    features = {"x": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)}

    def apply_fn(variables, batch, offset):
        return (batch["x"][:, :, None] * variables["w"] + offset).sum(1) @ variables["v"]

    members = [{"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
                "v": jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)} for _ in range(3)]
    before = _gradient_norm_program.cache_info().misses
    for variables in members:
        shared = input_gradient_norms(apply_fn, features, (3, 2), variables=variables)
        closure = input_gradient_norms(lambda b, o, v=variables: apply_fn(v, b, o), features, (3, 2))
        np.testing.assert_allclose(shared, closure, rtol=1e-6)
    assert _gradient_norm_program.cache_info().misses - before == 1 + 3  # shared once, closures each
