"""XLA flag defaults that the CLIs set before JAX starts its backends.

XLA reads XLA_FLAGS once, when the first backend starts, so these functions must run before
anything touches a device. Each default is appended to XLA_FLAGS only when XLA_FLAGS does not
already name that flag: a user's own setting (e.g. `--xla_gpu_deterministic_ops=false`) wins.
"""

from __future__ import annotations

import importlib.metadata
import os

_ACCELERATOR_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


def set_default_flag(name: str, value: str) -> None:
    """Append `--name=value` to XLA_FLAGS unless XLA_FLAGS already sets `name`."""
    flags = os.environ.get("XLA_FLAGS", "")
    if f"--{name}=" not in flags and not any(f == f"--{name}" for f in flags.split()):
        os.environ["XLA_FLAGS"] = f"{flags} --{name}={value}".strip()


def deterministic_gpu_ops() -> None:
    """Same config and seed, same metrics on a GPU too: XLA's GPU scatter-add (embedding
    gradients) is otherwise non-deterministic."""
    set_default_flag("xla_gpu_deterministic_ops", "true")


def cpu_only() -> bool:
    """True when JAX will run on the CPU: JAX_PLATFORMS=cpu or no GPU/TPU plugin installed."""
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return True
    names = (dist.metadata["Name"] or "" for dist in importlib.metadata.distributions())
    return not any(name.lower().startswith(_ACCELERATOR_PLUGINS) for name in names)


def layout_independent_cpu_ops(exact: bool) -> None:
    """A member's numbers on CPU independent of the device layout (README "Scaling out").

    Always: YNNPACK only for dots. Its other fusions (reductions) split their work by the
    threads each device gets, so merely making more host devices visible changed results.
    exact=True also turns off XLA's algebraic simplifier, whose rewrites (e.g. a division by a
    per-member scalar into a multiplication by its reciprocal) depend on the per-device shapes,
    which differ between a sharded and an unsharded program; it costs speed (README). Only
    where JAX runs on the CPU alone (untested with the GPU and TPU compilers, left on there).
    """
    set_default_flag("xla_cpu_experimental_ynn_fusion_type", "individual_dot")
    if exact and cpu_only():
        set_default_flag("xla_disable_hlo_passes", "algsimp")
