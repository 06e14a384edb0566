"""DeepFM, DCN, FinalMLP, GDCN and DCNv3: forward passes against numpy re-derivations of each
paper's / reference implementation's equations, parameter counts against closed forms of the
reference implementations (RecBole 1.2.1 for DeepFM and DCN, FuxiCTR for the other three), and
the options (side branches, aux_rating head, Tri-BCE)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipctr.controls import Controls
from lipctr.models import build_model
from lipctr.models.controlled import controlled_model
from lipctr.models.parameter_counts import ml100k_schema, parameter_counts
from tests.test_models_attention import SCHEMA, TOL, B, make_features, np_dense, np_embeddings, np_first_order

NEW = ("deepfm", "dcn", "finalmlp", "gdcn", "dcnv3")
# one backbone in the default suite, the other four with -m slow (suite time)
NEW_ONE_FAST = [n if n == "dcnv3" else pytest.param(n, marks=pytest.mark.slow) for n in NEW]
SLOW = pytest.mark.slow  # the other cases of a forward check: the default suite keeps one K = 5 case each
SMALL_HP = {"deepfm": {"mlp_hidden_size": (8,)}, "dcn": {"mlp_hidden_size": (8,)},
            "finalmlp": {"mlp1_hidden_units": (8,), "mlp2_hidden_units": (4,), "fs_hidden_units": (4,)},
            "gdcn": {"dnn_hidden_units": (8,)}, "dcnv3": {"num_heads": 2}}


@functools.cache
def initialised(name: str, k: int, **hparams):
    """(model, variables, float64 numpy params) with every parameter drawn at random (so that
    zero-initialised biases and ones-initialised weights do not hide a term)."""
    model = build_model(name, SCHEMA, k, **hparams)
    variables = jax.jit(model.init)({"params": jax.random.key(0), "dropout": jax.random.key(1)}, make_features())
    leaves, tree = jax.tree.flatten(variables["params"])
    rng = np.random.default_rng(3)
    drawn = [jnp.asarray(0.5 * rng.normal(size=leaf.shape), jnp.float32) for leaf in leaves]
    variables = {**variables, "params": jax.tree.unflatten(tree, drawn)}
    return model, variables, jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"])


def logits(name, k, **hparams):
    model, variables, p = initialised(name, k, **hparams)
    return np.asarray(model.apply(variables, make_features(), deterministic=True), np.float64), p


def relu(x):
    return np.maximum(x, 0.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_batch_norm(p, stats, x, axis=-1):
    """Inference batch-norm with the running statistics (flax names)."""
    shape = [1] * x.ndim
    shape[axis] = -1
    def r(a):
        return np.asarray(a, np.float64).reshape(shape)
    return (x - r(stats["mean"])) / np.sqrt(r(stats["var"]) + 1e-5) * r(p["scale"]) + r(p["bias"])


def np_mlp_block(p, x, n_layers):
    """FuxiCTR's MLP_Block without batch-norm, inference: dense -> ReLU per layer."""
    for i in range(n_layers):
        x = relu(np_dense(p[f"Dense_{i}"], x))
    return x


def fm_pairs(emb):
    """sum_{f < g} e_f * e_g per embedding dimension, by an explicit double loop: [B, d]."""
    out = np.zeros((emb.shape[0], emb.shape[2]))
    for f in range(emb.shape[1]):
        for g in range(f + 1, emb.shape[1]):
            out += emb[:, f] * emb[:, g]
    return out


# ----------------------------------------------------------------------------- DeepFM, DCN


@pytest.mark.parametrize("k,scalar", [pytest.param(1, False, marks=SLOW), (5, False),
                                     pytest.param(5, True, marks=SLOW)])
