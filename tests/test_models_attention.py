"""Architecture tests for AutoInt, FiGNN and EulerNet against independent numpy computations."""

from __future__ import annotations

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipctr.data.schema import Field, Schema
from lipctr.models import build_model
from lipctr.models.autoint import SelfAttention
from lipctr.models.eulernet import EulerInteractionLayer
from lipctr.models.fignn import GraphLayer, GRUCell, aggregate_messages, edge_attention

SCHEMA = Schema(
    (
        Field("user_id", "token", "user", 11),
        Field("item_id", "token", "item", 13),
        Field("genre", "token_seq", "item", 6, max_len=3),
        Field("price", "float", "item"),
    )
)
B = 6
TOL = dict(rtol=1e-4, atol=1e-5)


def make_features(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, 6, (B, 3)).astype(np.int32)
    genre[0] = 0  # an all-padding sequence
    return {
        "user_id": rng.integers(0, 11, B).astype(np.int32),
        "item_id": rng.integers(0, 13, B).astype(np.int32),
        "genre": genre,
        "price": rng.random(B).astype(np.float32),
    }


@functools.cache
def initialised(name: str, k: int, **hparams):
    """(model, variables, float64 numpy params), built once per configuration (init is costly)."""
    model = build_model(name, SCHEMA, k, **hparams)
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, make_features())
    return model, variables, jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"])


def np_tables(tables, features, width_key="embedding"):
    """Per-field outputs stacked to [B, F, w] from numpy tables (independent of lipctr.models.base)."""
    out = []
    for field in SCHEMA.fields:
        values = features[field.name]
        if field.kind == "float":
            out.append(values[:, None] * tables[field.name])
        elif field.kind == "token":
            out.append(tables[field.name][width_key][values])
        else:
            rows = tables[field.name][width_key][values]  # [B, L, w]
            mask = (values != 0)[..., None]
            out.append((rows * mask).sum(1) / np.maximum(mask.sum(1), 1))
    return np.stack(out, 1)


def np_embeddings(params, features):
    return np_tables(params["embedding"]["tables"], features)


def np_dense(p, x):
    return x @ p["kernel"] + p["bias"]


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def np_self_attention(p, x, heads):
    """PyTorch MultiheadAttention over fields, head by head: [B, F, E] -> [B, F, E]."""
    width = x.shape[-1]
    hd = width // heads
    kernel, bias = p["in_proj"]["kernel"], p["in_proj"]["bias"]
    outs = []
    for h in range(heads):
        cols = [slice(part * width + h * hd, part * width + (h + 1) * hd) for part in range(3)]
        q, k, v = (x @ kernel[:, c] + bias[c] for c in cols)
        weights = np_softmax(q @ k.transpose(0, 2, 1) / np.sqrt(hd))
        outs.append(weights @ v)
    return np_dense(p["out_proj"], np.concatenate(outs, -1))


def np_first_order(p, features):
    return np_tables(p["weights"], features).sum(1) + p["bias"]


# ----------------------------------------------------------------------------- AutoInt


def test_self_attention_matches_numpy_per_head():
    x = np.random.default_rng(1).normal(size=(B, 5, 8)).astype(np.float32)
    layer = SelfAttention(num_heads=2, dropout=0.2)
    variables = layer.init(jax.random.key(0), x, True)
    got = layer.apply(variables, x, True)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    np.testing.assert_allclose(got, np_self_attention(params, x.astype(np.float64), 2), **TOL)


