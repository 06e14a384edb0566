"""lipctr.losses against an independent float64 numpy implementation of eqs. 8 and 10-13."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipctr.losses import LossConfig, click_probability, multihead_loss

N, THRESHOLD = 5, 3


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_log_phat(z, threshold):
    """(log p_hat, log(1 - p_hat)) of eq. 11: the softmax mass of ratings above / at or below t_sh."""
    log_p = np_log_softmax(z)
    return np.logaddexp.reduce(log_p[:, threshold:], axis=1), np.logaddexp.reduce(log_p[:, :threshold], axis=1)


def np_log_sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def np_reference_loss(z, rating, label, lam, threshold=THRESHOLD, aggregation="prob", penalty=0.0, scale=True):
    """Eq. 13 = lam * CE (eq. 10) + (1 - lam) * BCE(p_hat) (eqs. 11-12), or BCE (eq. 8) for one logit."""
    z = np.asarray(z, np.float64)
    if z.shape[1] == 1:
        log_p, log_q = np_log_sigmoid(z[:, 0]), np_log_sigmoid(-z[:, 0])
    elif aggregation == "logit_sum":
        pair = z[:, threshold:].sum(1) - z[:, :threshold].sum(1)
        log_p, log_q = np_log_sigmoid(pair), np_log_sigmoid(-pair)
    else:
        log_p, log_q = np_log_phat(z, threshold)
    bce = -np.mean(label * log_p + (1 - label) * log_q)
    if z.shape[1] == 1:
        return bce + penalty
    onehot = np.eye(z.shape[1])[rating - 1]
    ce = -np.mean((onehot * np_log_softmax(z)).sum(1))
    if scale:
        return lam * ce + (1 - lam) * (bce + penalty)
    return lam * ce + (1 - lam) * bce + penalty


def random_batch(seed, batch=64, scale=3.0, extreme=False):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, scale, (batch, N))
    if extreme:
        z = rng.choice([-100.0, 100.0], (batch, N)) + rng.normal(0.0, 1.0, (batch, N))
    rating = rng.integers(1, N + 1, batch)
    label = rng.integers(0, 2, batch).astype(np.float64)  # independent of rating: tests the formula
    return z.astype(np.float32), rating.astype(np.int32), label.astype(np.float32)


def loss(z, rating, label, **config):
    return float(multihead_loss(jnp.asarray(z), jnp.asarray(rating), jnp.asarray(label), LossConfig(**config)))


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("aggregation", ["prob", "logit_sum"])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7, 1.0])
def test_rating_head_matches_numpy(extreme, aggregation, lam):
    z, rating, label = random_batch(1, extreme=extreme)
    got = loss(z, rating, label, lambda_r=lam, aggregation=aggregation)
    assert np.isfinite(got)
    assert_close(got, np_reference_loss(z, rating, label, lam, aggregation=aggregation))


@pytest.mark.parametrize("threshold", [1, 2, 4])
def test_other_thresholds_match_numpy(threshold):
    z, rating, label = random_batch(2)
    got = loss(z, rating, label, lambda_r=0.4, threshold=threshold)
    assert_close(got, np_reference_loss(z, rating, label, 0.4, threshold=threshold))


@pytest.mark.parametrize("extreme", [False, True])
def test_binary_head_is_bce(extreme):
    z, rating, label = random_batch(3, extreme=extreme)
    z = z[:, :1]
    expected = -np.mean(label * np_log_sigmoid(z[:, 0]) + (1 - label) * np_log_sigmoid(-z[:, 0]))
    assert_close(loss(z, rating, label, lambda_r=0.7), expected)


def test_lambda_zero_is_bce_on_phat_and_one_is_pure_ce():
    z, rating, label = random_batch(4)
    log_p, log_q = np_log_phat(z, THRESHOLD)
    assert_close(loss(z, rating, label, lambda_r=0.0), -np.mean(label * log_p + (1 - label) * log_q))
    ce = -np.mean(np_log_softmax(z)[np.arange(len(rating)), rating - 1])
    assert_close(loss(z, rating, label, lambda_r=1.0), ce)


@pytest.mark.parametrize("extreme", [False, True])
def test_click_probability(extreme):
    z, _, _ = random_batch(5, extreme=extreme)
    prob = np.asarray(click_probability(jnp.asarray(z), THRESHOLD, "prob"))
    assert_close(prob, np.exp(np_log_phat(z, THRESHOLD)[0]))
    pair = z[:, THRESHOLD:].astype(np.float64).sum(1) - z[:, :THRESHOLD].astype(np.float64).sum(1)
    logit_sum = np.asarray(click_probability(jnp.asarray(z), THRESHOLD, "logit_sum"))
    assert_close(logit_sum, np.exp(np_log_sigmoid(pair)))
    binary = np.asarray(click_probability(jnp.asarray(z[:, :1]), THRESHOLD))
    assert_close(binary, np.exp(np_log_sigmoid(z[:, 0])))


@pytest.mark.parametrize("aggregation", ["prob", "logit_sum"])
def test_gradient_finite_at_extreme_logits(aggregation):
    z, rating, label = random_batch(6, extreme=True)
    config = LossConfig(lambda_r=0.5, aggregation=aggregation)
    grad = jax.grad(multihead_loss)(jnp.asarray(z), jnp.asarray(rating), jnp.asarray(label), config)
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.abs(np.asarray(grad)).sum() > 0


@pytest.mark.parametrize("width", [1, N])
def test_weights_mask_examples(width):
    z, rating, label = random_batch(7)
    z = z[:, :width]
    keep = np.random.default_rng(8).random(len(rating)) < 0.5
    config = LossConfig(lambda_r=0.6)
    masked = multihead_loss(z, rating, label, config, weights=jnp.asarray(keep, jnp.float32))
    assert_close(float(masked), np_reference_loss(z[keep], rating[keep], label[keep], 0.6))


@pytest.mark.parametrize("scale", [True, False])
def test_penalty_scaling(scale):
    z, rating, label = random_batch(9)
    lam, penalty = 0.3, 2.5
    config = dict(lambda_r=lam, scale_penalty=scale)
    with_penalty = float(multihead_loss(z, rating, label, LossConfig(**config), penalty=penalty))
    assert_close(with_penalty, np_reference_loss(z, rating, label, lam, penalty=penalty, scale=scale))
    without = loss(z, rating, label, **config)
    assert_close(with_penalty - without, (1 - lam) * penalty if scale else penalty)


def test_binary_head_penalty_is_unscaled():
    z, rating, label = random_batch(10)
    z = z[:, :1]
    config = LossConfig(lambda_r=0.3)
    with_penalty = float(multihead_loss(z, rating, label, config, penalty=1.5))
    assert_close(with_penalty, loss(z, rating, label, lambda_r=0.3) + 1.5)


def test_unknown_aggregation_is_rejected():
    z, rating, label = random_batch(11)
    with pytest.raises(ValueError, match="aggregation"):
        loss(z, rating, label, aggregation="mean")
