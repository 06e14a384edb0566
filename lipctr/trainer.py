"""The ensemble trainer: compiled epoch, evaluation and prediction programs for M members, and
`fit`, the loop that trains them to per-member early stopping.

Every per-member quantity carries a leading member axis M (lipctr.ensemble maps the single-member
programs of lipctr.train / lipctr.evaluation over it). The host syncs once per epoch, to read the
validation AUC that drives early stopping.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lipctr import sharding
from lipctr.early_stopping import EarlyStopping, freeze_stopped, init_early_stopping, update_early_stopping
from lipctr.embedding_optim import RowOptimizer
from lipctr.ensemble import over_members, sequential_members
from lipctr.evaluation import make_predict_fn, member_metrics
from lipctr.losses import LossConfig, click_probability, click_score
from lipctr.models.base import CTRModel
from lipctr.ranking import candidate_features, flatten_candidates
from lipctr.train import EpochStats, TrainConfig, TrainState, init_members, make_epoch_fn, make_optimizer


class Trainer:
    """Compiled programs for one (model, loss, data shapes): train an ensemble epoch by epoch.

    `model` is a built-in CTRModel or any flax.linen module with `apply(variables, features,
    deterministic=bool, rngs={"dropout": key}) -> logits [B, K]` (features: the split's dict of [B]
    arrays); optional `penalty(params) -> []` (added to the loss) and `schema` (the gradient-norm
    log reads `params["embedding"]["tables"][field]["embedding"]`, NaN without them). docs/own-model.md.

    The programs compile once, on first use; `trace_counts` records how often each was traced.
    With a `mesh` (lipctr.sharding) the member axis is split over its "seeds" axis, batches over
    its "data" axis, and what the host reads comes back replicated; `placement` "sharded": the
    training split is `to_device(..., mesh, "sharded")`, each device holding 1/D of it.
    """

    def __init__(self, model: CTRModel, loss_config: LossConfig, config: TrainConfig,
                 num_train: int, num_valid: int, mesh=None, placement: str = "replicated"):
        self.model, self.loss_config, self.config, self.mesh = model, loss_config, config, mesh
        self.tx = make_optimizer(config, model=model)
        self.sequential = sequential_members(config.members)
        self.trace_counts = {"epoch": 0, "evaluate": 0}
        epoch = make_epoch_fn(model, loss_config, functools.partial(make_optimizer, config, model=model), num_train,
                              config.batch_size, mesh, config.compute_dtype, placement, config.shuffle)
        predict_valid = make_predict_fn(model, num_valid, config.eval_batch_size, mesh)

        def train_epoch(state, stopping, train):
            self.trace_counts["epoch"] += 1
            if isinstance(self.tx, RowOptimizer):  # stopped members' rows are kept inside the steps
                new_state, stats = self._vmap(epoch, (0, None, 0))(state, train, stopping.stopped)
                return self.tx.freeze_dense(freeze_stopped, stopping.stopped, new_state, state), stats
            new_state, stats = self._vmap(epoch, (0, None))(state, train)
            return freeze_stopped(stopping.stopped, new_state, state), stats

        def evaluate(state, stopping, stats, valid):
            self.trace_counts["evaluate"] += 1
            logits = self._vmap(predict_valid, (0, 0, None))(state.params, state.model_state, valid["features"])
            measured = member_metrics(self.click_score(logits), self.click_probability(logits), valid["label"])
            valid_auc, valid_logloss = measured["auc"], measured["logloss"]
            finite = jnp.isfinite(stats.loss)
            stopping = jax.vmap(update_early_stopping, in_axes=(0, 0, 0, 0, None, None))(
                stopping, state, valid_auc, finite, config.patience, config.max_epochs
            )
            return stopping, valid_auc, valid_logloss

        self.train_epoch = self._jit(train_epoch, ("members", "host"), donate_argnums=(0,))
        self.evaluate = self._jit(evaluate, ("members", "host", "host"))
        # compiled programs, one cache per kind: predictors by number of examples, candidate
        # scorers by chunk layout, real-member slicers by member count
        self._predictors: dict[int, Any] = {}
        self._scorers: dict[tuple, Any] = {}
        self._slicers: dict[int, Any] = {}

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

    def init(self, features, seeds, lambdas, hparams: dict | None = None) -> tuple[TrainState, EarlyStopping]:
        """States and early-stopping records of members (seeds[i], lambdas[i], {name: values[i]}
        of hparams: their own hyper-parameters, lipctr.member_hparams), stacked. With a mesh, M is
        padded to a multiple of the "seeds" axis size with copies of the last member that start
        stopped; `real_members` drops them."""
        hparams = hparams or {}
        if self.mesh is None:
            state = init_members(self.model, self.tx, features, seeds, lambdas, hparams)
            return state, init_early_stopping(state)
        num_real = len(seeds)
        seeds, lambdas = sharding.pad_members(list(seeds), self.mesh), sharding.pad_members(list(lambdas), self.mesh)
        hparams = {name: sharding.pad_members(list(values), self.mesh) for name, values in hparams.items()}

        def build(features):
            state = init_members(self.model, self.tx, features, seeds, lambdas, hparams)
            stopping = init_early_stopping(state)
            return state, stopping._replace(stopped=jnp.arange(len(seeds)) >= num_real)

        return self._jit(build, "members")(features)

    def real_members(self, tree, num_members: int):
        """tree (leaves [M_padded, ...]) without its padding members, replicated so that every
        process can read and save it; without a mesh, tree itself."""
        if self.mesh is None:
            return tree
        if num_members not in self._slicers:
            self._slicers[num_members] = self._jit(lambda t: jax.tree.map(lambda x: x[:num_members], t), "host")
        return self._slicers[num_members](tree)

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
        key = (num_chunks, rows_per_chunk, padded.num_candidates)
        if key not in self._scorers:
            def score(params, model_state, items, rows, tables):
                def body(_, chunk):
                    chunk_items, chunk_rows = chunk
                    features = flatten_candidates(candidate_features(chunk_rows, tables, chunk_items))
                    logits = self.model.apply({"params": params, **model_state}, features, deterministic=True)
                    return None, self.click_score(logits).reshape(chunk_items.shape)

                return jax.lax.scan(body, None, (items, rows))[1].reshape(-1, items.shape[-1])

            self._scorers[key] = self._jit(self._vmap(score, (0, 0, None, None, None)), "host")
        scores = self._scorers[key](params, model_state, items, rows, tables)
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

def fit(trainer: Trainer, state: TrainState, stopping: EarlyStopping, train: dict, valid: dict, on_epoch=None):
    """Train until every member has stopped; `on_epoch(state, stopping, record)` runs after each epoch.

    The only host syncs are the ones per epoch below (timings and the stop decision).
    """
    epoch = int(np.max(sharding.to_host(state.epoch)))
    while not bool(np.all(sharding.to_host(stopping.stopped))):
        start = time.perf_counter()
        state, stats = trainer.train_epoch(state, stopping, train)
        stats = jax.block_until_ready(stats)
        trained = time.perf_counter()
        stopping, valid_auc, valid_logloss = jax.block_until_ready(trainer.evaluate(state, stopping, stats, valid))
        epoch += 1
        record = EpochRecord(
            epoch,
            EpochStats(*(np.asarray(x) for x in stats)),
            np.asarray(valid_auc),
            np.asarray(valid_logloss),
            sharding.to_host(stopping.stopped),
            sharding.to_host(stopping.diverged),
            trained - start,
            time.perf_counter() - trained,
        )
        if on_epoch is not None:
            on_epoch(state, stopping, record)
    return state, stopping
