"""XLA flag defaults that the CLIs set before JAX starts its backends.

XLA reads XLA_FLAGS once, when the first backend starts, so these functions must run before
anything touches a device. Each default is appended to XLA_FLAGS only when XLA_FLAGS does not
already name that flag: a user's own setting (e.g. `--xla_gpu_deterministic_ops=false`) wins.
"""

from __future__ import annotations

import glob
import os

# XLA:CPU's YNNPACK fusions off ("" = no fusion type). By default XLA:CPU hands reductions and
# elementwise fusions to YNNPACK, which (1) split them by the threads each device gets, so merely
# making 4 host devices visible changed an unsharded run's numbers, and (2) ran the batch-norm
# and attention reductions several times slower than XLA's own loops (docs/benchmarks.md).
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


def system_accelerators() -> tuple[str, ...]:
    """Accelerators the operating system shows, whatever JAX sees: "gpu" for an NVIDIA device node
    (/dev/nvidia0, ...), "tpu" for a TPU's (/dev/accel0, ...)."""
    found = []
    if glob.glob("/dev/nvidia[0-9]*"):
        found.append("gpu")
    if glob.glob("/dev/accel[0-9]*"):
        found.append("tpu")
    return tuple(found)


def device_line(devices=None, system: tuple[str, ...] | None = None) -> str:
    """The line a run starts with, naming the devices it trains on, e.g. "devices: 1 x cpu (jax
    0.10.2)"; plus a warning line when the system shows a GPU / TPU but JAX sees only the CPU (the
    CPU-only jax wheel: `pip install -e '.[cuda12]'` or `'.[tpu]'`). devices: jax.devices() when None."""
    import jax  # only now: the XLA flags above must be set before JAX starts its backends

    devices = jax.devices() if devices is None else devices
    kinds: dict[str, int] = {}
    for device in devices:
        kinds[device.device_kind] = kinds.get(device.device_kind, 0) + 1
    line = "devices: " + ", ".join(f"{n} x {kind}" for kind, n in kinds.items()) + f" (jax {jax.__version__})"
    system = system_accelerators() if system is None else system
    if system and all(d.platform == "cpu" for d in devices):
        extra = "cuda12" if "gpu" in system else "tpu"
        line += (f"\nwarning: this machine has a {system[0].upper()} but JAX sees only the CPU (a CPU-only jax); "
                 f"install the accelerator build: pip install -e '.[{extra}]'")
    return line