def test_deepfm_forward_matches_numpy(k, scalar):
    features = make_features()
    got, p = logits("deepfm", k, mlp_hidden_size=(8, 4), scalar_side_branches=scalar)
    emb = np_embeddings(p, features)
    pairs = fm_pairs(emb)
    fm = pairs.sum(1, keepdims=True) if scalar else pairs @ p["fm_weights"]
    deep = emb.reshape(B, -1)
    for layer in ("Dense_0", "Dense_1"):
        deep = relu(np_dense(p["mlp"][layer], deep))
    want = np_first_order(p["first_order"], features) + fm + np_dense(p["deep_output"], deep)
    assert got.shape == (B, k) and ("fm_weights" in p) != scalar
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("k", [pytest.param(1, marks=SLOW), 5])
def test_dcn_forward_matches_numpy(k):
    features = make_features()
    model, variables, _ = initialised("dcn", k, mlp_hidden_size=(8, 4), cross_layer_num=3)
    got, p = logits("dcn", k, mlp_hidden_size=(8, 4), cross_layer_num=3)
    stats = jax.tree.map(np.asarray, variables["batch_stats"])
    x0 = np_embeddings(p, features).reshape(B, -1)
    x = x0
    for layer in range(3):  # x_{l+1} = x_0 x_l^T w_l + b_l + x_l, one example at a time
        w, b = p["cross"][f"w_{layer}"], p["cross"][f"b_{layer}"]
        x = np.stack([x0[i] * float(x[i] @ w) for i in range(B)]) + b + x
    deep = x0
    for i in range(2):
        deep = relu(np_batch_norm(p["mlp"][f"BatchNorm_{i}"], stats["mlp"][f"BatchNorm_{i}"],
                                  np_dense(p["mlp"][f"Dense_{i}"], deep)))
    np.testing.assert_allclose(got, np_dense(p["prediction"], np.concatenate([x, deep], 1)), **TOL)


def test_dcn_penalty_is_reg_weight_times_sum_of_cross_vector_norms():
    model, variables, p = initialised("dcn", 5, mlp_hidden_size=(4,), cross_layer_num=3, reg_weight=0.7)
    want = 0.7 * sum(np.linalg.norm(p["cross"][f"w_{i}"]) for i in range(3))
    np.testing.assert_allclose(float(model.penalty(variables["params"])), want, rtol=1e-5)


@pytest.mark.parametrize("name", ["deepfm", "finalmlp", "gdcn", "dcnv3"])
def test_no_explicit_l2_term_where_the_reference_has_none(name):
    net, v, _ = initialised(name, 5, **SMALL_HP[name])
    assert float(net.penalty(v["params"])) == 0.0


# ----------------------------------------------------------------------------- FinalMLP


def np_fusion(p, h1, h2, heads):
    """FuxiCTR's InteractionAggregation: w_x h1 + w_y h2 + sum_h h1_h^T W_h h2_h, per output o."""
    out = np_dense(p["w_x"], h1) + np_dense(p["w_y"], h2)
    w = p["w_xy"]  # [H, X/H, K, Y/H]
    hx, hy = h1.shape[1] // heads, h2.shape[1] // heads
    for o in range(w.shape[2]):
        for h in range(heads):
            x, y = h1[:, h * hx:(h + 1) * hx], h2[:, h * hy:(h + 1) * hy]
            out[:, o] += np.einsum("bi,ij,bj->b", x, w[h, :, o, :], y)
    return out


def np_gate(p, features, context):
    """2 * sigmoid(MLP(context)): context embeddings from the gate's own tables, or its bias."""
    if context:
        ctx = np.concatenate([p["context_embedding"][n]["embedding"][features[n]] for n in context], 1)
    else:
        ctx = np.broadcast_to(p["context_bias"], (B, p["context_bias"].shape[0]))
    hidden = relu(np_dense(p["mlp"]["Dense_0"], ctx))
    return 2.0 * sigmoid(np_dense(p["mlp"]["output"], hidden))


@pytest.mark.parametrize("k,contexts,use_fs", [pytest.param(1, (("user",), ("item",)), True, marks=SLOW),
                                               (5, ((), ("user", "item")), True),
                                               pytest.param(5, ((), ()), False, marks=SLOW)])
def test_finalmlp_forward_matches_numpy(k, contexts, use_fs):
    features = make_features()
    hp = dict(mlp1_hidden_units=(8, 6), mlp2_hidden_units=(4,), fs_hidden_units=(5,), num_heads=2,
              fs1_context=contexts[0], fs2_context=contexts[1], use_fs=use_fs)
    got, p = logits("finalmlp", k, **hp)
    alias = {"user": "user_id", "item": "item_id"}
    e = np_embeddings(p, features).reshape(B, -1)
    inputs = [e, e]
    if use_fs:
        inputs = [e * np_gate(p[f"fs{i + 1}_gate"], features, [alias[c] for c in contexts[i]]) for i in (0, 1)]
    else:
        assert "fs1_gate" not in p
    h1 = np_mlp_block(p["mlp1"], inputs[0], 2)
    h2 = np_mlp_block(p["mlp2"], inputs[1], 1)
    np.testing.assert_allclose(got, np_fusion(p["fusion"], h1, h2, 2), **TOL)


