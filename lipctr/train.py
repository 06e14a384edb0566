"""Training of ONE member: its config, state, optimiser, initialisation, loss and train step, and
the epoch program (one `lax.scan` over the batches of a fresh permutation of the device-resident
training split). lipctr.trainer maps these over an ensemble's member axis.

Reading order: `TrainConfig` -> `init_members` -> `loss_fn` -> `train_step` -> `make_epoch_fn`;
then lipctr.trainer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lipctr import sharding
from lipctr.embedding_optim import RowOptimizer
from lipctr.losses import LossConfig, multihead_loss
from lipctr.member_hparams import OPTIMIZER_NAMES, check_names, member_loss_config, member_model
from lipctr.models.base import CTRModel
from lipctr.precision import compute_params
from lipctr.shuffle import ELEMENTWISE, epoch_order


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How an ensemble trains (the same for every member unless a member carries its own value,
    lipctr.member_hparams): AdamW's learning rate and weight decay, batch sizes, at most max_epochs
    with early stopping after `patience` evaluations without a better validation AUC, how the
    member axis is computed, the train step's compute dtype."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # the authors' Adam used none (optax.adamw defaults to 1e-4)
    batch_size: int = 4096
    eval_batch_size: int = 8192
    max_epochs: int = 300
    patience: int = 5  # stop after this many consecutive evaluations without a better valid AUC
    members: str = "auto"  # how the member axis is computed: "vmap", "sequential" or "auto" (lipctr.ensemble)
    compute_dtype: str = "float32"  # "bfloat16": the train step's matmuls and activations (lipctr.precision)
    embedding_optimizer: str = "adamw"  # "lazy_adam", "rowwise_adagrad", "sgd": touched rows (lipctr.embedding_optim)
    embedding_learning_rate: float = 0.0  # a sparse embedding optimizer's own learning rate; 0 = learning_rate
    shuffle: str = "sort"  # the epoch's example order: "sort" or the O(n) "feistel" (lipctr.shuffle)

class SavedState(NamedTuple):
    """What a resumable checkpoint holds of one member's TrainState: all but its hparams, which
    come from the config (so states saved before members had hparams still restore)."""

    params: Any
    model_state: Any  # non-param collections, e.g. {"batch_stats": ...}; {} when none
    opt_state: Any
    key: jax.Array  # uint32 [2]: the data of the member's PRNG key (orbax saves plain arrays)
    lambda_r: jax.Array  # float32 []
    epoch: jax.Array  # int32 [], epochs completed

    def with_hparams(self, hparams) -> TrainState:
        return TrainState(*self._replace(key=jax.random.wrap_key_data(self.key)), hparams)


class TrainState(NamedTuple):
    """One member's training state (a leading axis M when stacked): SavedState's fields, then
    hparams {name: float32 []}, the member's own hyper-parameters (lipctr.member_hparams); {} =
    every member trains with the config's."""

    params: Any
    model_state: Any
    opt_state: Any
    key: jax.Array  # a typed PRNG key (jax.random.key) [], split once per epoch
    lambda_r: jax.Array
    epoch: jax.Array
    hparams: dict

    def saved(self) -> SavedState:
        return SavedState(*self[:len(SavedState._fields)])._replace(key=jax.random.key_data(self.key))

class EpochStats(NamedTuple):
    """Per-member statistics of one epoch (means over its steps)."""

    loss: jax.Array
    user_grad_norm: jax.Array  # L2 norm of the gradient of the user embedding table
    item_grad_norm: jax.Array

def make_optimizer(config: TrainConfig, hparams: dict | None = None, model=None):
    """AdamW at the config's learning rate and weight decay, or at a member's own (hparams
    "learning_rate" / "weight_decay", traced float32 []); its state does not depend on them.
    With a sparse `config.embedding_optimizer`, a RowOptimizer for `model`'s embedding tables
    (at the member's or the config's embedding_learning_rate; the learning rate when that is 0)
    and AdamW for the rest."""
    own = {name: value for name, value in (hparams or {}).items() if name in OPTIMIZER_NAMES}
    dense = optax.adamw(own.get("learning_rate", config.learning_rate),
                        weight_decay=own.get("weight_decay", config.weight_decay))
    if config.embedding_optimizer == "adamw":
        return dense
    if "embedding_learning_rate" in own:  # the member's own (a per-member grid)
        rate = own["embedding_learning_rate"]
    else:
        rate = config.embedding_learning_rate or own.get("learning_rate", config.learning_rate)
    return RowOptimizer.create(config.embedding_optimizer, dense, rate,
                               own.get("weight_decay", config.weight_decay), model)

