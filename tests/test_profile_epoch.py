"""benchmarks.profile_epoch's HLO attribution: dot FLOPs and op classes against a known program."""

import jax
import jax.numpy as jnp

from benchmarks.profile_epoch import describe_dot, parse_hlo, signature_flops, time_dot
from lipctr import random_bits


def test_dot_flops_and_classes_of_a_known_program():
    def f(x, w1, w2, key):
        h = jnp.tanh(x @ w1)  # [64, 32] @ [32, 48]
        mask = random_bits.bernoulli(key, 0.9, h.shape)
        return (jnp.where(mask, h, 0.0) @ w2).sum()  # [64, 48] @ [48, 8]

    args = (jnp.ones((64, 32)), jnp.ones((32, 48)), jnp.ones((48, 8)), jax.random.key(0))
    table = parse_hlo(jax.jit(f).lower(*args).compile().as_text())
    dots = [i for i in table.values() if i["class"] == "dot" and i["in_step"] and i["opcode"] not in ("while", "call")]
    assert sum(i["flops"] for i in dots) == 2 * 64 * 32 * 48 + 2 * 64 * 48 * 8  # counted once, not per fusion level
    assert any(i["class"] == "rng" for i in table.values())  # the threefry hash is recognised


def test_dot_signatures_rebuild_the_programs_dots():
    """Each in-step dot's (shapes, dimension numbers) rebuilds a dot of the same FLOPs, which
    time_dot compiles and runs alone."""
    def f(x, w1, w2):
        return (jnp.tanh(x @ w1) @ w2).sum()  # [64, 32] @ [32, 48], [64, 48] @ [48, 8]

    args = (jnp.ones((64, 32)), jnp.ones((32, 48)), jnp.ones((48, 8)))
    table = parse_hlo(jax.jit(jax.value_and_grad(f, argnums=(1, 2))).lower(*args).compile().as_text())
    signatures = [d for i in table.values() if i["in_step"] for d in i["dots"]]
    # forward 2 dots; backward: dw2, dh (through w2), dw1 -> 5 dots of known sizes
    expected = sorted([2 * 64 * 32 * 48] * 2 + [2 * 64 * 48 * 8] * 3)
    assert sorted(signature_flops(d) for d in signatures) == expected
    assert sum(i["flops"] for i in table.values() if i["in_step"] and i["class"] == "dot") == sum(expected)
    for d in signatures:
        lhs_dtype, lhs, rhs_dtype, rhs, numbers, _ = d
        out = jax.eval_shape(lambda a, b: jax.lax.dot_general(a, b, numbers), jnp.ones(lhs), jnp.ones(rhs))  # noqa: B023 (called within its iteration)
        assert 2 * out.size * (signature_flops(d) // (2 * out.size)) == signature_flops(d)
        assert describe_dot(d).startswith(f"{lhs_dtype}[{','.join(map(str, lhs))}] x {rhs_dtype}[")
        assert 0.0 < time_dot(d, calls=2) < 1.0


def test_dot_forms_compute_the_same_product():
    """Every form of a dot (as compiled, operands swapped, an operand transposed first) gives the
    product numpy computes, for each contraction layout; compare_dot_forms times them all."""
    import numpy as np

    from benchmarks.profile_epoch import compare_dot_forms, dot_forms, dot_operands

    for lhs, rhs, contract in (((24, 16), (16, 8), ((1,), (0,))), ((24, 16), (24, 8), ((0,), (0,))),
                               ((24, 16), (8, 16), ((1,), (1,))), ((16, 24), (8, 16), ((0,), (1,)))):
        signature = ("f32", lhs, "f32", rhs, (contract, ((), ())), "f32")
        a, b = dot_operands(signature)
        a64 = np.asarray(a, np.float64) if contract[0] == (1,) else np.asarray(a, np.float64).T
        b64 = np.asarray(b, np.float64) if contract[1] == (0,) else np.asarray(b, np.float64).T
        forms = dot_forms(signature)
        assert set(forms) == {"as compiled", "operands swapped", "lhs transposed first", "rhs transposed first"}
        for name, dot in forms.items():
            np.testing.assert_allclose(np.asarray(jax.jit(dot)(a, b)), a64 @ b64, rtol=1e-5, atol=1e-5, err_msg=name)
    compared = compare_dot_forms(signature, calls=2)
    assert compared["as compiled"]["bit_equal"] and all(0.0 < f["ms"] < 1e3 for f in compared.values())
    batched = ("f32", (4, 6, 3), "f32", (4, 6, 5), (((1,), (1,)), ((0,), (0,))), "f32")
    assert list(dot_forms(batched)) == ["as compiled"]  # batched dots keep their one form
    full = ("f32", (6, 3), "f32", (6, 3), (((0, 1), (0, 1)), ((), ())), "f32")  # contracts both axes
    assert list(dot_forms(full)) == ["as compiled"]


def test_tree_reductions_are_classed_as_reductions():
    """XLA:CPU rewrites a long sum into reduce-window fusions; they count as "reduce"."""
    table = parse_hlo(jax.jit(lambda x: x.sum(0)).lower(jnp.ones((4096, 64))).compile().as_text())
    classes = {i["class"] for i in table.values() if i["in_step"] and i["opcode"] == "fusion"}
    assert classes == {"reduce"}


def test_seeds_below_one_is_a_one_line_usage_error(capsys):
    import pytest

    from benchmarks.profile_epoch import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--seeds", "0"])
    assert exit_info.value.code == 2
    assert "--seeds must be at least 1, got 0" in capsys.readouterr().err
