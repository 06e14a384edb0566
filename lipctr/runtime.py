"""XLA flag defaults that the CLIs set before JAX starts its backends.

XLA reads XLA_FLAGS once, when the first backend starts, so these functions must run before
anything touches a device. Each default is appended to XLA_FLAGS only when XLA_FLAGS does not
already name that flag: a user's own setting (e.g. `--xla_gpu_deterministic_ops=false`) wins.
"""

from __future__ import annotations

import os


def set_default_flag(name: str, value: str) -> None:
    """Append `--name=value` to XLA_FLAGS unless XLA_FLAGS already sets `name`."""
    flags = os.environ.get("XLA_FLAGS", "")
    if f"--{name}=" not in flags and not any(f == f"--{name}" for f in flags.split()):
        os.environ["XLA_FLAGS"] = f"{flags} --{name}={value}".strip()


def deterministic_gpu_ops() -> None:
    """Same config and seed, same metrics on a GPU too: XLA's GPU scatter-add (embedding
    gradients) is otherwise non-deterministic."""
    set_default_flag("xla_gpu_deterministic_ops", "true")


def layout_independent_cpu_ops() -> None:
    """A member's numbers on CPU independent of how many devices are visible (README "Scaling
    out"): YNNPACK only for dots. Its other fusions (reductions) split their work by the threads
    each device gets, so merely making 4 host devices visible changed an unsharded run."""
    set_default_flag("xla_cpu_experimental_ynn_fusion_type", "individual_dot")