def test_finalmlp_bilinear_weights_are_fuxictrs_viewed_per_output():
    """FuxiCTR computes the bilinear term with w_xy [H*X/H*Y/H, K] viewed [H, X/H, K*Y/H]; the same
    weights reshaped row-major to [H, X/H, K, Y/H] give the same term (the weight-transfer rule)."""
    rng = np.random.default_rng(0)
    heads, hx, hy, k = 2, 3, 4, 5
    torch_w = rng.normal(size=(heads * hx * hy, k))
    x, y = rng.normal(size=(B, heads * hx)), rng.normal(size=(B, heads * hy))
    # FuxiCTR's matmul chain, in numpy
    step = (x.reshape(B, heads, 1, hx) @ torch_w.reshape(heads, hx, -1)).reshape(B, heads, k, hy)
    want = (step @ y.reshape(B, heads, hy, 1))[..., 0].sum(1)
    zeros = {"kernel": np.zeros((1, k)), "bias": np.zeros(k)}
    p = {"w_x": {**zeros, "kernel": np.zeros((heads * hx, k))}, "w_y": {**zeros, "kernel": np.zeros((heads * hy, k))},
         "w_xy": torch_w.reshape(heads, hx, k, hy)}
    np.testing.assert_allclose(np_fusion(p, x, y, heads), want, rtol=1e-12)


@pytest.mark.slow  # ~8 s
def test_finalmlp_empty_contexts_leave_the_gate_hidden_layer_without_gradient_at_initialisation():
    """FuxiCTR's template (empty contexts): gate input 0 and relu'(0) = 0, so only the gate's
    output layer trains from its initialisation; the user / item contexts train all of it."""
    features = make_features()

    def gate_grads(**contexts):
        model = build_model("finalmlp", SCHEMA, 1, mlp1_hidden_units=(4,), mlp2_hidden_units=(4,),
                            fs_hidden_units=(3,), **contexts)
        params = model.init(jax.random.key(0), features)["params"]
        grads = jax.grad(lambda q: model.apply({"params": q}, features).sum())(params)
        return grads["fs1_gate"]

    empty = gate_grads(fs1_context=(), fs2_context=())
    assert not np.any(empty["context_bias"]) and not np.any(empty["mlp"]["Dense_0"]["kernel"])
    assert np.abs(empty["mlp"]["output"]["bias"]).max() > 0
    used = gate_grads()
    assert all(np.abs(leaf).max() > 0 for leaf in jax.tree.leaves(used))


def test_finalmlp_bad_settings_are_named():
    features = make_features()
    for hp, message in [({"fs1_context": ("zip_code",)}, "FinalMLP.fs1_context: no field 'zip_code'"),
                        ({"num_heads": 3}, "FinalMLP.num_heads=3 must divide")]:
        with pytest.raises(ValueError, match=message):
            build_model("finalmlp", SCHEMA, 1, **hp).init(jax.random.key(0), features)


# ----------------------------------------------------------------------------- GDCN


@pytest.mark.parametrize("k,structure", [pytest.param(1, "stacked", marks=SLOW), (5, "stacked"), (5, "parallel")])
def test_gdcn_forward_matches_numpy(k, structure):
    features = make_features()
    got, p = logits("gdcn", k, dnn_hidden_units=(8, 4), num_cross_layers=2, structure=structure)
    x0 = np_embeddings(p, features).reshape(B, -1)
    x = x0
    for layer in range(2):  # x_{l+1} = x_0 (W x_l + b) sigmoid(Wg x_l) + x_l
        c = p["cross"]
        x = x0 * (x @ c[f"w_{layer}"] + c[f"b_{layer}"]) * sigmoid(x @ c[f"wg_{layer}"]) + x
    if structure == "stacked":
        top = np_mlp_block(p["mlp"], x, 2)
    else:
        top = np.concatenate([x, np_mlp_block(p["mlp"], x0, 2)], 1)
    np.testing.assert_allclose(got, np_dense(p["prediction"], top), **TOL)


# ----------------------------------------------------------------------------- DCNv3


