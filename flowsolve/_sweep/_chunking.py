"""A sweep's chunks: the compiled program of one chunk (each device integrates its own shard to the
end), and the chunk size that fits the memory budget."""

import functools
import os
import warnings
from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec

from ._grid import PointFn

AXIS = "points"


def point_sharding(devices) -> jax.sharding.NamedSharding:
    """A chunk's points split over `devices` (of every process)."""
    mesh = jax.sharding.Mesh(np.asarray(devices), (AXIS,))
    return jax.sharding.NamedSharding(mesh, PartitionSpec(AXIS))


def global_batch(local: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """One chunk's values of an axis as an array sharded over every device of every process (each
    process holds all the points, and places the shards of its own devices)."""
    local = np.asarray(local, dtype=jax.dtypes.canonicalize_dtype(local.dtype))
    return jax.make_array_from_callback(local.shape, sharding, lambda index: local[index])


@functools.lru_cache(maxsize=64)
def _programs(fn: PointFn, static_items: tuple[tuple[str, Any], ...], batched: bool,
              sharding: jax.sharding.NamedSharding, out_sharding: jax.sharding.Sharding | None):
    """The chunk's program per device and in lockstep, jitted once per `fn` and group (repeated sweeps
    reuse their compilation)."""
    static_values = dict(static_items)

    def one(p):
        return fn({**p, **static_values})

    body = one if batched else jax.vmap(one)
    lockstep = jax.jit(body, out_shardings=out_sharding)
    if sharding.mesh.size == 1:
        return lockstep, lockstep
    # Each device runs its shard's computation, loops included, to the end: no collective inside
    # (a vmapped solve over a sharded batch would all-reduce its loop condition at every step, so
    # every device would wait for the slowest point anywhere). `check_vma=False`: the points'
    # computations are independent by construction, and equinox's loops mix varying and
    # replicated carries.
    spec = PartitionSpec(AXIS)
    per_device = jax.jit(jax.shard_map(body, mesh=sharding.mesh, in_specs=spec, out_specs=spec, check_vma=False),
                         out_shardings=out_sharding)
    return per_device, lockstep


def chunk_program(fn: PointFn, group: dict[str, Any], batched: bool, sharding: jax.sharding.NamedSharding,
                  out_sharding: jax.sharding.Sharding | None, example: dict[str, jax.Array]):
    """The jitted program of one chunk of a group: per device (`jax.shard_map`), or, where `fn` cannot
    be traced per device, one program over all devices in lockstep (said by a warning)."""
    per_device, lockstep = _programs(fn, tuple(group.items()), batched, sharding, out_sharding)
    if per_device is lockstep:
        return lockstep
    try:
        jax.eval_shape(per_device, example)
    except Exception as e:  # e.g. lineax's linear solves (a fit's least squares) under shard_map
        warnings.warn(
            f"`fn` cannot run per device under jax.shard_map ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "each chunk runs as one program over all devices, whose loops step in lockstep.",
            RuntimeWarning, stacklevel=3,
        )
        return lockstep
    return per_device


def device_memory(devices) -> int:
    """Bytes of memory of the smallest of `devices`: what JAX reports (GPU, TPU), else the host's
    physical memory shared among the CPU devices."""
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
    if all(limits):
        return int(min(limits))
    host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(host // max(1, sum(d.platform == "cpu" for d in devices)))


def chunk_within(programs, points: dict[str, np.ndarray], chunk_size: int, sharding: jax.sharding.Sharding,
                 budget: int, n_devices: int) -> int:
    """The largest chunk, a multiple of the device count and at most `chunk_size`, whose program fits
    `budget` bytes per device by XLA's count (arguments + outputs + temporaries − aliased), for every
    group. Each group is compiled at `chunk_size` (jit's cache keeps it for the run); a smaller chunk
    is estimated from that count per point, which over-counts the fixed part: it fits."""
    n = len(next(iter(points.values())))
    idx = np.arange(chunk_size).clip(max=n - 1)
    inputs = {k: global_batch(v[idx], sharding) for k, v in points.items()}
    needed = 0
    for jitted in programs:
        stats = jitted.lower(inputs).compile().memory_analysis()
        if stats is None:  # this backend does not say: keep the chunk
            return chunk_size
        needed = max(needed, stats.argument_size_in_bytes + stats.output_size_in_bytes
                     + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    if needed <= budget:
        return chunk_size
    per_point = needed / (chunk_size // n_devices)
    fits = int(budget // per_point)
    if fits < 1:
        raise ValueError(
            f"One point needs about {per_point:.4g} bytes of working memory on a device (XLA's count for a "
            f"chunk of {chunk_size}), more than the budget of {budget} bytes (`memory_budget`)."
        )
    return fits * n_devices
