"""Use a finished run: `load_run(path, variant)` -> a `Run` that scores raw (user, item) pairs,
recommends top-k items and exports itself, without reading the training data.

    run = lipctr.load_run("runs/dcnv2_ml100k/20250101-120000", variant="smooth")
    scores = run.predict(pd.DataFrame({"user_id": ["196", "186"], "item_id": ["242", "302"]}))
    top10 = run.recommend(["196", "186"], k=10)        # training items excluded
    run.export("dcnv2_smooth.export")                  # lipctr.load_exported(...).predict(frame)

A run trained on any mesh loads onto the default device (its checkpoints hold the real members),
or onto a mesh with `load_run(..., mesh=lipctr.sharding.make_mesh("seeds=2"))`.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lipctr import sharding
from lipctr.checkpoint import load_tree
from lipctr.ensemble import over_members, sequential_members
from lipctr.evaluation import make_predict_fn
from lipctr.models import build_model
from lipctr.run_files import SCHEMA_FILE, RunFileError, read_run_files
from lipctr.scoring import Scorer


def _example_features(schema, rows: int = 2) -> dict[str, np.ndarray]:
    """All-padding inputs [rows, ...] of every field (for the parameter shapes)."""
    def zeros(field):
        if field.kind == "float":
            return np.zeros(rows, np.float32)
        return np.zeros((rows, field.max_len) if field.kind == "token_seq" else rows, np.int32)

    return {f.name: zeros(f) for f in schema.fields}


def variant_directory(path: str | Path, variant: str) -> Path:
    """`path` itself when it is a variant directory, else `path/variant`; RunFileError otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise RunFileError(f"{path}: no such run directory")
    if (path / SCHEMA_FILE).is_file() or (path / "checkpoints").is_dir():
        return path
    if not (path / variant).is_dir():
        found = sorted(p.name for p in path.iterdir() if (p / "checkpoints").is_dir() or (p / SCHEMA_FILE).is_file())
        raise RunFileError(f"{path}: no variant {variant!r} (found: {', '.join(found) or 'none'})")
    return path / variant


class Run(Scorer):
    """A trained variant in process: its `variant` name (the directory's), `model` (flax), every
    member's best `params` and `model_state` stacked on a leading member axis [M, ...]; members,
    loss options and scoring methods from `Scorer`. With a `mesh` (lipctr.sharding) members and
    chunks are split over it as in training."""

    def __init__(self, files, model, params, model_state, mesh=None):
        self.model, self.mesh, self.num_members = model, mesh, len(files.meta["members"])
        self.variant = files.directory.name
        if mesh is not None:  # pad members as training does, so each device runs the same program
            def pad(x):
                extra = sharding.padded_size(self.num_members, mesh) - self.num_members
                return jax.device_put(jnp.concatenate([x] + [x[-1:]] * extra), sharding.member_sharding(mesh))

            params, model_state = jax.tree.map(pad, (params, model_state))
        self.params, self.model_state = params, model_state
        self._programs: dict[int, object] = {}
        super().__init__(files, self._logits)
        self.min_chunk = 1 if mesh is None else int(mesh.shape["data"])

    def _logits(self, batch: dict) -> jax.Array:
        """Logits [M, C, K] of a batch of C rows: the training evaluation's program (members mapped
        as in training, lipctr.ensemble; one chunk of C rows), compiled once per C."""
        size = len(next(iter(batch.values())))
        if size not in self._programs:
            predict = make_predict_fn(self.model, size, size, self.mesh)
            if self.mesh is None:
                program = jax.jit(over_members(predict, (0, 0, None), sequential_members("auto")))
            else:
                program = jax.jit(jax.vmap(predict, in_axes=(0, 0, None), spmd_axis_name="seeds"),
                                  out_shardings=sharding.replicated(self.mesh))
            self._programs[size] = program
        if self.mesh is None:
            return self._programs[size](self.params, self.model_state, batch)
        batch = sharding.put_replicated(batch, self.mesh)
        return self._programs[size](self.params, self.model_state, batch)[: self.num_members]

    def export(self, path: str | Path, platforms: tuple[str, ...] | None = None) -> Path:
        """Write the portable form of this run to the folder `path` (see lipctr.export)."""
        from lipctr.export import export_run

        return export_run(self, path, platforms)


def load_run(path: str | Path, variant: str = "smooth", mesh=None) -> Run:
    """The variant `variant` of the run directory `path` (or the variant directory itself), with
    every member's best params; RunFileError naming what is missing. `mesh`: score sharded over
    it (a run's predictions.npz is reproduced bit for bit on the mesh it was trained on; on
    another layout up to float rounding)."""
    directory = variant_directory(path, variant)
    files = read_run_files(directory)
    meta = files.meta["model"]
    hparams = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["hparams"].items()}
    model = build_model(meta["name"], files.schema, int(meta["num_outputs"]), **hparams)
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
    example = _example_features(files.schema)
    like = jax.eval_shape(lambda: model.init(keys, example, deterministic=True))
    restored = []
    for member in files.meta["members"]:
        where = directory / "checkpoints" / member["member"]
        if not where.is_dir():
            raise RunFileError(f"{directory}: checkpoint of member {member['member']!r} missing ({where})")
        try:
            restored.append(load_tree(where, dict(like)))
        except Exception as error:  # orbax raises many kinds; the user needs the path and the reason
            raise RunFileError(f"{where}: checkpoint cannot be restored ({type(error).__name__}: {error})") from None
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *restored)
    params = stacked.pop("params")
    return Run(files, model, params, stacked, mesh)