def np_head_inputs(emb, heads):
    """FuxiCTR's MultiHeadFeatureEmbedding by loops: head h = [e_f[h d : h d + ceil(d/2)] for f]
    || [e_f[h d + ceil(d/2) : (h + 1) d] for f]."""
    d = emb.shape[2] // heads
    first = math.ceil(d / 2)
    out = []
    for h in range(heads):
        a = [emb[:, f, h * d:h * d + first] for f in range(emb.shape[1])]
        b = [emb[:, f, h * d + first:(h + 1) * d] for f in range(emb.shape[1])]
        out.append(np.concatenate(a + b, 1))
    return np.stack(out, 1)  # [B, H, F d]


def np_cross_network(p, x0, layers, exponential, layer_norm):
    x = x0
    for i in range(layers):
        h = x @ p[f"w_{i}"]["kernel"]
        if layer_norm:
            ln = p[f"layer_norm_{i}"]
            mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
            normed = (h - mean) / np.sqrt(var + 1e-5) * ln["scale"] + ln["bias"]
        else:
            normed = h
        c = np.concatenate([h, h * relu(normed)], -1) + p[f"b_{i}"]
        x = (x if exponential else x0) * c + x
    return np_dense(p["output"], x).mean(1)


@pytest.mark.parametrize("k,heads,dim,layer_norm", [pytest.param(1, 1, 4, True, marks=SLOW), (5, 2, 5, True),
                                                    pytest.param(5, 2, 4, False, marks=SLOW)])
def test_dcnv3_forward_matches_numpy(k, heads, dim, layer_norm):
    features = make_features()
    got, p = logits("dcnv3", k, num_heads=heads, embedding_dim=dim, layer_norm=layer_norm,
                    num_deep_cross_layers=2, num_shallow_cross_layers=3)
    x0 = np_head_inputs(np_embeddings(p, features), heads)
    assert x0.shape == (B, heads, SCHEMA.num_fields * dim)
    deep = np_cross_network(p["ecn"], x0, 2, True, layer_norm)
    shallow = np_cross_network(p["lcn"], x0, 3, False, layer_norm)
    np.testing.assert_allclose(got, 0.5 * (deep + shallow), **TOL)


def test_dcnv3_rejects_an_odd_cross_width():
    schema = ml100k_schema()  # 7 fields
    with pytest.raises(ValueError, match="7 x 3 must be even"):
        build_model("dcnv3", schema, 1, embedding_dim=3).init(jax.random.key(0), make_ml100k_features(schema))


def make_ml100k_features(schema):
    from lipctr.models.parameter_counts import random_features

    return random_features(schema, 2, np.random.default_rng(0))


# ----------------------------------------------------------------------------- parameter counts


