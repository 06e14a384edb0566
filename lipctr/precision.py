"""Mixed precision for the train step: `TrainConfig.compute_dtype`.

"bfloat16" runs the train step's forward and backward pass (matmuls, activations, embedding
lookups) in bfloat16 on a bfloat16 copy of the parameters, while the master parameters, their
gradients, the optimiser state, the batch-norm statistics, the loss and every metric stay
float32: the cast is inside the differentiated function, so gradients arrive in float32.
Evaluation and inference run in float32 on the master parameters.

Measured on this repository's 2-core Xeon (AVX-512-BF16 / AMX-BF16 present): XLA:CPU's bf16
matmul is slower than its fp32 one (275 vs 309 GFLOP/s, 4096x512 @ 512x512), so "float32"
stays the default; bf16 is meant for accelerators (not yet measured on one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_params(params, name: str):
    """params with every floating leaf cast to the compute dtype `name` (unchanged for float32)."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {name!r}")
    if name == "float32":
        return params
    dtype = jnp.dtype(name)
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
