"""Orbax checkpoints: the full resumable training state, and each member's best params.

Orbax writes into a temporary folder and renames it when complete, so a checkpoint on disk is
always whole.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class StateCheckpoints:
    """The latest resumable state of a run (keeps only the newest epoch)."""

    def __init__(self, directory: str | Path):
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=1)
        )

    def save(self, epoch: int, tree) -> None:
        self.manager.save(epoch, args=ocp.args.StandardSave(tree))
        self.manager.wait_until_finished()

    def latest_epoch(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, like):
        """Restore the latest checkpoint into the structure, shapes and dtypes of `like`."""
        step = self.manager.latest_step()
        return self.manager.restore(step, args=ocp.args.StandardRestore(_abstract(like)))


def save_tree(directory: str | Path, tree) -> None:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(directory).absolute(), tree, force=True)
    checkpointer.wait_until_finished()


def load_tree(directory: str | Path, like):
    return ocp.StandardCheckpointer().restore(Path(directory).absolute(), _abstract(like))
