"""Sparse embedding optimizers: `TrainConfig.embedding_optimizer`, a train step whose cost does
not grow with the vocabulary.

"adamw" (the default) is optax's dense AdamW over every parameter (lipctr.train). The others
update the embedding tables (params[...]["embedding"]["tables"][field]["embedding"]) and the
first-order per-id tables (params[<first-order module>]["weights"][field]["embedding"]) only
on the rows a batch touched, while every other parameter keeps AdamW:

  "lazy_adam"        Adam moments and update only on the touched rows (TF's LazyAdam: the bias
                     correction counts the optimiser's steps, not the row's);
  "rowwise_adagrad"  one accumulator per row, the mean of the row gradient's squares
                     (TorchRec / FBGEMM EXACT_ROWWISE_ADAGRAD), eps 1e-8;
  "sgd"              row -= lr * g.

Weight decay is decoupled (AdamW's): row -= lr * weight_decay * row, on the touched rows only.

How the step is sparse, under jit with static shapes: per id field, the batch's unique ids
(`jnp.unique`, size = the batch's id count, padded with the out-of-range id vocab_size; a
token_seq field always keeps its padding id 0 at compact index 0), the features remapped to
compact indices, and the model cloned with a schema whose vocab sizes are the compact sizes.
The loss is differentiated with respect to the gathered rows [U, width] (their gradient is the
segment sum over each unique id, token_seq pooling included), never a dense [vocab, width]
gradient; rows and their optimiser state are gathered, updated and scattered back (the padding
ids' writes dropped). A backbone penalty that reads the tables (xDeepFM's first-order norm, the
embedding_l2 control) sees the touched rows only under a sparse optimizer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

EMBEDDING_OPTIMIZERS = ("adamw", "lazy_adam", "rowwise_adagrad", "sgd")
SPARSE_OPTIMIZERS = EMBEDDING_OPTIMIZERS[1:]
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8  # optax.adamw's defaults
ADAGRAD_EPS = 1e-8


class EmbeddingError(ValueError):
    """A model a sparse embedding optimizer cannot train (no built-in embedding tables)."""


class LazyAdamRows(NamedTuple):
    mu: jax.Array  # float32 [vocab, width]
    nu: jax.Array  # float32 [vocab, width]


class AdagradRows(NamedTuple):
    sum: jax.Array  # float32 [vocab]: the accumulated mean squared row gradient


class SparseOptState(NamedTuple):
    """dense: optax.masked(AdamW) state (the tables masked out); tables: one state per table
    path (LazyAdamRows / AdagradRows / optax.EmptyState for sgd); count: int32 [] steps taken."""

    dense: Any
    tables: tuple
    count: jax.Array


def table_paths(schema, params) -> tuple[tuple[str, ...], ...]:
    """The paths (key tuples) of every per-id table of a token / token_seq field in `params`:
    leaves [vocab, width] named "embedding" under a key that is the field's name."""
    vocab = {f.name: f.vocab_size for f in schema.fields if f.kind in ("token", "token_seq")}
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:  # [vocab, width], or [M, vocab, width]
        keys = tuple(getattr(k, "key", None) for k in path)
        if len(keys) >= 2 and keys[-1] == "embedding" and keys[-2] in vocab and leaf.ndim >= 2 \
                and leaf.shape[-2] == vocab[keys[-2]]:
            found.append(keys)
    return tuple(found)


