"""The device line every training run starts with, and its warning for a CPU-only jax on a GPU / TPU machine."""

from types import SimpleNamespace

import jax

from lipctr import runtime


def _devices(platform, kind, n):
    return [SimpleNamespace(platform=platform, device_kind=kind) for _ in range(n)]


def test_device_line_counts_devices_by_kind():
    line = runtime.device_line(_devices("gpu", "NVIDIA H200", 4), system=("gpu",))
    assert line == f"devices: 4 x NVIDIA H200 (jax {jax.__version__})"


def test_cpu_only_jax_on_a_gpu_or_tpu_machine_is_warned_with_the_extra_to_install():
    gpu = runtime.device_line(_devices("cpu", "cpu", 1), system=("gpu",))
    assert gpu.splitlines()[1].startswith("warning: this machine has a GPU but JAX sees only the CPU")
    assert gpu.endswith("pip install -e '.[cuda12]'")
    assert runtime.device_line(_devices("cpu", "cpu", 1), system=("tpu",)).endswith("pip install -e '.[tpu]'")
    assert "\n" not in runtime.device_line(_devices("cpu", "cpu", 2), system=())


def test_system_accelerators_reads_device_nodes(monkeypatch):
    nodes = {"/dev/nvidia[0-9]*": ["/dev/nvidia0"], "/dev/accel[0-9]*": []}
    monkeypatch.setattr(runtime.glob, "glob", lambda pattern: nodes[pattern])
    assert runtime.system_accelerators() == ("gpu",)
    nodes["/dev/nvidia[0-9]*"] = []
    assert runtime.system_accelerators() == ()

