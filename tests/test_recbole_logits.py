"""benchmarks.recbole_logits: lipctr's side of the same-logits check against RecBole 1.2.1 (no torch
needed), and, where the bench venv exists, the check itself (slow)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from benchmarks import recbole_logits as rl
from lipctr.models import build_model
from tests.tiny_data import tiny_dataset

REPO = Path(__file__).resolve().parents[1]
BENCH_PYTHON = os.environ.get("LIPCTR_BENCH_PYTHON", "/work/venv-bench/bin/python")
ML100K = Path(os.environ.get("LIPCTR_DATA", REPO / "datasets")) / "ml-100k"
ROWS = 16


@pytest.fixture(scope="module")
def tiny():
    return tiny_dataset()


@functools.cache
def exported(case: str) -> dict:
    return rl.export_case(case, tiny_dataset(), ROWS)


@pytest.mark.parametrize("case", [c if c in ("deepfm", "dcn") else pytest.param(c, marks=pytest.mark.slow)
                                  for c in rl.CASES])
def test_export_holds_every_variable_leaf_batch_and_vocabulary(case, tiny):
    """Every params / batch_stats leaf with the model's own shape, the batch, a raw token for every
    id, K = 1 logits; every constant-initialised leaf redrawn except the FM readout (kept at 1)."""
    arrays = exported(case)
    model_name, extra = rl.case_hparams(case)
    model = build_model(model_name, tiny.schema, 1, **extra)
    features = {k: v[:ROWS] for k, v in tiny.test.features.items()}
    shapes = jax.eval_shape(model.init, {"params": jax.random.key(0), "dropout": jax.random.key(1)}, features)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    expected = {k: v.shape for c, tree in zeros.items() for k, v in rl.flat_leaves(tree, c).items()}
    assert {k: v.shape for k, v in arrays.items() if k.startswith(("params/", "batch_stats/"))} == expected
    for field in tiny.schema.fields:
        assert arrays[f"features/{field.name}"].shape == tiny.test.features[field.name][:ROWS].shape
        tokens = arrays[f"tokens/{field.name}"]
        assert tokens.shape == (field.vocab_size,) and tokens[0] == rl.PAD and len(set(tokens)) == field.vocab_size
    assert arrays["logits"].shape == (ROWS,) and np.isfinite(arrays["logits"]).all()
    assert list(arrays["fields"]) == list(tiny.schema.names)
    assert str(arrays["first_order_pooling"]) == extra.get("first_order_pooling", "")
    for name in expected:
        leaf = arrays[name]
        if name.endswith("/fm_weights"):
            assert (leaf == 1.0).all()
        elif leaf.size > 1:
            assert np.ptp(leaf) > 0, name


def test_exported_logits_are_the_models_on_the_exported_variables(tiny):
    arrays = exported("dcn")
    model = build_model("dcn", tiny.schema, 1)
    variables = {c: rl.unflatten(arrays, c) for c in ("params", "batch_stats")}
    features = {k: v[:ROWS] for k, v in tiny.test.features.items()}
    logits = jax.jit(lambda v, x: model.apply(v, x, deterministic=True))(variables, features)[:, 0]
    np.testing.assert_array_equal(logits, arrays["logits"])


def test_cases_with_a_first_order_term_get_the_pooling_asked_for():
    assert rl.case_hparams("deepfm") == ("deepfm", {"first_order_pooling": "sum"})
    assert rl.case_hparams("deepfm_scalar", "mean") == ("deepfm", {"scalar_side_branches": True,
                                                                   "first_order_pooling": "mean"})
    assert rl.case_hparams("dcn") == ("dcn", {})


@pytest.mark.parametrize("module", ["first_order", "wide"])
def test_first_order_pooling_gap_is_the_sum_minus_the_mean_of_a_sequence_fields_weights(module):
    """Under "mean" the gap is RecBole's sum minus lipctr's mean; under "sum" none."""
    weights = np.array([[0.0], [1.0], [2.0], [4.0]], np.float32)
    arrays = {"fields": np.array(["user_id", "genre"]), "logits": np.zeros(3, np.float32),
              "features/user_id": np.array([1, 2, 3]), "features/genre": np.array([[1, 2, 3], [3, 0, 0], [0, 0, 0]]),
              f"params/{module}/weights/user_id/embedding": weights,
              f"params/{module}/weights/genre/embedding": weights, f"params/{module}/bias": np.zeros(1, np.float32),
              "first_order_pooling": np.asarray("mean")}
    np.testing.assert_allclose(rl.first_order_pooling_gap(arrays), [7.0 - 7.0 / 3, 0.0, 0.0])
    arrays["first_order_pooling"] = np.asarray("sum")  # lipctr sums as RecBole does: no gap
    np.testing.assert_array_equal(rl.first_order_pooling_gap(arrays), np.zeros(3))
    arrays = {k: v for k, v in arrays.items() if not k.startswith("params/")}  # no first-order term (DCN): no gap
    arrays["first_order_pooling"] = np.asarray("")
    np.testing.assert_array_equal(rl.first_order_pooling_gap(arrays), np.zeros(3))


def test_rows_of_tokens_translates_ids_and_refuses_different_vocabularies():
    recbole, lipctr = np.array(["[PAD]", "b", "a", "c"]), np.array(["[PAD]", "a", "b", "c"])
    np.testing.assert_array_equal(rl.rows_of_tokens(recbole, lipctr), [0, 2, 1, 3])
    with pytest.raises(ValueError, match="vocabularies differ"):
        rl.rows_of_tokens(np.array(["[PAD]", "a", "d"]), np.array(["[PAD]", "a", "b"]))


def test_flat_order_puts_recboles_sequence_fields_first():
    """RecBole concatenates token_seq fields before token fields; lipctr keeps the schema's order."""
    order = rl.flat_order(["genre", "user_id", "item_id"], ["user_id", "item_id", "genre"], 2)
    np.testing.assert_array_equal(order, [4, 5, 0, 1, 2, 3])