def test_self_attention_dropout_acts_on_weights_only_in_training():
    x = np.random.default_rng(2).normal(size=(B, 5, 8)).astype(np.float32)
    layer = SelfAttention(num_heads=2, dropout=0.5)
    variables = layer.init(jax.random.key(0), x, True)
    train = layer.apply(variables, x, False, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(train, layer.apply(variables, x, True))
    no_drop = SelfAttention(num_heads=2, dropout=0.0).apply(variables, x, False, rngs={"dropout": jax.random.key(3)})
    np.testing.assert_allclose(no_drop, layer.apply(variables, x, True), **TOL)


def test_self_attention_rejects_indivisible_heads():
    x = np.zeros((2, 3, 8), np.float32)
    with pytest.raises(ValueError, match="divisible by num_heads=3"):
        SelfAttention(num_heads=3).init(jax.random.key(0), x, True)


@pytest.mark.parametrize("has_residual, k", [(False, 1), (True, 5)])
def test_autoint_forward_matches_numpy(has_residual, k):
    features = make_features()
    model, variables, p = initialised("autoint", k, has_residual=has_residual, mlp_hidden_size=(32, 16))
    emb = np_embeddings(p, features)
    cross = np_dense(p["att_embedding"], emb)
    for i in range(model.n_layers):
        cross = np_self_attention(p[f"self_attn_{i}"], cross, model.num_heads)
    if has_residual:
        cross = cross + np_dense(p["v_res_embedding"], emb)
    else:
        assert "v_res_embedding" not in p
    attn = np_dense(p["attn_fc"], np.maximum(cross, 0).reshape(B, -1))
    deep = emb.reshape(B, -1)
    for layer in ("Dense_0", "Dense_1"):
        deep = np.maximum(np_dense(p["mlp"][layer], deep), 0)
    want = attn + np_dense(p["deep_predict_layer"], deep) + np_first_order(p["first_order_linear"], features)
    got = model.apply(variables, features, deterministic=True)
    assert got.shape == (B, k)
    np.testing.assert_allclose(got, want, **TOL)


def test_autoint_without_mlp_has_no_deep_branch():
    model, variables, _ = initialised("autoint", 5, mlp_hidden_size=())
    assert "mlp" not in variables["params"] and "deep_predict_layer" not in variables["params"]
    assert model.apply(variables, make_features(), deterministic=True).shape == (B, 5)


def test_autoint_rejects_wrong_dropout_list():
    model = build_model("autoint", SCHEMA, 1, dropout_probs=(0.1, 0.1))
    with pytest.raises(ValueError, match="dropout_probs must hold 3 rates"):
        model.init(jax.random.key(0), make_features())


# ----------------------------------------------------------------------------- FiGNN


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_gru(p, x, h):
    """PyTorch GRUCell written gate by gate."""
    d = h.shape[-1]

    def gate(i):
        return slice(i * d, (i + 1) * d)

    wi, wh, bi, bh = p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
    r = np_sigmoid(x @ wi[:, gate(0)] + bi[gate(0)] + h @ wh[:, gate(0)] + bh[gate(0)])
    z = np_sigmoid(x @ wi[:, gate(1)] + bi[gate(1)] + h @ wh[:, gate(1)] + bh[gate(1)])
    n = np.tanh(x @ wi[:, gate(2)] + bi[gate(2)] + r * (h @ wh[:, gate(2)] + bh[gate(2)]))
    return (1 - z) * n + z * h


def np_graph_layer(p, g, h):
    """a_i = W_in[i] sum_j g_ij W_out[j] h_j + b, with explicit loops over fields."""
    batch, fields, width = h.shape
    a = np.zeros_like(h)
    for b in range(batch):
        h_out = [h[b, j] @ p["W_out"][j] for j in range(fields)]
        for i in range(fields):
            aggregated = sum(g[b, i, j] * h_out[j] for j in range(fields))
            a[b, i] = aggregated @ p["W_in"][i] + p["bias_p"]
    return a


def np_edge_graph(h, kernel):
    """Softmax over j != i of LeakyReLU(w^T [h_i; h_j]), looped over pairs."""
    batch, fields, _ = h.shape
    g = np.zeros((batch, fields, fields))
    for b in range(batch):
        for i in range(fields):
            others = [j for j in range(fields) if j != i]
            alpha = np.array([np.concatenate([h[b, i], h[b, j]]) @ kernel[:, 0] for j in others])
            alpha = np.where(alpha > 0, alpha, 0.01 * alpha)
            g[b, i, others] = np_softmax(alpha)
    return g


def test_gru_cell_matches_numpy():
    rng = np.random.default_rng(4)
    x, h = rng.normal(size=(9, 8)).astype(np.float32), rng.normal(size=(9, 8)).astype(np.float32)
    cell = GRUCell()
    variables = cell.init(jax.random.key(0), x, h)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    assert all(np.abs(v).max() <= 1 / np.sqrt(8) for v in p.values())
    np.testing.assert_allclose(cell.apply(variables, x, h), np_gru(p, x, h), **TOL)


def test_graph_layer_and_edge_attention_match_numpy_loops():
    rng = np.random.default_rng(5)
    h = rng.normal(size=(3, 4, 8)).astype(np.float32)
    kernel = rng.normal(size=(16, 1)).astype(np.float32)
    g = np.asarray(edge_attention(jnp.asarray(h), jnp.asarray(kernel)))
    np.testing.assert_allclose(g, np_edge_graph(h.astype(np.float64), kernel), **TOL)
    layer = GraphLayer()
    variables = layer.init(jax.random.key(0), g, h)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    np.testing.assert_allclose(layer.apply(variables, g, h), np_graph_layer(p, g, h), **TOL)


_AGGREGATION_BITS = """
from lipctr import runtime
runtime.configure_xla()
import jax, jax.numpy as jnp, numpy as np
from lipctr.models.fignn import aggregate_messages
rng = np.random.default_rng(6)
args = (jnp.asarray(rng.random((512, 7, 7)), jnp.float32), jnp.asarray(rng.normal(size=(512, 7, 8)), jnp.float32),
        jnp.asarray(rng.normal(size=(512, 7, 8)), jnp.float32))
def value_and_grads(f):  # arguments, not closed-over constants (which XLA would fold at compile time)
    def run(g, m, ct):
        out, vjp = jax.vjp(f, g, m)
        return (out, *vjp(ct))
    return jax.jit(run)(*args)
ours = value_and_grads(aggregate_messages)
einsum = value_and_grads(lambda g, m: jnp.einsum("bij,bjo->bio", g, m))
print([np.asarray(a).tobytes() == np.asarray(b).tobytes() for a, b in zip(ours, einsum)])
"""


def test_message_aggregation_matches_numpy_and_is_the_batched_dot_bit_for_bit():
    """aggregate_messages (a broadcast product summed over j) is the einsum numpy computes; and
    under the CLIs' XLA:CPU flags (lipctr.runtime, set in a fresh process) it gives the batched
    dot's bits, forward and both gradients, so replacing the dot left trained FiGNNs unchanged."""
    rng = np.random.default_rng(6)
    graph, messages = rng.random((5, 7, 7)), rng.normal(size=(5, 7, 8))
    np.testing.assert_allclose(aggregate_messages(jnp.asarray(graph, jnp.float32), jnp.asarray(messages, jnp.float32)),
                               np.einsum("bij,bjo->bio", graph, messages), **TOL)
    if jax.default_backend() != "cpu":
        return
    done = subprocess.run([sys.executable, "-c", _AGGREGATION_BITS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[True, True, True]"


def np_fignn(p, features, model):
    emb = np_embeddings(p, features)
    h0 = np_self_attention(p["self_attn"], np_dense(p["att_embedding"], emb), model.num_heads)
    h0 = np.maximum(h0 + np_dense(p["v_res_embedding"], emb), 0)
    g = np_edge_graph(h0, p["W_attn"])
    h = h0
    for i in range(model.n_layers - 1):
        a = np_graph_layer(p[f"gnn_{i}"], g, h)
        h = np_gru(p["gru_cell"], a.reshape(-1, h.shape[-1]), h.reshape(-1, h.shape[-1])).reshape(h.shape) + h0
    logits = []
    for k in range(model.num_outputs):
        score = h @ p["mlp1"][k, :, 0]  # [B, F]
        weight = h.reshape(B, -1) @ p["mlp2"][k]  # [B, F]
        logits.append((score * weight).sum(1))
    return np.stack(logits, 1)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_fignn_forward_matches_numpy(n_layers):
    features = make_features(1)
    model, variables, p = initialised("fignn", 5, n_layers=n_layers)
    assert sorted(k for k in p if k.startswith("gnn_")) == [f"gnn_{i}" for i in range(n_layers - 1)]
    np.testing.assert_allclose(
        model.apply(variables, features, deterministic=True), np_fignn(p, features, model), **TOL
    )


def test_fignn_has_one_independent_scorer_per_class():
    features = make_features(2)
    model5, variables, _ = initialised("fignn", 5, n_layers=2)
    params = variables["params"]
    assert params["mlp1"].shape == (5, 8, 1) and params["mlp2"].shape == (5, 4 * 8, 4)
    logits = model5.apply(variables, features, deterministic=True)
    model1 = build_model("fignn", SCHEMA, 1)
    for k in range(5):
        single = dict(params, mlp1=params["mlp1"][k : k + 1], mlp2=params["mlp2"][k : k + 1])
        np.testing.assert_allclose(
            model1.apply({"params": single}, features, deterministic=True)[:, 0], logits[:, k], **TOL
        )
    bumped = dict(params, mlp2=params["mlp2"].at[2].multiply(3.0))
    moved = np.abs(np.asarray(model5.apply({"params": bumped}, features, deterministic=True) - logits)).max(0)
    assert moved[2] > 1e-4 and np.all(np.delete(moved, 2) == 0)


def test_fignn_rejects_a_single_field():
    schema = Schema((Field("user_id", "token", "user", 5),))
    model = build_model("fignn", schema, 1)
    with pytest.raises(ValueError, match="at least 2 fields"):
        model.init(jax.random.key(0), {"user_id": np.zeros(2, np.int32)})


# ----------------------------------------------------------------------------- EulerNet


def np_euler_layer(p, r, p_im, apply_norm):
    """Euler interaction layer with numpy complex arithmetic: z^orders via principal log/exp."""
    batch, _, dim = r.shape
    z = r + 1j * p_im  # [B, F_in, d]
    orders = p["inter_orders"]  # [F_in, F_out]
    powered = np.exp(np.einsum("bfd,fo->bod", np.log(z), orders))  # prod_f z_f ** orders[f, o]
    explicit = powered * np.exp((p["bias_lam"] + 1j * p["bias_theta"]).T)
    implicit_r = np.maximum(np_dense(p["im"], r.reshape(batch, -1)), 0).reshape(batch, -1, dim)
    implicit_p = np.maximum(np_dense(p["im"], p_im.reshape(batch, -1)), 0).reshape(batch, -1, dim)
    out_r, out_p = implicit_r + explicit.real, implicit_p + explicit.imag
    if apply_norm:
        out_r, out_p = (
            (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * q["scale"] + q["bias"]
            for x, q in ((out_r, p["norm_r"]), (out_p, p["norm_p"]))
        )
    return out_r, out_p


def test_euler_layer_matches_complex_arithmetic():
    rng = np.random.default_rng(6)
    r, p_im = (rng.normal(size=(B, 4, 16)) for _ in range(2))
    layer = EulerInteractionLayer(out_fields=3, drop_ex=0.3, drop_im=0.5)
    variables = layer.init(jax.random.key(0), r.astype(np.float32), p_im.astype(np.float32), True)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    params["inter_orders"] = rng.normal(size=(4, 3))  # generic real orders, not near one-hot
    got = layer.apply({"params": params}, r, p_im, True)
    want = np_euler_layer(params, r, p_im, apply_norm=False)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("apply_norm, k", [(False, 5), (True, 1)])
def test_eulernet_forward_matches_numpy(apply_norm, k):
    features = make_features(3)
    model, variables, p = initialised("eulernet", k, order_list=(5, 3), apply_norm=apply_norm)
    assert np.allclose(p["euler_0"]["inter_orders"].sum(0), 1.0)
    emb = np_embeddings(p, features)
    r, p_im = p["mu"] * np.cos(emb), p["mu"] * np.sin(emb)
    for i in range(2):
        r, p_im = np_euler_layer(p[f"euler_{i}"], r, p_im, apply_norm)
    want = np_dense(p["reg"], r.reshape(B, -1)) + np_dense(p["reg"], p_im.reshape(B, -1))
    got = model.apply(variables, features, deterministic=True)
    assert got.shape == (B, k)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_eulernet_penalty_is_weighted_sum_of_unsquared_norms():
    _, variables, p = initialised("eulernet", 5, order_list=(5, 3), apply_norm=False)
    model = build_model("eulernet", SCHEMA, 5, order_list=(5, 3), reg_weight=0.01)
    covered = [p["euler_0"], p["euler_1"], p["mu"], p["reg"]]
    assert any(not leaf.any() for leaf in jax.tree.leaves(covered))  # zero biases: the norm's kink
    want = 0.01 * sum(np.sqrt((leaf**2).sum()) for leaf in jax.tree.leaves(covered))
    np.testing.assert_allclose(model.penalty(variables["params"]), want, rtol=1e-5)
    grads = jax.jit(jax.grad(model.penalty))(variables["params"])
    assert all(np.all(g == 0) for g in jax.tree.leaves(grads["embedding"]))
    for g, leaf in zip(jax.tree.leaves([grads[n] for n in ("euler_0", "euler_1", "mu", "reg")]),
                       jax.tree.leaves(covered)):
        norm = np.sqrt((leaf**2).sum())
        want_grad = 0.01 * leaf / norm if norm > 0 else np.zeros_like(leaf)  # zero-init biases: 0, not NaN
        np.testing.assert_allclose(g, want_grad, rtol=1e-4, atol=1e-7)


def test_penalty_is_zero_for_autoint_and_fignn_and_checks_eulernet_params():
    features = make_features()
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    for name in ("autoint", "fignn"):
        model = build_model(name, SCHEMA, 1)
        assert float(model.penalty(jax.eval_shape(model.init, keys, features)["params"])) == 0.0
    model, variables, _ = initialised("eulernet", 5, order_list=(5, 3), apply_norm=False)
    with pytest.raises(KeyError, match="missing \\['mu'\\]"):
        model.penalty({k: v for k, v in variables["params"].items() if k != "mu"})


def test_default_hparams_are_the_authors_ml1m_settings():
    from lipctr.models import default_hparams

    assert default_hparams("autoint") == dict(
        embedding_dim=16, attention_size=8, n_layers=3, num_heads=2, dropout_probs=(0.2, 0.2, 0.2),
        mlp_hidden_size=(256, 256, 256), has_residual=False,
        scalar_side_branches=False,  # the mechanism study's switch to the authors' width-1 side branch
        first_order_pooling="mean",  # a token_seq field's first-order weights ("sum": RecBole's)
    )
    assert default_hparams("fignn") == dict(
        embedding_dim=16, attention_size=8, n_layers=2, num_heads=2, attn_dropout_prob=0.2,
        hidden_dropout_prob=0.3,
    )
    assert default_hparams("eulernet") == dict(
        embedding_dim=16, order_list=(8,), drop_ex=0.3, drop_im=0.5, apply_norm=False, reg_weight=5e-4,
    )
