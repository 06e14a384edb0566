"""The public per-example losses (lipctr.supervision) against a numpy reference and the engine's
multihead_loss, and RatingHead's widths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lipctr
from lipctr.losses import LossConfig, multihead_loss


def _batch(seed=0, b=64, width=5):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=2.0, size=(b, width)).astype(np.float32), rng.integers(1, 6, b).astype(np.int32)


def _numpy_loss(logits, ratings, lambda_r, threshold=3):
    """float64 reference of eq. 13 with eq. 11's p_hat."""
    z = logits.astype(np.float64)
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ce = -np.log(probs[np.arange(len(z)), ratings - 1])
    p_hat = probs[:, threshold:].sum(-1)
    label = (ratings > threshold).astype(np.float64)
    bce = -(label * np.log(p_hat) + (1 - label) * np.log(1 - p_hat))
    return lambda_r * ce + (1 - lambda_r) * bce


@pytest.mark.parametrize("lambda_r", [0.0, 0.3, 0.7, 1.0])
def test_scaled_supervision_loss_matches_numpy(lambda_r):
    logits, ratings = _batch()
    got = np.asarray(lipctr.scaled_supervision_loss(jnp.asarray(logits), jnp.asarray(ratings), lambda_r=lambda_r))
    assert got.shape == (64,)
    np.testing.assert_allclose(got, _numpy_loss(logits, ratings, lambda_r), rtol=2e-6, atol=1e-6)


def test_mean_is_multihead_loss():
    """Bit for bit where both sum the same values (lambda_r 0 or 1); otherwise multihead_loss mixes
    the two terms' batch means (the order the trained results depend on), equal to float32 rounding."""
    logits, ratings = map(jnp.asarray, _batch(1))
    label = (ratings > 3).astype(jnp.float32)
    for lambda_r in (0.0, 1.0):
        mean = lipctr.scaled_supervision_loss(logits, ratings, lambda_r=lambda_r).mean()
        engine = multihead_loss(logits, ratings, label, LossConfig(lambda_r=lambda_r))
        assert np.asarray(mean).tobytes() == np.asarray(engine).tobytes()
    for lambda_r in (0.3, 0.7):
        for aggregation in ("prob", "logit_sum"):
            mean = lipctr.scaled_supervision_loss(logits, ratings, lambda_r=lambda_r, aggregation=aggregation).mean()
            engine = multihead_loss(logits, ratings, label, LossConfig(lambda_r=lambda_r, aggregation=aggregation))
            np.testing.assert_allclose(float(mean), float(engine), rtol=1e-6)
    wide, _ = _batch(2, width=6)
    aux = lipctr.aux_rating_loss(jnp.asarray(wide), ratings, lambda_r=0.7).mean()
    engine = multihead_loss(jnp.asarray(wide), ratings, label, LossConfig(lambda_r=0.7, aux_rating=True))
    np.testing.assert_allclose(float(aux), float(engine), rtol=1e-6)


def test_aux_rating_loss_matches_numpy_and_scores_by_the_click_column():
    wide, ratings = _batch(3, width=6)
    label = (ratings > 3).astype(np.float64)
    z = wide[:, 0].astype(np.float64)
    bce = -(label * np.log(1 / (1 + np.exp(-z))) + (1 - label) * np.log(1 / (1 + np.exp(z))))
    rating = wide[:, 1:].astype(np.float64)
    ce = np.log(np.exp(rating).sum(-1)) - rating[np.arange(len(rating)), ratings - 1]
    got = lipctr.aux_rating_loss(jnp.asarray(wide), jnp.asarray(ratings), lambda_r=0.4)
    np.testing.assert_allclose(np.asarray(got), 0.4 * ce + 0.6 * bce, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(lipctr.click_probability(jnp.asarray(wide[:, :1]))), 1 / (1 + np.exp(-z)),
                               rtol=1e-6)


def test_labels_default_to_ratings_above_threshold_and_can_be_given():
    logits, ratings = map(jnp.asarray, _batch(4))
    default = lipctr.scaled_supervision_loss(logits, ratings, lambda_r=0.5, threshold=2)
    given = lipctr.scaled_supervision_loss(logits, ratings, (ratings > 2).astype(jnp.float32), lambda_r=0.5,
                                           threshold=2)
    np.testing.assert_array_equal(np.asarray(default), np.asarray(given))
    flipped = lipctr.scaled_supervision_loss(logits, ratings, (ratings <= 2).astype(jnp.float32), lambda_r=0.5,
                                             threshold=2)
    assert not np.allclose(np.asarray(default), np.asarray(flipped))


def test_click_score_is_the_log_odds_of_click_probability():
    logits, _ = _batch(5)
    p = np.asarray(lipctr.click_probability(jnp.asarray(logits)), np.float64)
    np.testing.assert_allclose(np.asarray(lipctr.click_score(jnp.asarray(logits))), np.log(p / (1 - p)), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda z, r: lipctr.scaled_supervision_loss(z, r, lambda_r=1.5), "lambda_r must lie in"),
    (lambda z, r: lipctr.scaled_supervision_loss(z, r, lambda_r=0.5, threshold=5), "threshold must be an integer"),
    (lambda z, r: lipctr.scaled_supervision_loss(z[0], r, lambda_r=0.5), "expected logits"),
    (lambda z, r: lipctr.scaled_supervision_loss(z, r, r[:3], lambda_r=0.5), "labels must have the shape"),
    (lambda z, r: lipctr.scaled_supervision_loss(z, r, lambda_r=0.5, aggregation="max"), "aggregation"),
])
def test_bad_arguments_name_what_was_expected(call, message):
    logits, ratings = map(jnp.asarray, _batch(6))
    with pytest.raises(ValueError, match=message):
        call(logits, ratings)


def test_rating_head_widths():
    hidden = jnp.ones((3, 7))
    for aux, width in ((False, 5), (True, 6)):
        head = lipctr.RatingHead(num_ratings=5, aux=aux)
        params = head.init(jax.random.key(0), hidden)
        assert head.apply(params, hidden).shape == (3, width)
    with pytest.raises(ValueError, match="num_ratings must be an integer >= 2"):
        lipctr.RatingHead(num_ratings=1).init(jax.random.key(0), hidden)


def test_public_names_are_listed_and_resolve():
    for name in lipctr.__all__:
        assert getattr(lipctr, name) is not None
    assert {"scaled_supervision_loss", "aux_rating_loss", "RatingHead", "signal_to_ratings", "build_model",
            "load_run", "load_exported", "fit"} <= set(lipctr.__all__)
