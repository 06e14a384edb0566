"""Properties every registered backbone must have, for K = 1 (original) and K = 5 (rating head)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lipctr.data.schema import Field, Schema
from lipctr.losses import LossConfig, multihead_loss
from lipctr.models import MODEL_NAMES, build_model, default_hparams
from lipctr.models.parameter_counts import random_features
from lipctr.train import loss_fn, train_step

SCHEMA = Schema(
    fields=(
        Field("user_id", "token", "user", 11),
        Field("item_id", "token", "item", 13),
        Field("age", "token", "user", 4),
        Field("genre", "token_seq", "item", 6, max_len=3),
        Field("score", "float", "inter"),
    )
)
CASES = [(name, k) for name in MODEL_NAMES for k in (1, 5)]
IDS = [f"{name}-K{k}" for name, k in CASES]
NEWER = ("deepfm", "dcn", "finalmlp", "gdcn", "dcnv3")  # beyond the paper's seven: K = 1 cases slow (suite time)


def _marks(name: str, k: int):
    return pytest.mark.slow if name in NEWER and k == 1 else ()


KEYED_CASES = [pytest.param(name, k, id=f"{name}-K{k}", marks=_marks(name, k)) for name, k in CASES]
# Smaller layers where a model has them, to keep the file fast; properties do not depend on width.
SMALL = {"mlp_hidden_size": (16, 16), "cin_layer_size": (8, 8), "low_rank": 4, "mlp1_hidden_units": (16,),
         "mlp2_hidden_units": (16, 8), "fs_hidden_units": (8,), "dnn_hidden_units": (16, 16)}
# Branch switches of our backbones that change which parameters exist / are used.
VARIANTS = {"dcnv2": [{"mixed": True, "structure": "stacked"}], "xdeepfm": [{"direct": True}],
            "deepfm": [{"scalar_side_branches": True}],
            "finalmlp": [{"fs1_context": (), "fs2_context": ("user", "genre"), "mlp1_batch_norm": True,
                          "mlp2_dropout": 0.3}, {"use_fs": False}],
            "gdcn": [{"structure": "parallel", "batch_norm": True, "net_dropout": 0.2}],
            "dcnv3": [{"num_heads": 2, "batch_norm": True, "layer_norm": False}]}
LOSS = LossConfig(lambda_r=0.5, aggregation="prob")
# Compiles dominate this file's runtime; LLVM -O0 roughly halves them (results agree to 1e-5).
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def small_model(name, k, **overrides):
    defaults = default_hparams(name)
    hparams = {key: value for key, value in SMALL.items() if key in defaults} | overrides
    return build_model(name, SCHEMA, k, **hparams)


def batch(size, seed):
    rng = np.random.default_rng(seed)
    features = random_features(SCHEMA, size, rng)
    rating = rng.integers(1, 6, size).astype(np.int32)
    return features, rating, (rating > 3).astype(np.float32)


def forward(model, variables, features, key=None):
    """Deterministic logits (key None) or training-mode logits with dropout and batch statistics."""
    if key is None:
        return model.apply(variables, features, deterministic=True)
    mutable = [c for c in variables if c != "params"]
    if not mutable:
        return model.apply(variables, features, deterministic=False, rngs={"dropout": key})
    return model.apply(variables, features, deterministic=False, rngs={"dropout": key}, mutable=mutable)[0]


def both_modes(model, variables, features, key):
    return forward(model, variables, features), forward(model, variables, features, key)


def numpy_init(model, features, seed):
    """Random variables in the model's layout, drawn in numpy (parameters ~ N(0, 1/fan_in),
    batch statistics mean 0 / variance 1): cheap, and generic for the property tests."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), features)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "batch_stats" in name:
            return np.full(leaf.shape, 1.0 if "var" in name else 0.0, np.float32)
        fan_in = leaf.shape[-2] if len(leaf.shape) >= 2 else 4
        return rng.normal(0.0, fan_in**-0.5, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def objective(model, variables, features, rating, label, key):
    """Loss + penalty as a function of the params (other collections fixed): deterministic (key
    None) or the training step's lipctr.train.loss_fn (dropout on, batch statistics)."""
    state = {c: v for c, v in variables.items() if c != "params"}
    if key is not None:
        batch = {"features": features, "rating": rating, "label": label}
        return lambda params: loss_fn(model, LOSS, params, state, batch, jnp.ones(len(label)), key)[0]

    def loss(params):
        logits = forward(model, {**variables, "params": params}, features)
        return multihead_loss(logits, rating, label, LOSS, penalty=model.penalty(params))

    return loss


@functools.cache
def outputs(name, k):
    """Deterministic and training-mode logits of 3 random parameter draws, by a Python loop over
    a jitted function and by one jitted vmap over the stacked draws; the deterministic logits
    computed eagerly; the logits of a permuted batch. Two compiles per model."""
    model = small_model(name, k)
    features, _, _ = batch(16, 1)
    per_seed = [numpy_init(model, features, seed) for seed in range(3)]
    keys = jax.random.split(jax.random.key(6), len(per_seed))
    perm = np.random.default_rng(4).permutation(16)
    jitted = jax.jit(lambda v, f, key: both_modes(model, v, f, key), compiler_options=FAST)
    vmapped = jax.jit(jax.vmap(lambda v, key: both_modes(model, v, features, key)), compiler_options=FAST)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_seed)
    return {
        "loop": [jitted(v, features, key) for v, key in zip(per_seed, keys)],
        "vmap": vmapped(stacked, keys),
        "eager": [forward(model, v, features) for v in per_seed],
        "permuted": jitted(per_seed[0], {key: value[perm] for key, value in features.items()}, keys[0])[0],
        "perm": perm,
    }


