"""How an ensemble's member axis M is computed inside one compiled program.

Every per-member array of the training engine (lipctr.train) carries a leading axis M. A
function of ONE member runs over it batched (`vmap`) or one member after another (`lax.map`);
a single member runs without the axis at all.
"""

from __future__ import annotations

import jax

MEMBER_MODES = ("auto", "vmap", "sequential")


def sequential_members(mode: str) -> bool:
    """Whether members run one after another (lax.map) instead of batched (vmap). "auto": one
    after another on the CPU, where the step is compute-bound and a batched member costs more than
    a member alone (NFM, 3 members: 0.82x the vmapped epoch, docs/benchmarks.md); vmapped on accelerators."""
    if mode not in MEMBER_MODES:
        raise ValueError(f"train.members must be one of {MEMBER_MODES}, got {mode!r}")
    return mode == "sequential" or (mode == "auto" and jax.default_backend() == "cpu")


def over_members(fn, in_axes, sequential: bool):
    """fn mapped over the leading member axis M of the arguments whose in_axes is 0 (None: shared).

    One member runs without a member axis at all (XLA:CPU computes reductions over [1, B, ...]
    many times slower than over [B, ...]); `sequential` members run one after another through
    `lax.map`, each as that same one-member program (so an ensemble member equals its independent
    run); otherwise `vmap`. Outputs carry the member axis in every case.
    """
    def mapped(*args):
        per_member = [a for a, axis in zip(args, in_axes) if axis == 0]
        num_members = jax.tree.leaves(per_member)[0].shape[0]
        if num_members > 1 and not sequential:
            return jax.vmap(fn, in_axes=in_axes)(*args)

        def one(member_args):
            member_args = iter(member_args)
            return fn(*(next(member_args) if axis == 0 else a for a, axis in zip(args, in_axes)))

        if num_members == 1:
            out = one(jax.tree.map(lambda x: x[0], per_member))
            return jax.tree.map(lambda x: x[None], out)
        return jax.lax.map(one, per_member)

    return mapped