@pytest.mark.parametrize("argv, message", [
    (["--cases", "deepfm,lstm"], "unknown case"),
    (["--data", "no-such-folder"], "ml-100k.inter not found"),
])
def test_bad_arguments_get_one_line_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert rl.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(not Path(BENCH_PYTHON).is_file(),
                    reason=f"no bench venv at {BENCH_PYTHON} (set LIPCTR_BENCH_PYTHON to a python with torch and "
                           "recbole 1.2.1; python -m benchmarks.vs_torch --help says how to make one)")
@pytest.mark.skipif(not (ML100K / "ml-100k.inter").is_file(), reason=f"no ML-100K atomic files in {ML100K}")
def test_recbole_gives_the_same_logits_for_the_same_weights(tmp_path):
    """Every case (DeepFM, DeepFM scalar, DCN, WideDeep, NFM) the same logits to 1e-5 outright, the
    first-order terms summing a token_seq field's weights as RecBole's (first_order_pooling "sum")."""
    out = tmp_path / "result.json"
    assert rl.main(["--torch-python", BENCH_PYTHON, "--data", str(ML100K), "--json", str(out)]) == 0
    results = {r["case"]: r for r in json.loads(out.read_text())}
    assert set(results) == set(rl.CASES)
    for r in results.values():
        assert r["max_abs_diff"] <= 1e-5 and r["max_abs_diff_after_known_gap"] <= 1e-5 and not r["unused_lipctr"], r
        assert [k for k in r["unfilled_recbole"] if not k.endswith("num_batches_tracked")] == [] or r["case"] == "dcn"
    unfilled = [k for k in results["dcn"]["unfilled_recbole"] if not k.endswith("num_batches_tracked")]
    assert all(k.startswith("first_order_linear.") for k in unfilled)  # built by RecBole, unused by its DCN