@pytest.mark.parametrize("name,k", CASES, ids=IDS)
def test_output_shape_with_default_hparams(name, k):
    features, _, _ = batch(3, 0)
    model = build_model(name, SCHEMA, k)
    variables = jax.eval_shape(model.init, jax.random.key(0), features)
    shapes = jax.eval_shape(lambda v, key: both_modes(model, v, features, key), variables, jax.random.key(1))
    assert [s.shape for s in shapes] == [(3, k), (3, k)]


def assert_gradients_alive(grads, where, floor=0.0):
    """Finite, and somewhere above `floor` in every leaf. Under a K-wide head a branch that reaches
    all logits alike (a scalar side branch) cancels in the softmax: its gradient is float32
    rounding noise (~4e-9 here) rather than 0, so K > 1 checks against a floor of 1e-6 (every leaf
    of the twelve backbones clears it deterministically; the five newest's smallest is 1.3e-3)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        at = f"{where}: gradient at {jax.tree_util.keystr(path)}"
        assert np.all(np.isfinite(leaf)), f"{at} is not finite"
        assert np.abs(leaf).max() > floor, f"{at} is {np.abs(leaf).max():.1e} <= {floor} (dead or cancelled branch)"


def grad_cases():
    for name, k in CASES:
        for overrides in [{}] + VARIANTS.get(name, []):
            tag = "-".join(f"{a}={b}" for a, b in overrides.items())
            yield pytest.param(name, k, tuple(overrides.items()), id=f"{name}-K{k}" + (f"-{tag}" if tag else ""),
                               marks=_marks(name, k))


@pytest.mark.parametrize("name,k,overrides", list(grad_cases()))
def test_every_parameter_gets_a_finite_nonzero_gradient(name, k, overrides):
    """At random parameters, deterministic and in training mode (dropout on, batch statistics)."""
    model = small_model(name, k, **dict(overrides))
    features, rating, label = batch(16, 1)
    variables = numpy_init(model, features, 0)

    @functools.partial(jax.jit, compiler_options=FAST)
    def grads(params, key):
        return [jax.grad(objective(model, variables, features, rating, label, key))(params) for key in (None, key)]

    deterministic, dropout = grads(variables["params"], jax.random.key(2))
    if k > 1 and dict(overrides).get("scalar_side_branches"):  # the rule broken on purpose: detected
        cancelled = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(deterministic)
                     if np.abs(g).max() <= 1e-6]
        assert cancelled and all("first_order" in p for p in cancelled), cancelled
        return
    floor = 1e-6 if k > 1 else 0.0  # K-wide branches: none cancels in the softmax
    assert_gradients_alive(deterministic, f"{name} K={k} {overrides} deterministic", floor)
    # training mode: a dense bias before batch-norm has a true gradient of 0 (rounding noise), so no floor
    assert_gradients_alive(dropout, f"{name} K={k} {overrides} dropout")


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
@pytest.mark.parametrize("name,k", CASES, ids=IDS)
def test_outputs_permute_with_the_batch(name, k):
    out = outputs(name, k)
    np.testing.assert_allclose(out["permuted"], np.asarray(out["loop"][0][0])[out["perm"]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,k", KEYED_CASES)
def test_jit_and_vmap_over_seeds_match_a_python_loop(name, k):
    out = outputs(name, k)
    eager = np.stack(out["eager"])
    assert eager.shape == (3, 16, k)
    assert not np.allclose(eager[0], eager[1]), "different parameters should give different outputs"
    for mode in (0, 1):
        loop = np.stack([outputs[mode] for outputs in out["loop"]])
        np.testing.assert_allclose(out["vmap"][mode], loop, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.stack([outputs[0] for outputs in out["loop"]]), eager, rtol=1e-4, atol=1e-5)


def planted_data(n=256, seed=0):
    """Ratings 1..5 from a planted user x item low-rank signal plus a genre effect (no noise)."""
    rng = np.random.default_rng(seed)
    features = random_features(SCHEMA, n, rng)
    users = rng.normal(size=(SCHEMA["user_id"].vocab_size, 2))
    items = rng.normal(size=(SCHEMA["item_id"].vocab_size, 2))
    genre_effect = rng.normal(scale=0.5, size=SCHEMA["genre"].vocab_size)
    genre_effect[0] = 0.0
    score = (users[features["user_id"]] * items[features["item_id"]]).sum(1) + genre_effect[features["genre"]].sum(1)
    rating = 1 + np.searchsorted(np.quantile(score, [0.1, 0.25, 0.45, 0.7]), score)
    return features, rating.astype(np.int32), (rating > 3).astype(np.float32)


def numpy_auc(scores, labels):
    """P(score of a random positive > score of a random negative), ties counting one half."""
    pos, neg = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


@functools.cache
def fit(name, k, steps=300, learning_rate=1e-2):
    """Full-batch Adam on loss + penalty in training mode on the planted data, from the model's
    own initialisation, in one jit. Returns the deterministic logits before and after training
    and the first step's gradients."""
    features, rating, label = planted_data()
    model = small_model(name, k)
    tx = optax.adam(learning_rate)

    batch = {"features": features, "rating": rating, "label": label}
    weight = jnp.ones(len(label))

    def step(carry, key):
        params, state, opt_state, _, grads = train_step(model, LOSS, tx, *carry, batch, weight, key)
        return (params, state, opt_state), grads

    @functools.partial(jax.jit, compiler_options=FAST)
    def run(key):
        variables = model.init(key, features)
        params, state = variables["params"], {c: v for c, v in variables.items() if c != "params"}
        carry = (params, state, tx.init(params))
        (params, state, _), grads = jax.lax.scan(step, carry, jax.random.split(jax.random.fold_in(key, 1), steps))
        first_grads = jax.tree.map(lambda g: g[0], grads)
        return forward(model, variables, features), forward(model, {"params": params, **state}, features), first_grads

    return run(jax.random.key(0)), rating, label


