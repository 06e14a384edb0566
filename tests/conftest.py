"""Every test process starts JAX with the XLA flags the training CLIs set (lipctr.runtime).

XLA reads XLA_FLAGS once, when the first backend starts. Without this, the flags of a test
process depended on the order of its tests: a CLI called in-process (experiments.main.main)
appends the CPU defaults to XLA_FLAGS, which took effect only if no earlier test had started a
backend, so a file's numbers could change with the files run before it (e.g. under pytest-xdist).
"""

from lipctr import runtime

runtime.configure_xla()
