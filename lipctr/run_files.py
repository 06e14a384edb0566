"""The files that make a trained variant's directory self-contained, so it scores without the data.

Beside `checkpoints/`, each variant directory (e.g. `<run>/smooth/`) holds

  run_schema.json   the model (name, hyper-parameters, number of outputs), the loss settings that
                    turn logits into click probabilities, the eval chunk size, the members, the
                    input schema, the library version, and the layout and sha256 of the file below
  run_tables.npz    the raw-id vocabulary of every token / token_seq field (the raw value of each
                    id 1..V-1), the user and item feature tables as encoded at training time, and
                    the training items of each user (CSR: items[offsets[u]:offsets[u + 1]])

Both are written atomically, the tables first: a directory with a schema has its tables.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

import lipctr
from lipctr.data.cache import file_digest
from lipctr.data.schema import Dataset, Schema
from lipctr.io import save_npz_atomic, write_json_atomic
from lipctr.models import default_hparams

SCHEMA_FILE = "run_schema.json"
TABLES_FILE = "run_tables.npz"
FORMAT_VERSION = 1
GROUPS = ("vocab", "user", "item", "seen")


class RunFileError(ValueError):
    """A run directory that cannot be loaded: missing, incomplete or of another format."""


@dataclasses.dataclass
class RunFiles:
    """What a variant directory stores for scoring (see the module docstring)."""

    directory: Path
    meta: dict  # run_schema.json
    schema: Schema
    vocabularies: dict[str, np.ndarray]  # field -> raw value of ids 1..V-1 [V-1]
    user_tables: dict[str, np.ndarray]  # field -> [num_users + 1, ...], row 0 = padding
    item_tables: dict[str, np.ndarray]  # field -> [num_items + 1, ...]
    seen_offsets: np.ndarray  # int64 [num_users + 2]
    seen_items: np.ndarray  # int32 [train interactions], per user ascending

    def seen(self, user: int) -> np.ndarray:
        """Item ids user `user` interacted with in training (ascending)."""
        return self.seen_items[self.seen_offsets[user]: self.seen_offsets[user + 1]]


def vocabularies_of(dataset: Dataset) -> dict[str, np.ndarray]:
    """The dataset's vocabularies; a token field without one gets its own ids 1..V-1 as raw values."""
    return {f.name: dataset.vocabularies.get(f.name, np.arange(1, f.vocab_size, dtype=np.int64))
            for f in dataset.schema.fields if f.kind != "float"}


def seen_csr(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 [U + 1], items int32 [n]) of the training split, U = user vocab size."""
    schema = dataset.schema
    users = dataset.train.features[schema.user_field].astype(np.int64)
    items = dataset.train.features[schema.item_field].astype(np.int32)
    order = np.lexsort((items, users))
    counts = np.bincount(users, minlength=schema[schema.user_field].vocab_size)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), items[order]


def write_run_files(directory: Path, dataset: Dataset, trainer, model_name: str, members: list[dict]) -> None:
    """Write run_tables.npz then run_schema.json into `directory` for a variant trained by
    `trainer` (a lipctr.trainer.Trainer of model `model_name`); members = [{"member", "seed",
    "lambda_r"}] in the order of the ensemble axis."""
    offsets, items = seen_csr(dataset)
    groups = {"vocab": vocabularies_of(dataset), "user": dataset.user_features, "item": dataset.item_features,
              "seen": {"offsets": offsets, "items": items}}
    arrays, layout = {}, {}
    for group, named in groups.items():
        for name, array in named.items():
            key = f"a{len(arrays)}"
            arrays[key] = np.ascontiguousarray(array)
            layout.setdefault(group, {})[name] = key
    path = Path(directory) / TABLES_FILE
    save_npz_atomic(path, **arrays)
    meta = {
        "format": "lipctr-run",
        "format_version": FORMAT_VERSION,
        "lipctr_version": lipctr.__version__,
        "jax_version": jax.__version__,
        "dataset": dataset.name,
        "model": {"name": model_name, "num_outputs": trainer.model.num_outputs,
                  "hparams": {k: getattr(trainer.model, k) for k in default_hparams(model_name)}},
        "loss": {"threshold": trainer.loss_config.threshold, "aggregation": trainer.loss_config.aggregation,
                 "aux_rating": trainer.loss_config.aux_rating},
        "eval_batch_size": trainer.config.eval_batch_size,
        "members": members,
        "schema": dataset.schema.to_dict(),
        "tables": {"file": TABLES_FILE, "sha256": file_digest(path), "layout": layout},
    }
    write_json_atomic(Path(directory) / SCHEMA_FILE, meta)


def read_run_files(directory: str | Path) -> RunFiles:
    """The scoring files of a variant directory; RunFileError naming what is missing or wrong."""
    directory = Path(directory)
    schema_path = directory / SCHEMA_FILE
    if not schema_path.is_file():
        raise RunFileError(
            f"{directory}: no {SCHEMA_FILE}, so this run cannot be scored without its training data "
            f"(runs trained before lipctr kept their schema and vocabularies lack it; retrain, or "
            f"resume a run that had not finished, to get one)")
    try:
        meta = json.loads(schema_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFileError(f"{schema_path}: not readable JSON ({error})") from None
    if meta.get("format") != "lipctr-run" or meta.get("format_version") != FORMAT_VERSION:
        raise RunFileError(f"{schema_path}: format {meta.get('format')!r} version "
                           f"{meta.get('format_version')!r}; this lipctr reads lipctr-run version {FORMAT_VERSION}")
    tables_path = directory / meta["tables"]["file"]
    if not tables_path.is_file():
        raise RunFileError(f"{directory}: {SCHEMA_FILE} is there but {tables_path.name} (vocabularies and feature "
                           "tables) is missing")
    if file_digest(tables_path) != meta["tables"]["sha256"]:
        raise RunFileError(f"{tables_path}: contents do not match the sha256 recorded in {SCHEMA_FILE} "
                           "(the file was changed or replaced)")
    with np.load(tables_path, allow_pickle=False) as archive:
        groups = {g: {name: archive[key] for name, key in meta["tables"]["layout"].get(g, {}).items()}
                  for g in GROUPS}
    return RunFiles(directory, meta, Schema.from_dict(meta["schema"]), groups["vocab"], groups["user"],
                    groups["item"], groups["seen"]["offsets"], groups["seen"]["items"])

