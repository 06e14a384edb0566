"""Orbax checkpoints: the full resumable training state, and each member's best params.

Orbax writes into a temporary folder and renames it when complete, so a checkpoint on disk is
always whole. A resumable state also stores the SHA-256 digest of every array beside it, and a
restore checks them, so a state damaged on disk is never trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from lipctr import sharding


class CheckpointError(ValueError):
    """A saved state that is missing, unreadable or does not match its digests."""


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def array_digests(tree) -> dict[str, str]:
    """{leaf path: sha256 of the leaf's dtype, shape and bytes} of a pytree of arrays."""
    digests = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        value = np.ascontiguousarray(sharding.to_host(leaf))
        digest = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
        digest.update(value.tobytes())
        digests[jax.tree_util.keystr(path)] = digest.hexdigest()
    return digests


def _first_line(error: BaseException) -> str:
    """A library error's first line, without TensorStore's spec dump."""
    lines = str(error).strip().splitlines() or [""]
    return f"{type(error).__name__}: {lines[0].split('. See full TensorStore details')[0]}"[:300]


class StateCheckpoints:
    """The resumable states of a run: the newest `keep` epochs, each with its array digests and
    a small JSON `info` dict (whatever the caller wants restored with it)."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory)
        self.manager = ocp.CheckpointManager(
            self.directory.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=keep)
        )

    def save(self, epoch: int, tree, info: dict | None = None) -> None:
        meta = {"digests": array_digests(tree), "info": info or {}}
        self.manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                         meta=ocp.args.JsonSave(meta)))
        self.manager.wait_until_finished()

    def latest_epoch(self) -> int | None:
        return self.manager.latest_step()

    def info(self, epoch: int | None) -> dict:
        """The `info` saved with an epoch's state; {} if there is none or it cannot be read."""
        if epoch is None:
            return {}
        try:
            meta = self.manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception:  # noqa: BLE001 (an unreadable state is reported by restore)
            return {}
        return meta.get("info", {}) if isinstance(meta, dict) else {}

    def _restore_step(self, step: int, like):
        where = self.directory / str(step)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()))
        except Exception as error:  # noqa: BLE001 (orbax and tensorstore raise many kinds; all mean unreadable)
            raise CheckpointError(f"{where}: unreadable ({_first_line(error)})") from None
        saved = restored["meta"].get("digests") if isinstance(restored["meta"], dict) else None
        if saved is None:
            raise CheckpointError(f"{where}: holds no array digests")
        actual = array_digests(restored["state"])
        for key in sorted(set(saved) | set(actual)):
            if saved.get(key) != actual.get(key):
                raise CheckpointError(f"{where}: array {key} does not match its saved SHA-256 digest")
        return restored["state"]

    def restore(self, like, log=print):
        """The newest intact state, in the structure, shapes and dtypes of `like`. A damaged newer
        state is reported with `log` and deleted (its epochs are trained again), so afterwards
        `latest_epoch()` is the restored one; CheckpointError when no state is intact."""
        problems = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                result = self._restore_step(step, like)
            except CheckpointError as error:
                problems.append(str(error))
                continue
            for message in problems:
                log(f"warning: {message}; using the older intact state {self.directory / str(step)} instead")
            for damaged in [s for s in self.manager.all_steps() if s > step]:
                self.manager.delete(damaged)
            return result
        raise CheckpointError(f"{self.directory}: no intact saved state to resume from ("
                              + "; ".join(problems or ["it is empty"]) + ")")


def save_tree(directory: str | Path, tree) -> None:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(directory).absolute(), tree, force=True)
    checkpointer.wait_until_finished()


def load_tree(directory: str | Path, like):
    return ocp.StandardCheckpointer().restore(Path(directory).absolute(), _abstract(like))
