"""Per-member early stopping on validation AUC: the record, its update, and freezing stopped members."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class EarlyStopping(NamedTuple):
    """Per-member best-validation record."""

    best_params: Any
    best_model_state: Any
    best_auc: jax.Array  # float32 []
    best_epoch: jax.Array  # int32 [], 0 = none yet
    bad_epochs: jax.Array  # int32 []
    stopped: jax.Array  # bool []
    diverged: jax.Array  # bool [], stopped because the loss became NaN / inf


def init_early_stopping(state) -> EarlyStopping:
    members = state.lambda_r.shape[0]
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731 (the epoch donates state's buffers)
    return EarlyStopping(
        best_params=copy(state.params),
        best_model_state=copy(state.model_state),
        best_auc=jnp.full((members,), -jnp.inf, jnp.float32),
        best_epoch=jnp.zeros((members,), jnp.int32),
        bad_epochs=jnp.zeros((members,), jnp.int32),
        stopped=jnp.zeros((members,), bool),
        diverged=jnp.zeros((members,), bool),
    )


def update_early_stopping(
    stopping: EarlyStopping, state, valid_auc, loss_finite, patience: int, max_epochs: int
) -> EarlyStopping:
    """One member's early-stopping update after an evaluation (vmap it)."""
    active = ~stopping.stopped
    improved = active & loss_finite & (valid_auc > stopping.best_auc)
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(improved, a, b), new, old)  # noqa: E731
    bad_epochs = jnp.where(improved, 0, stopping.bad_epochs + active.astype(jnp.int32))
    diverged = stopping.diverged | (active & ~loss_finite)
    stopped = stopping.stopped | diverged | (bad_epochs >= patience) | (state.epoch >= max_epochs)
    return EarlyStopping(
        best_params=pick(state.params, stopping.best_params),
        best_model_state=pick(state.model_state, stopping.best_model_state),
        best_auc=jnp.where(improved, valid_auc, stopping.best_auc),
        best_epoch=jnp.where(improved, state.epoch, stopping.best_epoch),
        bad_epochs=bad_epochs,
        stopped=stopped,
        diverged=diverged,
    )


def freeze_stopped(stopped, new, old):
    """Members that have stopped keep their old state (so they cannot drift or spread NaNs)."""
    def keep(a, b):
        mask = stopped.reshape(stopped.shape + (1,) * (a.ndim - 1))
        return jnp.where(mask, b, a)

    return jax.tree.map(keep, new, old)