def closed_form(name: str, k: int, vocab: list[int], scalar: bool = False) -> int:
    """Trainable parameters of the reference implementation (plus our K-wide readouts) at the
    registry defaults on a schema with these vocabularies (every field a token / token_seq)."""
    d, f = 16, len(vocab)
    emb, D = d * sum(vocab), d * f
    def dense(i, o):
        return i * o + o
    def mlp(sizes):
        return sum(dense(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
    if name == "deepfm":  # RecBole: embeddings, first-order (K), MLP, deep predict layer; + FM readout [d, K]
        side = 1 if scalar else k
        return emb + sum(vocab) * side + side + mlp([D, 128, 128, 128]) + dense(128, k) + (0 if scalar else d * k)
    if name == "dcn":  # RecBole: cross w_l, b_l [D] x 6, MLP with batch-norm (scale, bias), predict layer
        return emb + 6 * 2 * D + mlp([D, 256, 256, 256]) + 3 * 2 * 256 + dense(D + 256, k)
    if name == "finalmlp":  # FuxiCTR: two gates (own context tables), two MLPs, fusion (w_x, w_y, w_xy)
        gates = sum(vocab[i] * d + mlp([d, 1024, 512, D]) for i in (0, 1))  # user / item context
        return emb + gates + mlp([D, 1024, 512]) + mlp([D, 1024, 512, 256]) + dense(512, k) + dense(256, k) \
            + 2 * (512 // 2) * (256 // 2) * k
    if name == "gdcn":  # FuxiCTR GDCN: 3 x (W, Wg [D, D], b [D]), MLP_Block with its output layer
        return emb + 3 * (2 * D * D + D) + mlp([D, 1024, 512, 256]) + dense(256, k)
    if name == "dcnv3":  # FuxiCTR: per layer W [D, D/2], b [D], LayerNorm(D/2); 4 + 4 layers; dfc, sfc
        layer = D * (D // 2) + D + 2 * (D // 2)
        return emb + 8 * layer + 2 * dense(D, k)
    raise KeyError(name)


@pytest.mark.parametrize("name", NEW)
def test_parameter_counts_equal_the_reference_closed_forms(name):
    schema = ml100k_schema()
    vocab = [field.vocab_size for field in schema.fields]
    for k in (1, 5):
        assert parameter_counts(name, schema, k)["total"] == closed_form(name, k, vocab), (name, k)


def test_deepfm_with_scalar_side_branches_is_recboles_parameter_count():
    from lipctr.models.parameter_counts import count, random_features

    schema = ml100k_schema()
    vocab = [field.vocab_size for field in schema.fields]
    model = build_model("deepfm", schema, 1, scalar_side_branches=True)
    params = jax.eval_shape(model.init, jax.random.key(0), random_features(schema, 2, np.random.default_rng(0)))
    assert count(params["params"]) == closed_form("deepfm", 1, vocab, scalar=True)
    assert closed_form("deepfm", 1, vocab) - closed_form("deepfm", 1, vocab, scalar=True) == 16  # the FM readout


# ----------------------------------------------------------------------------- aux_rating head


@pytest.mark.parametrize("name", NEW_ONE_FAST)
def test_aux_rating_click_column_is_the_k1_model_at_initialisation(name):
    """The controlled 1 + N model starts its click column exactly where the K = 1 model starts,
    and every K-wide leaf of it is the K = 1 leaf plus N columns."""
    small = SMALL_HP[name]
    features = make_features()
    full = controlled_model(build_model(name, SCHEMA, 6, **small), Controls(aux_rating=True))
    click = build_model(name, SCHEMA, 1, **small)
    key = {"params": jax.random.key(4), "dropout": jax.random.key(5)}
    vf, vc = full.init(key, features), click.init(key, features)
    wide = 0
    for a, b in zip(jax.tree.leaves(vf["params"]), jax.tree.leaves(vc["params"])):
        if a.shape != b.shape:  # K-wide: 6 columns where the K = 1 leaf has 1, column 0 its own
            axis = next(i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y)
            assert (a.shape[axis], b.shape[axis]) == (6, 1)
            a, wide = np.take(a, [0], axis=axis), wide + 1
        np.testing.assert_array_equal(a, b)
    assert wide
    got = full.apply(vf, features)
    assert got.shape == (B, 6)
    np.testing.assert_allclose(got[:, :1], click.apply(vc, features), rtol=1e-6, atol=1e-7)  # matmul widths differ


# ----------------------------------------------------------------------------- DCNv3's Tri-BCE option


def np_bce(logit, label):
    return np.mean(np.logaddexp(0.0, logit) - label * logit)


def test_dcnv3_tri_bce_adds_the_branch_terms_to_the_training_loss_and_is_off_by_default():
    """Without dropout or batch-norm the training forward is the deterministic one, so loss_fn
    (K = 1: BCE) must equal L + sum_b L_b max(L_b - L, 0) with L_b the BCE of each network's numpy
    logits; with tri_bce off (the default) it is L alone."""
    from lipctr.losses import LossConfig
    from lipctr.train import loss_fn

    features = make_features()
    label = np.array([1, 0, 1, 1, 0, 0], np.float32)
    hp = dict(num_heads=2, deep_net_dropout=0.0, shallow_net_dropout=0.0, num_deep_cross_layers=2,
              num_shallow_cross_layers=2)
    assert build_model("dcnv3", SCHEMA, 1).tri_bce is False
    _, variables, p = initialised("dcnv3", 1, **hp)
    x0 = np_head_inputs(np_embeddings(p, features), 2)
    deep, shallow = (np_cross_network(p[n], x0, 2, n == "ecn", True)[:, 0] for n in ("ecn", "lcn"))
    main = np_bce(0.5 * (deep + shallow), label)
    branches = [np_bce(z, label) for z in (deep, shallow)]
    batch = {"features": features, "rating": np.full(B, 4, np.int32), "label": label}

    def loss(tri_bce):
        model = build_model("dcnv3", SCHEMA, 1, tri_bce=tri_bce, **hp)
        value, state = loss_fn(model, LossConfig(lambda_r=0.5), variables["params"], {}, batch, jnp.ones(B),
                               jax.random.key(0))
        assert state == {}  # the sown branch logits do not leave the loss
        return float(value)

    np.testing.assert_allclose(loss(False), main, rtol=1e-5)
    want = main + sum(b * max(b - main, 0.0) for b in branches)
    assert want - main > 1e-3  # the terms are not negligible at these parameters
    np.testing.assert_allclose(loss(True), want, rtol=1e-5)


@pytest.mark.slow  # ~9 s; the Tri-BCE loss terms are checked in the default suite
def test_dcnv3_tri_bce_trains_under_jit_with_batch_norm_and_the_rating_head():
    """One jitted train step, K = 5 with batch-norm statistics: the state keeps only them, and the
    Tri-BCE gradient differs from the plain one."""
    import optax

    from lipctr.losses import LossConfig
    from lipctr.train import train_step

    features = make_features()
    rating = np.array([1, 5, 4, 2, 3, 5], np.int32)
    batch = {"features": features, "rating": rating, "label": (rating > 3).astype(np.float32)}
    grads = []
    for tri_bce in (False, True):
        model = build_model("dcnv3", SCHEMA, 5, batch_norm=True, tri_bce=tri_bce, num_deep_cross_layers=2,
                            num_shallow_cross_layers=1)
        variables = model.init(jax.random.key(0), features)
        state = {"batch_stats": variables["batch_stats"]}
        tx = optax.adam(1e-3)
        step = jax.jit(lambda p, s, o: train_step(model, LossConfig(lambda_r=0.5), tx, p, s, o, batch, jnp.ones(B),  # noqa: B023 (called within its iteration)
                                                  jax.random.key(1)))
        _, new_state, _, loss, g = step(variables["params"], state, tx.init(variables["params"]))
        assert set(new_state) == {"batch_stats"} and np.isfinite(float(loss))
        grads.append(g)
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), *grads)
    assert max(jax.tree.leaves(diff)) > 1e-6


def test_check_model_names_the_hyper_parameter_without_computing():
    from lipctr.models import check_model

    check_model("finalmlp", SCHEMA, 5)
    for name, hp, message in [("finalmlp", {"fs2_context": ("zip",)}, "FinalMLP.fs2_context: no field 'zip'"),
                              ("dcnv3", {"embedding_dim": 3}, "7 x 3 must be even"),
                              ("gdcn", {"structure": "both"}, "GDCN.structure must be one of"),
                              ("xdeepfm", {"cin_layer_size": (5, 4)}, "even")]:
        with pytest.raises(ValueError, match=message):
            check_model(name, ml100k_schema() if name == "dcnv3" else SCHEMA, 1, **hp)


# ----------------------------------------------------------------------------- sharding


SHARD_WORKER = r'''
import json, sys
from pathlib import Path
import numpy as np
import pandas as pd
from experiments import configs
from experiments.run import run_variant
from lipctr import sharding
from lipctr.ranking import ranking_candidates
from tests.tiny_data import tiny_dataset

out, ds = Path(sys.argv[1]), tiny_dataset()
candidates = ranking_candidates(ds, "test", 20, 0, "positive")
small = {"deepfm": {"mlp_hidden_size": [16]}, "dcn": {"mlp_hidden_size": [16], "cross_layer_num": 2},
         "finalmlp": {"mlp1_hidden_units": [16], "mlp2_hidden_units": [8], "fs_hidden_units": [8]},
         "gdcn": {"dnn_hidden_units": [16], "structure": "parallel"}, "dcnv3": {"num_heads": 2, "tri_bce": True}}
result = {}
for name, hp in small.items():
    config = configs.validate(configs.merge(configs.named_config(f"{name}_ml100k"), {
        "model_hparams": hp, "train": {"batch_size": 256, "max_epochs": 2, "patience": 10},
        "seeds": [2020, 2021], "variants": ["smooth"], "eval": {"num_negatives": 20}}))
    logits, losses = [], []
    for spec in ("", "seeds=2,data=2"):
        mesh = sharding.make_mesh(spec) if spec else None
        run_variant(config, ds, "smooth", out / name / (spec or "one"), candidates, progress=False, mesh=mesh)
        logits.append(np.load(out / name / (spec or "one") / "smooth" / "predictions.npz")["logits"])
        losses.append(pd.read_csv(out / name / (spec or "one") / "smooth" / "metrics.csv")["train_loss"].to_numpy())
    result[name] = {"logits": float(np.abs(logits[0] - logits[1]).max()), "shape": list(logits[0].shape),
                    "train_loss": float(np.abs(losses[0] - losses[1]).max())}
(out / "result.json").write_text(json.dumps(result))
'''


@pytest.mark.slow  # five backbones, two meshes, in a 4-device subprocess (minutes)
def test_sharded_runs_of_the_new_backbones_equal_the_unsharded_runs(tmp_path):
    """Two seeds of each (DCNv3 with Tri-BCE and 2 heads) for 2 epochs on a seeds=2 x data=2 mesh
    of 4 CPU devices give the unsharded run's training losses to 1e-5 and test logits to 1e-5.

    DCN's MLP has batch-norm: the dense bias before a batch-norm has a true gradient of 0, so its
    gradient is rounding noise that Adam turns into +-learning-rate steps, different on each mesh.
    They leave the training-mode outputs (normalised) unchanged but move the running means, so
    DCN's test logits agree to 1e-2 only (the existing DCNV2 differs by 4e-3 the same way)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "worker.py"
    script.write_text(SHARD_WORKER)
    env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_backend_optimization_level=0 --xla_force_host_platform_device_count=4")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, cwd=root, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert sorted(result) == sorted(NEW)
    assert all(facts["shape"][0] == 2 and facts["shape"][-1] == 5 for facts in result.values()), result
    assert all(facts["train_loss"] < 1e-5 for facts in result.values()), result
    assert all(facts["logits"] < (1e-2 if name == "dcn" else 1e-5) for name, facts in result.items()), result


@pytest.mark.parametrize("name", NEW_ONE_FAST)
def test_embedding_offset_shifts_the_field_embeddings(name):
    """The analyses' embedding_offset [B, F, d]: logits at e + delta equal numpy-free logits of a
    model whose embedding rows are moved by delta (checked on a token field of distinct ids)."""
    features = make_features()
    features["user_id"] = np.arange(1, B + 1, dtype=np.int32)  # distinct rows: each can be moved alone
    hparams = {**SMALL_HP[name], "num_heads": 1} if name == "dcnv3" else SMALL_HP[name]  # [B, F, d] offsets
    model, variables, _ = initialised(name, 5, **hparams)
    delta = np.zeros((B, SCHEMA.num_fields, model.embedding_dim), np.float32)
    delta[:, 0] = np.random.default_rng(0).normal(size=(B, model.embedding_dim))
    shifted = jax.tree.map(lambda x: x, variables)
    table = np.array(shifted["params"]["embedding"]["tables"]["user_id"]["embedding"])
    table[features["user_id"]] += delta[:, 0]
    shifted["params"]["embedding"]["tables"]["user_id"]["embedding"] = jnp.asarray(table)
    got = model.apply(variables, features, deterministic=True, embedding_offset=jnp.asarray(delta))
    np.testing.assert_allclose(got, model.apply(shifted, features, deterministic=True), rtol=1e-5, atol=1e-5)


def test_dcnv3_with_heads_refuses_a_per_head_width_offset():
    model, variables, _ = initialised("dcnv3", 1, num_heads=2)
    offset = jnp.zeros((B, SCHEMA.num_fields, model.embedding_dim))
    with pytest.raises(ValueError, match="num_heads=2: embedding_offset must be"):
        model.apply(variables, make_features(), embedding_offset=offset)


@pytest.mark.parametrize("setting,message", [
    ('model_hparams.fs1_context=["zip"]', "model_hparams: FinalMLP.fs1_context: no field 'zip' in the data"),
    ("model_hparams.num_heads=3", "model_hparams: FinalMLP.num_heads=3 must divide")])
def test_cli_refuses_a_bad_model_setting_before_any_run_directory(tmp_path, capsys, setting, message):
    from experiments import main as train_cli
    from tests.cli_support import one_error
    from tests.data_files import write_string_id_ratings

    write_string_id_ratings(tmp_path / "data")
    args = ["--data", str(tmp_path / "data"), "--format", "csv", "--inter", "ratings.csv", "--columns",
            "userId=user_id,movieId=item_id", "--runs-dir", str(tmp_path / "runs"), "--config", "finalmlp_ml100k",
            "--epochs", "1", "--seeds", "2020", "--no-progress", "--set", "eval.num_negatives=3", "--set", setting]
    line = one_error(capsys, train_cli.main(args))
    assert message in line, line
    assert not (tmp_path / "runs").exists()
