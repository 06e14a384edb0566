"""Process-wide XLA settings the training CLIs apply before JAX starts its backend.

Each default is a flag in XLA_FLAGS that a user's own setting of the same flag overrides (the
flag's name anywhere in XLA_FLAGS leaves it alone), and each must be set before the first JAX
operation: XLA reads XLA_FLAGS once, when the backend starts.
"""

from __future__ import annotations

import os

# XLA:CPU flags that pay on the CPU (issue 12). YNNPACK fusions off ("" = no fusion type): by
# default XLA:CPU hands reductions and elementwise fusions to YNNPACK, which ran batch-norm and
# attention reductions several times slower than XLA's own loops (one-seed epochs, fusions off:
# WideDeep 0.64x, NFM 0.41x, DCNV2 0.57x of today's; 3 members one after another: NFM 0.82x,
# DCNV2 0.65x of today's vmapped epoch).
CPU_SPEED_FLAGS: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}


def add_default_flags(defaults: dict[str, str]) -> None:
    """Append `--name=value` to XLA_FLAGS for each default whose name XLA_FLAGS does not mention."""
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f"--{name}={value}" for name, value in defaults.items() if name not in flags]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


def cpu_speed_flags() -> None:
    """XLA:CPU's faster settings for lipctr's training step (`CPU_SPEED_FLAGS`); the user's
    XLA_FLAGS setting of the same flag wins. Must run before JAX starts its backend."""
    add_default_flags(CPU_SPEED_FLAGS)
