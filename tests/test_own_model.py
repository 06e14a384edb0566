"""The engine trains a user's own flax module (not a CTRModel): the protocol of docs/own-model.md."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from lipctr.losses import LossConfig
from lipctr.train import TrainConfig, embedding_grad_norm, to_device
from lipctr.trainer import Trainer, fit


class TinyMF(nn.Module):
    """A user's model: embeddings of two id fields, their product, an MLP; logits [B, num_outputs].
    No schema, no penalty, no params["embedding"]["tables"]."""

    num_users: int
    num_items: int
    num_outputs: int

    @nn.compact
    def __call__(self, features, deterministic: bool = True):
        user = nn.Embed(self.num_users, 8)(features["user_id"])
        item = nn.Embed(self.num_items, 8)(features["item_id"])
        hidden = nn.Dropout(0.1, deterministic=deterministic)(jnp.concatenate([user, item, user * item], -1))
        return nn.Dense(self.num_outputs)(nn.relu(nn.Dense(16)(hidden)))


class _Split:
    def __init__(self, features, rating):
        self.features, self.rating, self.label = features, rating, (rating > 3).astype(np.float32)


def _data(n, seed, num_users=40, num_items=30):
    """Ratings 1..5 from fixed latent user / item factors plus noise."""
    factors = np.random.default_rng(0)
    users_f, items_f = factors.normal(size=(num_users, 4)), factors.normal(size=(num_items, 4))
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, num_users, n), rng.integers(0, num_items, n)
    score = (users_f[user] * items_f[item]).sum(-1) + 0.3 * rng.normal(size=n)
    rating = np.clip(np.round(3.2 + score), 1, 5).astype(np.int32)
    return _Split({"user_id": user.astype(np.int32), "item_id": item.astype(np.int32)}, rating)


def test_fit_trains_a_user_flax_module_as_an_ensemble_with_per_member_early_stopping():
    model = TinyMF(num_users=40, num_items=30, num_outputs=5)
    config = TrainConfig(learning_rate=0.02, batch_size=256, eval_batch_size=512, max_epochs=12, patience=2)
    train, valid = _data(3000, 1), _data(800, 2)
    trainer = Trainer(model, LossConfig(lambda_r=0.5), config, 3000, 800)
    state, stopping = trainer.init(train.features, seeds=[0, 1, 2], lambdas=[0.0, 0.5, 0.9])
    history = []
    state, stopping = fit(trainer, state, stopping, to_device(train), to_device(valid),
                          on_epoch=lambda s, st, r: history.append(r))
    aucs = np.stack([r.valid_auc for r in history])  # [epochs, M]
    stopped = np.stack([r.stopped for r in history])
    # the model has no embedding tables in the CTRModel layout: its gradient-norm log is NaN
    assert np.isnan(history[0].stats.user_grad_norm).all()
    assert np.isfinite(np.stack([r.stats.loss for r in history])).all()
    for m in range(3):
        stop_epoch = int(np.argmax(stopped[:, m])) + 1 if stopped[:, m].any() else len(history)
        seen = aucs[:stop_epoch, m]
        best = int(np.argmax(seen)) + 1  # first epoch of the best AUC, recomputed from the history
        # a member stops `patience` epochs after its best one (or at max_epochs), independently of the others
        assert stop_epoch == min(best + config.patience, config.max_epochs)
        assert int(stopping.best_epoch[m]) == best and float(stopping.best_auc[m]) == seen.max()
        assert seen.max() > 0.75  # the latent-factor task is learnable
    assert bool(np.all(stopping.stopped))


def test_embedding_grad_norm_reads_the_ctrmodel_layout_and_is_nan_otherwise():
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    grads = {"embedding": {"tables": {"user_id": {"embedding": jnp.asarray(table)}}}}
    np.testing.assert_allclose(float(embedding_grad_norm(grads, "user_id")), np.sqrt((table ** 2).sum()), rtol=1e-6)
    assert np.isnan(float(embedding_grad_norm(grads, "item_id")))
    assert np.isnan(float(embedding_grad_norm({"Embed_0": {"embedding": jnp.ones(3)}}, "user_id")))
    assert np.isnan(float(embedding_grad_norm(grads, None)))