def _example_batch(features: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return jax.tree.map(lambda x: x[:2], features)

def init_members(model: CTRModel, tx, features, seeds, lambdas, hparams: dict | None = None) -> TrainState:
    """Stacked initial states for members (seeds[i], lambdas[i], {name: values[i]} of hparams);
    features: any batch of inputs. Initial params do not depend on the hparams."""
    example = _example_batch(features)
    check_names(model, hparams or {})

    def init_one(seed, lambda_r, own):
        init_key, dropout_key, train_key = jax.random.split(jax.random.key(seed), 3)
        variables = model.init({"params": init_key, "dropout": dropout_key}, example, deterministic=True)
        params = variables["params"]
        model_state = {k: v for k, v in variables.items() if k != "params"}
        return TrainState(
            params, model_state, tx.init(params), train_key, lambda_r.astype(jnp.float32), jnp.int32(0), own
        )

    seeds = jnp.asarray(np.asarray(seeds, np.uint32))
    lambdas = jnp.asarray(np.asarray(lambdas, np.float32))
    own = {name: jnp.asarray(np.asarray(values, np.float32)) for name, values in (hparams or {}).items()}
    return jax.jit(jax.vmap(init_one))(seeds, lambdas, own)

def embedding_grad_norm(grads, field: str | None) -> jax.Array:
    """L2 norm (float32 []) of the gradient of embedding table `field`, looked up at
    grads["embedding"]["tables"][field]["embedding"] (where a CTRModel keeps its tables); NaN when
    the model has no table there (a user's model of another layout: only the log is NaN)."""
    node = grads
    for key in ("embedding", "tables", field, "embedding"):
        if not hasattr(node, "keys") or key not in node:
            return jnp.float32(jnp.nan)
        node = node[key]
    return jnp.sqrt(jnp.sum(jnp.square(node)))

def epoch_batches(key, num_train: int, batch_size: int, shuffle: str = "sort") -> tuple[jax.Array, jax.Array]:
    """A fresh permutation (`shuffle`, lipctr.shuffle) cut into batches: indices int32
    [num_batches, batch_size] and weights.

    The last partial batch is filled up with examples from the start of the permutation at
    weight 0, so every example has weight 1 exactly once per epoch.
    """
    num_batches = max(1, math.ceil(num_train / batch_size))
    return jax.vmap(lambda b: epoch_batch(key, num_train, batch_size, b, shuffle))(jnp.arange(num_batches))


def epoch_batch(key, num_train: int, batch_size: int, batch, shuffle: str = "feistel") -> tuple[jax.Array, jax.Array]:
    """Batch number `batch` (int []) of epoch_batches(key, num_train, batch_size, shuffle) alone:
    indices int32 [batch_size] and weights. Under an elementwise shuffle (lipctr.shuffle.ELEMENTWISE)
    it costs O(batch_size), without the epoch's [n] order."""
    positions = batch * batch_size + jnp.arange(batch_size)
    return epoch_order(key, num_train, positions % num_train, shuffle), (positions < num_train).astype(jnp.float32)


def loss_fn(model: CTRModel, loss_config: LossConfig, params, model_state, batch: dict, weight, dropout_key,
            compute_dtype: str = "float32"):
    """(loss [], new model_state) of ONE member on a batch {"features", "rating" [B], "label" [B]}
    with per-example weights [B], dropout on: the multi-head loss plus the backbone's penalty.
    The forward pass runs in `compute_dtype` (lipctr.precision); logits, loss and penalty in float32."""
    logits, new_model_state = model.apply(
        {"params": compute_params(params, compute_dtype), **model_state},
        batch["features"],
        deterministic=False,
        rngs={"dropout": dropout_key},
        mutable=list(model_state) + (["intermediates"] if getattr(model, "tri_bce", False) else []),
    )
    logits = logits.astype(jnp.float32)
    penalty = model.penalty(params) if hasattr(model, "penalty") else 0.0  # optional (docs/own-model.md)
    loss = multihead_loss(logits, batch["rating"], batch["label"], loss_config, penalty, weight)
    if getattr(model, "tri_bce", False):  # DCNv3's Tri-BCE terms on its sown branch logits
        loss = loss + model.tri_bce_terms(
            lambda z: multihead_loss(z.astype(jnp.float32), batch["rating"], batch["label"], loss_config, 0.0, weight),
            logits, new_model_state["intermediates"])
        new_model_state = {k: v for k, v in new_model_state.items() if k != "intermediates"}
    return loss, new_model_state


def train_step(model: CTRModel, loss_config: LossConfig, tx, params, model_state, opt_state, batch: dict, weight,
               dropout_key, compute_dtype: str = "float32", frozen=None):
    """One optimiser step of ONE member -> (params, model_state, opt_state, loss, grads); params,
    grads and opt_state float32 whatever the compute dtype. With a RowOptimizer `tx`, the grads
    of the embedding tables are those of the batch's unique rows [U, width], and a true `frozen`
    keeps the rows (lipctr.embedding_optim)."""
    if isinstance(tx, RowOptimizer):
        def objective(own_model, p, features):
            return loss_fn(own_model, loss_config, p, model_state, {**batch, "features": features}, weight,
                           dropout_key, compute_dtype)

        (loss, new_model_state), params, opt_state, grads = tx.step(objective, model, params, opt_state,
                                                                    batch["features"], frozen)
        return params, new_model_state, opt_state, loss, grads
    grad_fn = jax.value_and_grad(
        lambda p: loss_fn(model, loss_config, p, model_state, batch, weight, dropout_key, compute_dtype), has_aux=True)
    (loss, new_model_state), grads = grad_fn(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_model_state, opt_state, loss, grads


def make_epoch_fn(model: CTRModel, loss_config: LossConfig, tx, num_train: int, batch_size: int, mesh=None,
                  compute_dtype: str = "float32", placement: str = "replicated", shuffle: str = "sort"):
    """epoch(state, train, frozen=None) -> (state, EpochStats) for ONE member; vmap it over the
    ensemble. frozen (bool []): a sparse embedding optimizer keeps the member's rows (train_step).

    tx: an optax GradientTransformation, or a function of the member's hparams returning one
    (its own learning rate / weight decay). The member's hparams also set its model's dropout
    rates, reg_weight and embedding_l2 and its loss's label smoothing (lipctr.member_hparams).

    train = {"features": {...}, "rating": [n], "label": [n]} on the device. Batches come from
    `epoch_batches` (batch-norm statistics do see the weight-0 fillers of the last batch).
    With a mesh, each batch is split over its "data" axis (lipctr.sharding). With placement
    "sharded" (and a mesh), train is `to_device(..., placement="sharded")`: each data shard draws
    its part of every batch from its own rows, in its own per-epoch permutation. `shuffle`: how
    the permutations are drawn (lipctr.shuffle); an elementwise one is computed batch by batch
    inside the scan, so no per-epoch [n] array of indices or weights exists.
    """
    num_batches = max(1, math.ceil(num_train / batch_size))
    sharded = mesh is not None and placement == "sharded"
    if sharded:
        shards, per_shard = sharding.data_shards(num_train, mesh)
        if batch_size % shards:
            raise ValueError(f"train.batch_size {batch_size} must be a multiple of the mesh's data axis ({shards}) "
                             "under data.placement 'sharded'")
        num_batches = max(1, math.ceil(per_shard / (batch_size // shards)))
    per_batch = shuffle in ELEMENTWISE
    schema = getattr(model, "schema", None)  # optional: without it the gradient-norm log is NaN
    fields = (schema.user_field, schema.item_field) if schema is not None else (None, None)
    optimizer = tx if callable(tx) else (lambda hparams: tx)

    def epoch(state: TrainState, train: dict, frozen=None) -> tuple[TrainState, EpochStats]:
        key, perm_key, dropout_key = jax.random.split(state.key, 3)
        batches = weights = None  # an elementwise shuffle: each step computes its own batch's indices
        if sharded:
            rows = sharding.local_rows(train, mesh)
            if not per_batch:
                batches, weights = sharding.shard_batches(perm_key, per_shard, batch_size, shards, shuffle)
        elif not per_batch:
            batches, weights = epoch_batches(perm_key, num_train, batch_size, shuffle)
        config = member_loss_config(loss_config, state.lambda_r, state.hparams)
        own_model, own_tx = member_model(model, state.hparams), optimizer(state.hparams)

        def step(carry, inputs):
            params, model_state, opt_state = carry
            index, weight, step_number = inputs
            if per_batch:
                index, weight = (sharding.shard_batch(perm_key, per_shard, batch_size, shards, step_number, shuffle)
                                 if sharded else epoch_batch(perm_key, num_train, batch_size, step_number, shuffle))
            if sharded:
                batch = sharding.take_local(rows, index)
                weight = weight.reshape(-1) * batch.pop("present")
            else:
                batch = jax.tree.map(lambda x: x[index], train)
            if mesh is not None:
                batch, weight = sharding.constrain_batch((batch, weight), mesh)

            step_key = jax.random.fold_in(dropout_key, step_number)
            params, new_model_state, opt_state, loss, grads = train_step(
                own_model, config, own_tx, params, model_state, opt_state, batch, weight, step_key, compute_dtype,
                frozen)
            norms = tuple(embedding_grad_norm(grads, field) for field in fields)
            return (params, new_model_state, opt_state), (loss, *norms)

        carry = (state.params, state.model_state, state.opt_state)
        inputs = (batches, weights, jnp.arange(num_batches))
        (params, model_state, opt_state), (losses, user_norms, item_norms) = jax.lax.scan(step, carry, inputs)
        new_state = TrainState(params, model_state, opt_state, key, state.lambda_r, state.epoch + 1, state.hparams)
        return new_state, EpochStats(losses.mean(), user_norms.mean(), item_norms.mean())

    return epoch


def to_device(split, mesh=None, placement: str = "replicated") -> dict:
    """A Split -> {"features", "rating", "label"} of device arrays, replicated over a mesh; with
    placement "sharded" split over its "data" axis (lipctr.sharding.put_sharded) plus "present"."""
    tree = {"features": dict(split.features), "rating": split.rating.astype(np.int32),
            "label": split.label.astype(np.float32)}
    if mesh is None:
        return jax.device_put(tree)
    if placement == "sharded":
        arrays, present = sharding.put_sharded(tree, mesh)
        return {**arrays, "present": present}
    return sharding.put_replicated(tree, mesh)
