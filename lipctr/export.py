"""Portable export of a trained variant: the scoring function as a `jax.export` program.

`run.export(path)` (lipctr.inference.Run) writes the folder `path` with

  scoring.jaxexport   serialized StableHLO of features -> logits [M, b, K] with a symbolic batch
                      dimension b; every member's params are constants inside it
  run_schema.json, run_tables.npz   the run's schema, vocabularies and feature tables (copied)

`lipctr.load_exported(path)` -> an `ExportedRun` with the same `predict` and `recommend` as a
loaded run, built from the serialized program without the flax model. Outside lipctr:

    exported = jax.export.deserialize(open(path + "/scoring.jaxexport", "rb").read())
    logits = exported.call({name: int32 [b] / int32 [b, max_len] / float32 [b] ids per field})

with the field names, kinds and lengths of run_schema.json's "schema" and the ids from the
vocabularies in run_tables.npz (layout in run_schema.json; id 0 = unknown).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from lipctr.ensemble import over_members, sequential_members
from lipctr.io import write_bytes_atomic
from lipctr.run_files import SCHEMA_FILE, TABLES_FILE, RunFileError, read_run_files
from lipctr.scoring import Scorer

PROGRAM_FILE = "scoring.jaxexport"


def input_specs(schema, batch) -> dict[str, jax.ShapeDtypeStruct]:
    """The model inputs of `batch` rows (an int or a symbolic dimension), one per field."""
    def spec(field):
        if field.kind == "float":
            return jax.ShapeDtypeStruct((batch,), jnp.float32)
        return jax.ShapeDtypeStruct((batch, field.max_len) if field.kind == "token_seq" else (batch,), jnp.int32)

    return {f.name: spec(f) for f in schema.fields}


def export_run(run, path: str | Path, platforms: tuple[str, ...] | None = None) -> Path:
    """Write `run` (a lipctr.inference.Run) to the folder `path` (see the module docstring);
    platforms: e.g. ("cpu", "cuda"); default the current backend."""
    path = Path(path)
    model, params, model_state = run.model, run.params, run.model_state

    def logits(features):
        def one(p, s):
            return model.apply({"params": p, **s}, features, deterministic=True)

        # members mapped as in training and lipctr.inference (lipctr.ensemble), so the bits agree
        return over_members(one, (0, 0), sequential_members("auto"))(params, model_state)

    (batch,) = jax.export.symbolic_shape("b")
    exported = jax.export.export(jax.jit(logits), platforms=platforms)(input_specs(run.schema, batch))
    write_bytes_atomic(path / TABLES_FILE, (run.files.directory / TABLES_FILE).read_bytes())
    write_bytes_atomic(path / PROGRAM_FILE, bytes(exported.serialize()))
    write_bytes_atomic(path / SCHEMA_FILE, (run.files.directory / SCHEMA_FILE).read_bytes())
    return path


class ExportedRun(Scorer):
    """A run restored from its export: `exported` is the jax.export.Exported program."""

    def __init__(self, files, exported):
        self.exported = exported
        self._call = jax.jit(exported.call)
        super().__init__(files, self._call)


def load_exported(path: str | Path) -> ExportedRun:
    """The exported run in folder `path`; RunFileError naming what is missing."""
    path = Path(path)
    program = path / PROGRAM_FILE
    if not program.is_file():
        raise RunFileError(f"{path}: no {PROGRAM_FILE}; is it a folder written by Run.export?")
    files = read_run_files(path)
    try:
        exported = jax.export.deserialize(bytearray(program.read_bytes()))
    except Exception as error:  # a truncated or foreign file fails deep inside the deserializer
        raise RunFileError(f"{program}: not a readable jax.export program ({type(error).__name__}: {error})") from None
    return ExportedRun(files, exported)
