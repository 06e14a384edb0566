"""The library is as strict as the CLI: LossConfig ranges at construction, ratings outside the
rating head (eagerly, and under jit through checkify with debug=True), and metrics' labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from sklearn.metrics import roc_auc_score

from lipctr import metrics
from lipctr.losses import LossConfig, multihead_loss


@pytest.mark.parametrize("field, value", [("lambda_r", 1.5), ("lambda_r", -0.1), ("lambda_r", float("nan")),
                                          ("label_smoothing", 1.0), ("threshold", 0), ("threshold", 2.5),
                                          ("threshold", True), ("aux_rating", "yes"), ("scale_penalty", 1)])
def test_loss_config_refuses_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=f"LossConfig.{field}"):
        LossConfig(**{field: value})


def test_loss_config_accepts_the_ends_and_traced_values():
    assert LossConfig(lambda_r=0.0).lambda_r == 0.0
    assert LossConfig(lambda_r=1).lambda_r == 1
    assert LossConfig(lambda_r=np.float32(0.25), label_smoothing=0.0).lambda_r == np.float32(0.25)
    # inside the trainer lambda_r is a traced per-member value: not checked, not refused
    doubled = jax.jit(lambda lam: LossConfig(lambda_r=lam).lambda_r * 2)(jnp.float32(3.0))
    assert float(doubled) == 6.0


def batch(seed=0, n=8, width=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, width)).astype(np.float32)
    return logits, rng.integers(1, width + 1, n).astype(np.int32), rng.integers(0, 2, n).astype(np.float32)


def np_ce(logits, rating):
    z = logits.astype(np.float64)
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    return -log_p[np.arange(len(rating)), rating - 1]


@pytest.mark.parametrize("bad", [6, 0, -1])
def test_rating_outside_the_head_is_refused_eagerly(bad):
    logits, rating, label = batch()
    rating[3] = bad
    with pytest.raises(ValueError, match=r"rating must lie in 1\.\.5"):
        multihead_loss(logits, rating, label, LossConfig(lambda_r=1.0))
    aux = np.concatenate([logits[:, :1], logits], axis=1)  # [B, 1 + 5]: the rating head is 5 wide
    with pytest.raises(ValueError, match=r"rating must lie in 1\.\.5"):
        multihead_loss(aux, rating, label, LossConfig(lambda_r=1.0, aux_rating=True))


def test_padding_rows_of_weight_zero_may_hold_any_rating():
    logits, rating, label = batch(1)
    rating[-2:] = 0
    weights = np.array([1] * 6 + [0, 0], np.float32)
    got = float(multihead_loss(logits, rating, label, LossConfig(lambda_r=1.0), weights=weights))
    assert got == pytest.approx(np_ce(logits[:6], rating[:6]).mean(), rel=1e-5)


def test_threshold_must_leave_both_classes_of_the_head():
    logits, rating, label = batch(2, width=3)
    with pytest.raises(ValueError, match="threshold 3 .* 3-wide"):
        multihead_loss(logits, rating, label, LossConfig(threshold=3))


def test_debug_checks_traced_ratings_through_checkify():
    logits, rating, label = batch(3)
    config = LossConfig(lambda_r=1.0, debug=True)
    checked = jax.jit(checkify.checkify(lambda z, r, y: multihead_loss(z, r, y, config)))
    error, value = checked(logits, rating, label)
    error.throw()  # valid ratings: no error
    assert float(value) == pytest.approx(np_ce(logits, rating).mean(), rel=1e-5)
    for bad in (6, 0):
        wrong = rating.copy()
        wrong[5] = bad
        error, _ = checked(logits, wrong, label)
        with pytest.raises(checkify.JaxRuntimeError, match=rf"1 ratings outside 1\.\.5, e\.g\. {bad}"):
            error.throw()


def test_default_traced_loss_holds_no_check():
    """debug=False adds nothing to the traced program (the trainer's numerics and speed); debug=True
    under checkify adds the check."""
    logits, rating, label = batch(4)
    plain = str(jax.make_jaxpr(lambda z, r, y: multihead_loss(z, r, y, LossConfig()))(logits, rating, label))
    assert "check" not in plain and "callback" not in plain
    def checked(debug):
        fn = checkify.checkify(lambda z, r, y: multihead_loss(z, r, y, LossConfig(debug=debug)))
        return jax.make_jaxpr(fn)(logits, rating, label).jaxpr

    assert "lt" in str(checked(True)) and len(checked(True).eqns) > len(checked(False).eqns)


def test_metrics_refuse_labels_that_are_not_0_or_1():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 50).astype(np.float32)
    scores = rng.random(50).astype(np.float32)
    assert float(metrics.auc(scores, labels)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert float(metrics.auc(scores=scores, labels=labels)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    with pytest.raises(ValueError, match=r"auc: labels must be 0 or 1.*auc\(scores, labels\)"):
        metrics.auc(labels, scores)  # sklearn's order
    with pytest.raises(ValueError, match=r"log_loss: labels must be 0 or 1"):
        metrics.log_loss(labels, scores)
    # under vmap with shared labels (the evaluation's form) the labels are still concrete and checked
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        jax.vmap(metrics.auc, in_axes=(0, None))(np.stack([labels, labels]), scores)