@pytest.mark.slow
@pytest.mark.parametrize("name,k", CASES, ids=IDS)
def test_every_parameter_gets_a_gradient_at_initialisation(name, k):
    (_, _, grads), _, _ = fit(name, k)
    assert_gradients_alive(grads, f"{name} K={k} at its own initialisation, dropout on")


@pytest.mark.slow
@pytest.mark.parametrize("name,k", CASES, ids=IDS)
def test_fits_a_planted_signal(name, k):
    (initial, trained, _), rating, label = fit(name, k)
    before, after = (float(multihead_loss(z, rating, label, LOSS)) for z in (initial, trained))
    logits = np.asarray(trained, np.float64)
    scores = logits[:, 0] if k == 1 else np.logaddexp.reduce(logits[:, 3:], 1) - np.logaddexp.reduce(logits, 1)
    auc = numpy_auc(scores, label)
    assert after <= 0.5 * before, f"{name} K={k}: loss {before:.3f} -> {after:.3f}"
    assert auc > 0.9, f"{name} K={k}: train AUC {auc:.3f}"


def test_field_tables_start_at_the_scale_of_recboles_concatenated_tables():
    """RecBole keeps all token fields in one table (xavier-normal over the summed vocabulary),
    each token_seq field in its own: a 3-id field must start as small as a 2000-id one."""
    from lipctr.models.base import FeatureEmbedding

    schema = Schema(fields=(
        Field("user_id", "token", "user", 2000),
        Field("gender", "token", "user", 3),
        Field("genre", "token_seq", "item", 50, max_len=4),
        Field("price", "float", "item"),
        Field("weight", "float", "item"),
    ))
    width = 16
    features = random_features(schema, 4, np.random.default_rng(0))
    tables = FeatureEmbedding(schema, width).init(jax.random.key(0), features)["params"]["tables"]
    token_std = np.sqrt(2.0 / (2003 + width))
    np.testing.assert_allclose(np.std(tables["user_id"]["embedding"]), token_std, rtol=0.05)
    assert np.std(tables["gender"]["embedding"]) < 2.0 * token_std
    np.testing.assert_allclose(np.std(tables["genre"]["embedding"]), np.sqrt(2.0 / (50 + width)), rtol=0.12)
    floats = np.concatenate([tables["price"], tables["weight"]])
    assert floats.shape == (2 * width,)
    np.testing.assert_allclose(np.std(floats), np.sqrt(2.0 / (2 + width)), rtol=0.3)
