"""XLA flag defaults that the CLIs set before JAX starts its backends.

XLA reads XLA_FLAGS once, when the first backend starts, so these functions must run before
anything touches a device. Each default is appended to XLA_FLAGS only when XLA_FLAGS does not
already name that flag: a user's own setting (e.g. `--xla_gpu_deterministic_ops=false`) wins.
"""

from __future__ import annotations

import os

# XLA:CPU's YNNPACK fusions off ("" = no fusion type). By default XLA:CPU hands reductions and
# elementwise fusions to YNNPACK, which (1) split them by the threads each device gets, so merely
# making 4 host devices visible changed an unsharded run's numbers (issue 16), and (2) ran the
# batch-norm and attention reductions several times slower than XLA's own loops (issue 12).
CPU_DEFAULTS: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}


def set_default_flag(name: str, value: str) -> None:
    """Append `--name=value` to XLA_FLAGS unless XLA_FLAGS already sets `name`."""
    flags = os.environ.get("XLA_FLAGS", "")
    if f"--{name}=" not in flags and not any(f == f"--{name}" for f in flags.split()):
        os.environ["XLA_FLAGS"] = f"{flags} --{name}={value}".strip()


def deterministic_gpu_ops() -> None:
    """Same config and seed, same metrics on a GPU too: XLA's GPU scatter-add (embedding
    gradients) is otherwise non-deterministic."""
    set_default_flag("xla_gpu_deterministic_ops", "true")


def cpu_defaults() -> None:
    """XLA:CPU settings for layout-independent and fast training (`CPU_DEFAULTS`)."""
    for name, value in CPU_DEFAULTS.items():
        set_default_flag(name, value)


def configure_xla() -> None:
    """Every default above; the training CLIs call this first."""
    deterministic_gpu_ops()
    cpu_defaults()