def get_path(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def set_paths(tree, paths, values):
    """A copy of nested dicts `tree` with the leaf at each path replaced (the rest shared)."""
    tree = dict(tree)
    for path, value in zip(paths, values):
        node = tree
        for key in path[:-1]:
            node[key] = dict(node[key])
            node = node[key]
        node[path[-1]] = value
    return tree


def _field_schema(model, name: str):
    schema = getattr(model, "schema", None)
    if schema is None or not hasattr(schema, "fields") or not hasattr(model, "clone"):
        raise EmbeddingError(f"train.embedding_optimizer {name!r} needs a lipctr CTRModel (a flax module with a "
                             f"`schema` and tables at params['embedding']['tables'][field]['embedding']); "
                             f"{type(model).__name__} has no schema: use train.embedding_optimizer 'adamw'")
    return schema


def compact_ids(schema, features: dict) -> tuple[dict, dict, Any]:
    """Per id field of the schema: unique ids [U] (padded with vocab_size), features with ids
    replaced by their compact index, and the schema with vocab sizes U."""
    unique, local, fields = {}, dict(features), []
    for field in schema.fields:
        if field.kind not in ("token", "token_seq"):
            fields.append(field)
            continue
        ids = features[field.name]
        flat = ids.reshape(-1)
        if field.kind == "token_seq":  # keep the padding id 0 at compact index 0 (pooling masks it)
            flat = jnp.concatenate([jnp.zeros((1,), flat.dtype), flat])
        ids_u, inverse = jnp.unique(flat, return_inverse=True, size=flat.shape[0], fill_value=field.vocab_size)
        inverse = inverse.reshape(-1)[1:] if field.kind == "token_seq" else inverse.reshape(-1)
        unique[field.name] = ids_u
        local[field.name] = inverse.reshape(ids.shape).astype(ids.dtype)
        fields.append(dataclasses.replace(field, vocab_size=int(flat.shape[0])))
    return unique, local, dataclasses.replace(schema, fields=tuple(fields))


def _gather(array, ids):
    return array.at[ids].get(mode="fill", fill_value=0)


def _scatter(array, ids, rows):
    return array.at[ids].set(rows, mode="drop")


@dataclasses.dataclass(frozen=True)
class RowOptimizer:
    """A sparse embedding optimizer `name` (one of SPARSE_OPTIMIZERS) for the tables of `schema`,
    AdamW (`dense`) for every other parameter; learning_rate / weight_decay may be traced []."""

    name: str
    dense: optax.GradientTransformation
    learning_rate: Any
    weight_decay: Any
    schema: Any

    @classmethod
    def create(cls, name: str, dense, learning_rate, weight_decay, model) -> RowOptimizer:
        if name not in SPARSE_OPTIMIZERS:
            raise ValueError(f"train.embedding_optimizer must be one of {', '.join(EMBEDDING_OPTIMIZERS)}, "
                             f"got {name!r}")
        return cls(name, dense, learning_rate, weight_decay, _field_schema(model, name))

    def _paths(self, params):
        paths = table_paths(self.schema, params)
        if not paths:
            raise EmbeddingError(f"train.embedding_optimizer {self.name!r}: the model has no per-id tables at "
                                 "params[...][field]['embedding']; use train.embedding_optimizer 'adamw'")
        return paths

    def _masked(self, params, paths):
        mask = jax.tree.map(lambda _: True, params)
        return optax.masked(self.dense, set_paths(mask, paths, [False] * len(paths)))

    def init(self, params) -> SparseOptState:
        paths = self._paths(params)
        tables = []
        for path in paths:
            table = get_path(params, path)
            if self.name == "lazy_adam":
                tables.append(LazyAdamRows(jnp.zeros_like(table), jnp.zeros_like(table)))
            elif self.name == "rowwise_adagrad":
                tables.append(AdagradRows(jnp.zeros(table.shape[:1], table.dtype)))
            else:
                tables.append(optax.EmptyState())
        return SparseOptState(self._masked(params, paths).init(params), tuple(tables), jnp.zeros((), jnp.int32))

    def _rows(self, rows, grad, state, count):
        """Updated rows [U, w] and row state from the rows, their summed gradients [U, w] and state."""
        lr, wd = self.learning_rate, self.weight_decay
        if self.name == "lazy_adam":
            mu = ADAM_B1 * state.mu + (1 - ADAM_B1) * grad
            nu = ADAM_B2 * state.nu + (1 - ADAM_B2) * jnp.square(grad)
            t = count.astype(jnp.float32)
            step = (mu / (1 - ADAM_B1 ** t)) / (jnp.sqrt(nu / (1 - ADAM_B2 ** t)) + ADAM_EPS)
            return rows - lr * (step + wd * rows), LazyAdamRows(mu, nu)
        if self.name == "rowwise_adagrad":
            total = state.sum + jnp.mean(jnp.square(grad), axis=-1)
            step = grad / (jnp.sqrt(total)[:, None] + ADAGRAD_EPS)
            return rows - lr * (step + wd * rows), AdagradRows(total)
        return rows - lr * (grad + wd * rows), state

    def step(self, objective, model, params, opt_state: SparseOptState, features: dict, frozen=None):
        """One step: objective(model, params, features) -> (loss, aux) is differentiated with
        respect to the dense params and the batch's gathered rows. Returns ((loss, aux), params,
        opt_state, grads); grads hold the row gradients [U, w] at the table paths. frozen (bool
        [], optional): when true the rows and their state keep their values (a stopped member;
        `freeze_dense` freezes the rest once per epoch without copying the tables)."""
        paths = self._paths(params)
        unique, local, schema = compact_ids(self.schema, features)
        ids = [unique[path[-2]] for path in paths]
        rows = [_gather(get_path(params, p), i) for p, i in zip(paths, ids)]
        compact = set_paths(params, paths, rows)
        (loss, aux), grads = jax.value_and_grad(objective, argnums=1, has_aux=True)(
            model.clone(schema=schema), compact, local)
        updates, dense_state = self._masked(params, paths).update(grads, opt_state.dense, compact)
        new = optax.apply_updates(compact, set_paths(updates, paths, [jnp.zeros_like(r) for r in rows]))
        count = opt_state.count + 1
        tables, states = [], []
        for path, row_ids, row_values, state in zip(paths, ids, rows, opt_state.tables):
            old_state = jax.tree.map(lambda s, row_ids=row_ids: _gather(s, row_ids), state)
            new_rows, new_state = self._rows(row_values, get_path(grads, path), old_state, count)
            if frozen is not None:
                new_rows, new_state = jax.tree.map(lambda a, b: jnp.where(frozen, a, b),
                                                   (row_values, old_state), (new_rows, new_state))
            tables.append(_scatter(get_path(params, path), row_ids, new_rows))
            states.append(jax.tree.map(lambda s, n, row_ids=row_ids: _scatter(s, row_ids, n), state, new_state))
        params = set_paths(new, paths, tables)
        return (loss, aux), params, SparseOptState(dense_state, tuple(states), count), grads

    def freeze_dense(self, freeze, stopped, new, old):
        """freeze(stopped, new, old) (lipctr.early_stopping.freeze_stopped) of TrainStates [M, ...]
        for all but the tables and their row states, which `step(frozen=stopped)` already kept: so
        the epoch keeps no copy of the old tables (O(vocab) memory and time per epoch)."""
        paths = table_paths(self.schema, new.params)

        def strip(state):
            return state._replace(params=set_paths(state.params, paths, [None] * len(paths)),
                                  opt_state=state.opt_state._replace(tables=None))

        frozen = freeze(stopped, strip(new), strip(old))
        return frozen._replace(params=set_paths(frozen.params, paths, [get_path(new.params, p) for p in paths]),
                               opt_state=frozen.opt_state._replace(tables=new.opt_state.tables))
