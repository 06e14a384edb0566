"""Training engine: an ensemble of members (seeds, optionally x lambda_r values) trained at once.

Every per-member quantity — params, batch statistics, optimiser state, PRNG key, lambda_r and
the early-stopping record — carries a leading ensemble axis M, and one jitted program maps the
single-member epoch over them all (lipctr.ensemble: batched with vmap, or one member after another
on the CPU). An epoch is one `lax.scan` over the batches of a fresh
permutation of the training split, which already sits on the device; the host only syncs once
per epoch, to read the validation AUC that drives per-member early stopping.

Reading order: `TrainConfig` -> `init_members` -> `make_epoch_fn` -> `make_predict_fn` ->
`update_early_stopping` -> `Trainer`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lipctr import metrics, sharding
from lipctr.ensemble import over_members, sequential_members
from lipctr.losses import LossConfig, click_probability, click_score, multihead_loss
from lipctr.ranking import candidate_features, flatten_candidates
from lipctr.models.base import CTRModel


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # the authors' Adam used none (optax.adamw defaults to 1e-4)
    batch_size: int = 4096
    eval_batch_size: int = 8192
    max_epochs: int = 300
    patience: int = 5  # stop after this many consecutive evaluations without a better valid AUC
    members: str = "auto"  # how the member axis is computed: "vmap", "sequential" or "auto" (lipctr.ensemble)


class TrainState(NamedTuple):
    """One member's training state (a leading axis M when stacked)."""

    params: Any
    model_state: Any  # non-param collections, e.g. {"batch_stats": ...}; {} when none
    opt_state: Any
    key: jax.Array  # uint32 [2] PRNG key, split once per epoch
    lambda_r: jax.Array  # float32 []
    epoch: jax.Array  # int32 [], epochs completed


class EarlyStopping(NamedTuple):
    """Per-member best-validation record."""

    best_params: Any
    best_model_state: Any
    best_auc: jax.Array  # float32 []
    best_epoch: jax.Array  # int32 [], 0 = none yet
    bad_epochs: jax.Array  # int32 []
    stopped: jax.Array  # bool []
    diverged: jax.Array  # bool [], stopped because the loss became NaN / inf


class EpochStats(NamedTuple):
    """Per-member statistics of one epoch (means over its steps)."""

    loss: jax.Array
    user_grad_norm: jax.Array  # L2 norm of the gradient of the user embedding table
    item_grad_norm: jax.Array


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)


