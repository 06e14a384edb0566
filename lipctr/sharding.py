"""Device meshes for the ensemble, member padding, and multi-host runs on JAX's own runtime.

A mesh always has the two named axes `AXES`:
  "seeds"  shards the ensemble axis M of every per-member array (state, early stopping). It holds
           every member, seeds x lambda values when a sweep is trained.
  "data"   shards each training (and evaluation) batch inside the step; the compiler averages
           the gradients over it (the loss is already a weighted mean over the batch).
Axis sizes must multiply to the number of visible devices (all processes' devices in a
multi-host run). M is padded to a multiple of the "seeds" size with dummy members that start
stopped; `Trainer.real_members` drops them again before anything is written.

With no mesh (spec "") none of these functions is called and training runs on one device.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from lipctr.shuffle import epoch_order

AXES = ("seeds", "data")
PLACEMENTS = ("replicated", "sharded")  # of the training split (data.placement)
_ITEM = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*(-?\d+)\s*$")
_EXAMPLES = "e.g. seeds=4 or seeds=2,data=2"


class MeshError(ValueError):
    """A mesh spec that is malformed or does not fit the visible devices."""


def parse_mesh(spec: str) -> dict[str, int]:
    """"seeds=2,data=2" -> {"seeds": 2, "data": 2}; every axis of `AXES` present (default 1)."""
    sizes: dict[str, int] = {}
    for item in spec.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise MeshError(f"mesh spec {spec!r}: cannot read {item.strip()!r}; "
                            f"expected AXIS=SIZE[,AXIS=SIZE], {_EXAMPLES}")
        axis, size = match.group(1), int(match.group(2))
        if axis not in AXES:
            raise MeshError(f"mesh spec {spec!r}: unknown axis {axis!r}; known axes: {', '.join(AXES)}")
        if axis in sizes:
            raise MeshError(f"mesh spec {spec!r}: axis {axis!r} given twice")
        if size < 1:
            raise MeshError(f"mesh spec {spec!r}: axis {axis!r} has size {size}; sizes must be >= 1")
        sizes[axis] = size
    return {axis: sizes.get(axis, 1) for axis in AXES}


def make_mesh(spec: str, devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """The mesh of a spec over `devices` (default: every process's devices); None for spec ""."""
    if not spec.strip():
        return None
    sizes = parse_mesh(spec)
    devices = list(jax.devices() if devices is None else devices)
    wanted = math.prod(sizes.values())
    shape = " x ".join(f"{axis} {size}" for axis, size in sizes.items())
    where = f"{len(devices)} {devices[0].platform} device(s) over {jax.process_count()} process(es)"
    if wanted > len(devices):
        raise MeshError(f"mesh {spec!r} asks for {wanted} devices ({shape}) but only {len(devices)} exist ({where})")
    if wanted < len(devices):
        raise MeshError(
            f"mesh {spec!r} uses {wanted} devices ({shape}) but {len(devices)} exist ({where}): the axis sizes "
            f"must multiply to {len(devices)}, e.g. seeds={len(devices)}; to use fewer devices, make fewer "
            "visible (e.g. CUDA_VISIBLE_DEVICES)"
        )
    return jax.make_mesh(tuple(sizes.values()), AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def mesh_spec(mesh: Mesh) -> str:
    """The spec that builds `mesh`, e.g. "seeds=2,data=2"."""
    return ",".join(f"{axis}={mesh.shape[axis]}" for axis in AXES)


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (member) axis split over "seeds", the rest replicated."""
    return NamedSharding(mesh, PartitionSpec("seeds"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def padded_size(num_members: int, mesh: Mesh) -> int:
    """num_members rounded up to a multiple of the "seeds" axis size."""
    size = mesh.shape["seeds"]
    return math.ceil(num_members / size) * size


def pad_members(values: Sequence, mesh: Mesh) -> list:
    """values [M] followed by copies of the last one, up to `padded_size(M)`."""
    if not values:
        raise MeshError("an ensemble needs at least one member")
    return list(values) + [values[-1]] * (padded_size(len(values), mesh) - len(values))


def constrain_batch(tree, mesh: Mesh):
    """Every leaf [B, ...] split over "data" along B (inside jit; under a vmap with
    spmd_axis_name="seeds" this becomes [M, B, ...] split over ("seeds", "data"))."""
    spec = NamedSharding(mesh, PartitionSpec("data"))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, spec), tree)


def put_replicated(tree, mesh: Mesh):
    """Host arrays (the same on every process) -> global arrays replicated on every device."""
    target = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, target, lambda index: x[index])

    return jax.tree.map(put, tree)


def data_shards(num_rows: int, mesh: Mesh) -> tuple[int, int]:
    """(D, rows per shard): the "data" axis size and ceil(num_rows / D)."""
    size = mesh.shape["data"]
    return size, math.ceil(num_rows / size)


def process_rows(num_rows: int, mesh: Mesh) -> np.ndarray:
    """The rows (int64, ascending; < num_rows) of a sharded split that this process's devices hold."""
    size, per_shard = data_shards(num_rows, mesh)
    local = {d.id for d in jax.local_devices()}
    shards = sorted({j for j in range(size) for d in mesh.devices[..., j].ravel() if d.id in local})
    rows = np.concatenate([np.arange(j * per_shard, (j + 1) * per_shard) for j in shards])
    return rows[rows < num_rows]


def put_sharded(tree, mesh: Mesh) -> tuple:
    """Host arrays [n, ...] (the same on every process) -> (the tree as global arrays
    [D * ceil(n / D), ...] split over "data" along axis 0 and replicated over "seeds", present:
    float32 [D * ceil(n / D)], 1 on a real row and 0 on the padding rows past n (copies of row 0)).
    Each device receives only its own rows, so each process puts only its part on its devices."""
    num_rows = jax.tree.leaves(tree)[0].shape[0]
    size, per_shard = data_shards(num_rows, mesh)
    target = NamedSharding(mesh, PartitionSpec("data"))

    def rows(index) -> np.ndarray:
        return np.arange(*index[0].indices(size * per_shard))

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback((size * per_shard,) + x.shape[1:], target,
                                            lambda index: x[np.where(rows(index) < num_rows, rows(index), 0)])

    present = jax.make_array_from_callback((size * per_shard,), target,
                                           lambda index: (rows(index) < num_rows).astype(np.float32))
    return jax.tree.map(put, tree), present


def shard_batches(key, per_shard: int, batch_size: int, size: int,
                  shuffle: str = "sort") -> tuple[jax.Array, jax.Array]:
    """One epoch's batches of a split sharded over `size` data shards of per_shard rows: each
    shard's own permutation of its rows cut into batches of batch_size // size. Indices int32
    [num_batches, size, batch_size // size] into each shard, and weights of the same shape (0 on
    the last batch's fillers, as lipctr.train.epoch_batches); `shuffle` as lipctr.shuffle."""
    num_batches = max(1, math.ceil(per_shard / (batch_size // size)))
    return jax.vmap(lambda b: shard_batch(key, per_shard, batch_size, size, b, shuffle))(jnp.arange(num_batches))


def shard_batch(key, per_shard: int, batch_size: int, size: int, batch, shuffle: str = "feistel") -> tuple:
    """Batch number `batch` (int []) of shard_batches(key, per_shard, batch_size, size, shuffle)
    alone: indices int32 [size, batch_size // size] and weights; O(batch_size) under an
    elementwise shuffle (lipctr.shuffle.ELEMENTWISE)."""
    local = batch_size // size
    positions = batch * local + jnp.arange(local)
    index = jax.vmap(lambda k: epoch_order(k, per_shard, positions % per_shard, shuffle))(jax.random.split(key, size))
    return index, jnp.broadcast_to((positions < per_shard).astype(jnp.float32), index.shape)


def local_rows(tree, mesh: Mesh):
    """Arrays [D * r, ...] split over "data" -> [D, r, ...], shard d's rows at [d] (no communication)."""
    size, spec = mesh.shape["data"], NamedSharding(mesh, PartitionSpec("data"))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x.reshape((size, -1) + x.shape[1:]), spec), tree)


def take_local(rows, index):
    """rows [D, r, ...] and index [D, b] -> a batch [D * b, ...]: shard d's rows at index[d]."""
    return jax.tree.map(lambda x: jax.vmap(lambda xs, i: xs[i])(x, index).reshape((-1,) + x.shape[2:]), rows)


def to_host(x) -> np.ndarray:
    """The whole value of a (possibly multi-process sharded) array as numpy, on every process."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kwargs) -> None:
    """`jax.distributed.initialize`; arguments left None come from the environment
    (JAX_COORDINATOR_ADDRESS, or a cluster JAX detects: SLURM, Open MPI, Cloud TPU, Kubernetes).
    Must run before anything touches a device."""
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)


def is_primary() -> bool:
    """True on the process that writes run outputs (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches this point (nothing to do with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def broadcast_text(text: str, max_bytes: int = 512) -> str:
    """Process 0's `text` on every process (e.g. a run directory named by its clock)."""
    if jax.process_count() == 1:
        return text
    data = text.encode("utf-8")
    if len(data) > max_bytes:
        raise ValueError(f"broadcast_text: {len(data)} bytes, more than max_bytes={max_bytes}")
    buffer = np.zeros(max_bytes + 1, np.int32)
    buffer[0] = len(data)
    buffer[1: len(data) + 1] = np.frombuffer(data, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return bytes(out[1: out[0] + 1].astype(np.uint8)).decode("utf-8")