def _example_batch(features: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return jax.tree.map(lambda x: x[:2], features)


def init_members(model: CTRModel, tx, features, seeds, lambdas) -> TrainState:
    """Stacked initial states for members (seeds[i], lambdas[i]); features: any batch of inputs."""
    example = _example_batch(features)

    def init_one(seed, lambda_r):
        init_key, dropout_key, train_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        variables = model.init({"params": init_key, "dropout": dropout_key}, example, deterministic=True)
        params = variables["params"]
        model_state = {k: v for k, v in variables.items() if k != "params"}
        return TrainState(
            params, model_state, tx.init(params), train_key, lambda_r.astype(jnp.float32), jnp.int32(0)
        )

    seeds = jnp.asarray(np.asarray(seeds, np.uint32))
    lambdas = jnp.asarray(np.asarray(lambdas, np.float32))
    return jax.jit(jax.vmap(init_one))(seeds, lambdas)


def init_early_stopping(state: TrainState) -> EarlyStopping:
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


def _table_grad_norm(grads, field: str) -> jax.Array:
    tables = grads["embedding"]["tables"]
    if field not in tables:
        return jnp.float32(jnp.nan)
    return jnp.sqrt(jnp.sum(jnp.square(tables[field]["embedding"])))


def epoch_batches(key, num_train: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """A fresh permutation cut into batches: indices int32 [num_batches, batch_size] and weights.

    The last partial batch is filled up with examples from the start of the permutation at
    weight 0, so every example has weight 1 exactly once per epoch.
    """
    num_batches = max(1, math.ceil(num_train / batch_size))
    positions = jnp.arange(num_batches * batch_size)
    order = jax.random.permutation(key, num_train)[positions % num_train]
    weights = (positions < num_train).astype(jnp.float32)
    return order.reshape(num_batches, batch_size), weights.reshape(num_batches, batch_size)


def make_epoch_fn(model: CTRModel, loss_config: LossConfig, tx, num_train: int, batch_size: int, mesh=None):
    """epoch(state, train) -> (state, EpochStats) for ONE member; vmap it over the ensemble.

    train = {"features": {...}, "rating": [n], "label": [n]} on the device. Batches come from
    `epoch_batches` (batch-norm statistics do see the weight-0 fillers of the last batch).
    With a mesh, each batch is split over its "data" axis (lipctr.sharding).
    """
    num_batches = max(1, math.ceil(num_train / batch_size))
    schema = model.schema

    def epoch(state: TrainState, train: dict) -> tuple[TrainState, EpochStats]:
        key, perm_key, dropout_key = jax.random.split(state.key, 3)
        batches, weights = epoch_batches(perm_key, num_train, batch_size)
        config = dataclasses.replace(loss_config, lambda_r=state.lambda_r)

        def step(carry, inputs):
            params, model_state, opt_state = carry
            index, weight, step_number = inputs
            batch = jax.tree.map(lambda x: x[index], train)
            if mesh is not None:
                batch, weight = sharding.constrain_batch((batch, weight), mesh)

            def loss_fn(p):
                logits, new_model_state = model.apply(
                    {"params": p, **model_state},
                    batch["features"],
                    deterministic=False,
                    rngs={"dropout": jax.random.fold_in(dropout_key, step_number)},
                    mutable=list(model_state),
                )
                loss = multihead_loss(
                    logits, batch["rating"], batch["label"], config, model.penalty(p), weight
                )
                return loss, new_model_state

            (loss, new_model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            norms = (_table_grad_norm(grads, schema.user_field), _table_grad_norm(grads, schema.item_field))
            return (params, new_model_state, opt_state), (loss, *norms)

        carry = (state.params, state.model_state, state.opt_state)
        inputs = (batches, weights, jnp.arange(num_batches))
        (params, model_state, opt_state), (losses, user_norms, item_norms) = jax.lax.scan(step, carry, inputs)
        new_state = TrainState(params, model_state, opt_state, key, state.lambda_r, state.epoch + 1)
        return new_state, EpochStats(losses.mean(), user_norms.mean(), item_norms.mean())

    return epoch


def make_predict_fn(model: CTRModel, num_examples: int, eval_batch_size: int, mesh=None):
    """predict(params, model_state, features) -> logits [n, K] for ONE member, in fixed-size chunks
    (each chunk split over the mesh's "data" axis when there is a mesh)."""
    chunk = min(eval_batch_size, num_examples)
    num_chunks = math.ceil(num_examples / chunk)
    chunks = (jnp.arange(num_chunks * chunk) % num_examples).reshape(num_chunks, chunk)

    def predict(params, model_state, features):
        def body(_, index):
            batch = jax.tree.map(lambda x: x[index], features)
            if mesh is not None:
                batch = sharding.constrain_batch(batch, mesh)
            return None, model.apply({"params": params, **model_state}, batch, deterministic=True)

        _, logits = jax.lax.scan(body, None, chunks)
        return logits.reshape(num_chunks * chunk, -1)[:num_examples]

    return predict


def update_early_stopping(
    es: EarlyStopping, state: TrainState, valid_auc, loss_finite, patience: int, max_epochs: int
) -> EarlyStopping:
    """One member's early-stopping update after an evaluation (vmap it)."""
    active = ~es.stopped
    improved = active & loss_finite & (valid_auc > es.best_auc)
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(improved, a, b), new, old)  # noqa: E731
    bad_epochs = jnp.where(improved, 0, es.bad_epochs + active.astype(jnp.int32))
    diverged = es.diverged | (active & ~loss_finite)
    stopped = es.stopped | diverged | (bad_epochs >= patience) | (state.epoch >= max_epochs)
    return EarlyStopping(
        best_params=pick(state.params, es.best_params),
        best_model_state=pick(state.model_state, es.best_model_state),
        best_auc=jnp.where(improved, valid_auc, es.best_auc),
        best_epoch=jnp.where(improved, state.epoch, es.best_epoch),
        bad_epochs=bad_epochs,
        stopped=stopped,
        diverged=diverged,
    )


def _freeze_stopped(stopped, new, old):
    """Members that have stopped keep their old state (so they cannot drift or spread NaNs)."""
    def keep(a, b):
        mask = stopped.reshape(stopped.shape + (1,) * (a.ndim - 1))
        return jnp.where(mask, b, a)

    return jax.tree.map(keep, new, old)


def to_device(split, mesh=None) -> dict:
    """A Split -> {"features", "rating", "label"} of device arrays (replicated over a mesh)."""
    tree = {"features": dict(split.features), "rating": split.rating.astype(np.int32),
            "label": split.label.astype(np.float32)}
    return jax.device_put(tree) if mesh is None else sharding.put_replicated(tree, mesh)


class Trainer:
    """Compiled programs for one (model, loss, data shapes): train an ensemble epoch by epoch.

    The programs compile once, on first use; `trace_counts` records how often each was traced.
    With a `mesh` (lipctr.sharding) the member axis is split over its "seeds" axis, batches over
    its "data" axis, and what the host reads comes back replicated.
    """

    def __init__(self, model: CTRModel, loss_config: LossConfig, config: TrainConfig,
                 num_train: int, num_valid: int, mesh=None):
        self.model, self.loss_config, self.config, self.mesh = model, loss_config, config, mesh
        self.tx = make_optimizer(config)
        self.sequential = sequential_members(config.members)
        self.trace_counts = {"epoch": 0, "evaluate": 0}
        epoch = make_epoch_fn(model, loss_config, self.tx, num_train, config.batch_size, mesh)
        predict_valid = make_predict_fn(model, num_valid, config.eval_batch_size, mesh)

        def train_epoch(state, es, train):
            self.trace_counts["epoch"] += 1
            new_state, stats = self._vmap(epoch, (0, None))(state, train)
            return _freeze_stopped(es.stopped, new_state, state), stats

        def evaluate(state, es, stats, valid):
            self.trace_counts["evaluate"] += 1
            logits = self._vmap(predict_valid, (0, 0, None))(state.params, state.model_state, valid["features"])
            probs = self.click_probability(logits)
            valid_auc = jax.vmap(metrics.auc, in_axes=(0, None))(self.click_score(logits), valid["label"])
            valid_logloss = jax.vmap(metrics.log_loss, in_axes=(0, None))(probs, valid["label"])
            finite = jnp.isfinite(stats.loss)
            es = jax.vmap(update_early_stopping, in_axes=(0, 0, 0, 0, None, None))(
                es, state, valid_auc, finite, config.patience, config.max_epochs
            )
            return es, valid_auc, valid_logloss

        self.train_epoch = self._jit(train_epoch, ("members", "host"), donate_argnums=(0,))
        self.evaluate = self._jit(evaluate, ("members", "host", "host"))
        self._predictors: dict[Any, Any] = {}

    def _vmap(self, fn, in_axes):
        """fn over members (`over_members`); with a mesh, a vmap whose "data" constraints inside fn
        compose with "seeds"."""
        if self.mesh is None:
            return over_members(fn, in_axes, self.sequential)
        return jax.vmap(fn, in_axes=in_axes, spmd_axis_name="seeds")

    def _jit(self, fn, outputs, **kwargs):
        """jit; with a mesh, outputs "members" are split over "seeds", "host" ones replicated."""
        if self.mesh is None:
            return jax.jit(fn, **kwargs)
        kinds = {"members": sharding.member_sharding(self.mesh), "host": sharding.replicated(self.mesh)}
        out = kinds[outputs] if isinstance(outputs, str) else tuple(kinds[k] for k in outputs)
        return jax.jit(fn, out_shardings=out, **kwargs)

    def _put(self, tree):
        return jax.device_put(tree) if self.mesh is None else sharding.put_replicated(tree, self.mesh)

    def init(self, features, seeds, lambdas) -> tuple[TrainState, EarlyStopping]:
        """States and early-stopping records of members (seeds[i], lambdas[i]), stacked. With a
        mesh, M is padded to a multiple of the "seeds" axis size with copies of the last member
        that start stopped; `real_members` drops them."""
        if self.mesh is None:
            state = init_members(self.model, self.tx, features, seeds, lambdas)
            return state, init_early_stopping(state)
        num_real = len(seeds)
        seeds, lambdas = sharding.pad_members(list(seeds), self.mesh), sharding.pad_members(list(lambdas), self.mesh)

        def build(features):
            state = init_members(self.model, self.tx, features, seeds, lambdas)
            es = init_early_stopping(state)
            return state, es._replace(stopped=jnp.arange(len(seeds)) >= num_real)

        return self._jit(build, "members")(features)

    def real_members(self, tree, num_members: int):
        """tree (leaves [M_padded, ...]) without its padding members, replicated so that every
        process can read and save it; without a mesh, tree itself."""
        if self.mesh is None:
            return tree
        key = ("real", num_members)
        if key not in self._predictors:
            self._predictors[key] = self._jit(lambda t: jax.tree.map(lambda x: x[:num_members], t), "host")
        return self._predictors[key](tree)

    def with_members(self, padded, real):
        """`padded` (from `init`) with its first members replaced by `real` (e.g. a restored
        checkpoint); the padding members stay stopped. Without a mesh, real itself."""
        if self.mesh is None:
            return real
        put = lambda p, r: p.at[: r.shape[0]].set(r)  # noqa: E731
        return self._jit(lambda p, r: jax.tree.map(put, p, r), "members")(padded, real)

    def predict_logits(self, params, model_state, features) -> jax.Array:
        """Logits [M, n, K] of every member on a features dict of n examples."""
        n = jax.tree.leaves(features)[0].shape[0]
        if n not in self._predictors:
            predict = make_predict_fn(self.model, n, self.config.eval_batch_size, self.mesh)
            self._predictors[n] = self._jit(self._vmap(predict, (0, 0, None)), "host")
        return self._predictors[n](params, model_state, features)

    def click_probability(self, logits) -> jax.Array:
        logits = self.loss_config.click_logits(logits)
        return click_probability(logits, self.loss_config.threshold, self.loss_config.aggregation)

    def click_score(self, logits) -> jax.Array:
        """The ranking score (log-odds of p_hat) used for AUC and ranking metrics."""
        logits = self.loss_config.click_logits(logits)
        return click_score(logits, self.loss_config.threshold, self.loss_config.aggregation)

    def score_candidates(self, params, model_state, candidates, rows_per_chunk: int | None = None) -> jax.Array:
        """Ranking scores [M, m, C] of every member on RankingCandidates; candidate features are
        gathered on the device chunk by chunk, never materialised for all m x C pairs. A chunk
        holds rows_per_chunk x C examples per member, by default about eval_batch_size (so scoring
        needs no more memory than evaluation: a 25-member xDeepFM at 256 x 101 needed 50 GiB)."""
        if rows_per_chunk is None:
            rows_per_chunk = max(1, self.config.eval_batch_size // candidates.num_candidates)
        padded = candidates.padded(rows_per_chunk)
        num_chunks = padded.num_rows // rows_per_chunk
        items = self._put(padded.items.reshape(num_chunks, rows_per_chunk, -1))
        rows = self._put({k: v.reshape((num_chunks, rows_per_chunk) + v.shape[1:])
                          for k, v in padded.row_features.items()})
        tables = self._put(candidates.item_features)
        key = ("candidates", num_chunks, rows_per_chunk, padded.num_candidates)
        if key not in self._predictors:
            def score(params, model_state, items, rows, tables):
                def body(_, chunk):
                    chunk_items, chunk_rows = chunk
                    features = flatten_candidates(candidate_features(chunk_rows, tables, chunk_items))
                    logits = self.model.apply({"params": params, **model_state}, features, deterministic=True)
                    return None, self.click_score(logits).reshape(chunk_items.shape)

                return jax.lax.scan(body, None, (items, rows))[1].reshape(-1, items.shape[-1])

            self._predictors[key] = self._jit(self._vmap(score, (0, 0, None, None, None)), "host")
        scores = self._predictors[key](params, model_state, items, rows, tables)
        return scores[:, : candidates.num_rows]


class EpochRecord(NamedTuple):
    """What the host reads after each epoch: per-member arrays [M] plus timings in seconds."""

    epoch: int
    stats: EpochStats
    valid_auc: np.ndarray
    valid_logloss: np.ndarray
    stopped: np.ndarray
    diverged: np.ndarray
    train_seconds: float
    eval_seconds: float


def fit(trainer: Trainer, state: TrainState, es: EarlyStopping, train: dict, valid: dict, on_epoch=None):
    """Train until every member has stopped; `on_epoch(state, es, record)` runs after each epoch.

    The only host syncs are the ones per epoch below (timings and the stop decision).
    """
    epoch = int(np.max(sharding.to_host(state.epoch)))
    while not bool(np.all(sharding.to_host(es.stopped))):
        start = time.perf_counter()
        state, stats = trainer.train_epoch(state, es, train)
        stats = jax.block_until_ready(stats)
        trained = time.perf_counter()
        es, valid_auc, valid_logloss = jax.block_until_ready(trainer.evaluate(state, es, stats, valid))
        epoch += 1
        record = EpochRecord(
            epoch,
            EpochStats(*(np.asarray(x) for x in stats)),
            np.asarray(valid_auc),
            np.asarray(valid_logloss),
            sharding.to_host(es.stopped),
            sharding.to_host(es.diverged),
            trained - start,
            time.perf_counter() - trained,
        )
        if on_epoch is not None:
            on_epoch(state, es, record)
    return state, es
