"""Sweeps: one compiled, batched computation over the product of axes, chunked, with each device
integrating its own points, resumable from a store."""

import contextlib
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jaxtyping import ArrayLike

from . import _control, _hosts
from ._chunking import chunk_program, chunk_within, device_memory, global_batch, point_sharding
from ._grid import (
    assemble,
    bytes_per_point,
    config_json,
    identity,
    make_grid,
    output_dims,
    output_struct,
    PointFn,
)


def sweep(
    fn: PointFn,
    axes: Mapping[str, ArrayLike | Sequence[Any]],
    *,
    static: Sequence[str] = (),
    batched: bool = False,
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, ArrayLike] | None = None,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    store: str | os.PathLike | None = None,
    name: str = "sweep",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    callback: Callable[[int, int], None] | None = None,
):
    """Evaluate `fn` at every point of the product of `axes`, as one jitted, vmapped computation per
    chunk, with each chunk's points split over every device JAX sees; return an `xarray.Dataset`.

    Each device integrates its own share of a chunk to the end (`jax.shard_map`): no device waits at
    a solver step for a slow point on another. Where `fn` cannot be traced that way (a fit inside
    `fn`: lineax's linear solves under `shard_map`), the chunk runs as one program over all devices,
    whose loops step in lockstep, and a `RuntimeWarning` says so.

    **Arguments:**

    - `fn`: maps one point, a dict axis name → scalar array, to a dict name → array of fixed shape
      (e.g. a `solve_theory` with `throw=False`, returning `sol.h` and `sol.result == RESULTS.successful`).
      It must be a pure JAX function of the point: randomness from a `seed` axis (`jax.random.key`),
      so that results do not depend on chunking or devices.
    - `axes`: axis name → 1-d values; the sweep runs over their Cartesian product (C order).

    **Other arguments:**

    - `static`: names of axes whose values change array shapes or code (width, depth, activation,
      architecture). Each combination of their values is its own compiled group, and `fn` receives
      them as plain Python values (int, float, str). Outputs must have the same shapes in every group.
    - `batched`: `fn` maps many points at once (a device's share of a chunk): each axis a 1-d array
      over those points, each output with a leading point axis. Use it to run one `ensemble_flow` per chunk instead of
      vmapping `gradient_flow`.
    - `dims`: output name → names of its own dimensions (e.g. `{"h": ["time"]}`); default `dim_0, …`.
    - `coords`: coordinates of those dimensions (e.g. `{"time": ts}`).
    - `chunk_size`: points per compiled call; default: the most that fit `memory_budget` (at most
      4 096). Rounded up to a multiple of the device count (of all processes).
    - `memory_budget`: bytes one chunk may take: its outputs (gathered on the host), and on each device
      the working memory of its compiled program by XLA's own count (arguments, outputs and
      temporaries: a flow's stage vectors, an ensemble's batched state). Default: 1 GiB of outputs,
      and 3/4 of each device's memory (a GPU's or TPU's as JAX reports it; CPU devices share the
      host's). With the default `chunk_size` the first group is compiled at the largest chunk the
      outputs allow and, if that program does not fit, the chunk is cut to what does (estimated
      per point from that count; the other groups are checked the same way). A budget that one
      point does not fit is an error. An explicit `chunk_size` is used as given; a store being resumed
      keeps the chunk size it was started with.
    - `store`: a directory; each finished chunk is written there at once (netCDF, atomically and
      fsync'd), and a sweep run again with the same store skips the chunks already there (an
      interrupted or killed sweep resumes; the result is identical). Each chunk file records the
      sweep's identity, the points it holds and a checksum of its values: a file that does not match
      (damaged, another sweep's, another chunk's) is recomputed, never returned, and a
      `StoreWarning` says so once. A store whose manifest names a different sweep (name, axes,
      outputs, chunk size, `coords`, `config`) is refused. One process at a time holds a store (a
      lock); another is refused naming the holder. A store that cannot be written but lacks chunks
      is refused before anything is computed. `docs/reliability.md` lists what survives what.
    - `name`: the sweep's name, part of the store's identity.
    - `config`: the fixed settings `fn` closes over (t1, rtol, the network's setting, …), as a
      JSON-serialisable mapping. The store cannot see inside `fn`: name here everything that changes
      its results, so that resuming with other settings is refused instead of mixing old chunks
      into the new sweep. Kept in the dataset's attributes (`json.loads(ds.attrs["config"])`; its
      numbers and strings also one by one).
    - `progress`: a progress bar over points (tqdm) with points/s and the time left.
    - `callback`: called as `callback(chunk_index, n_chunks)` after each chunk is computed and stored
      (chunks are numbered across all groups), on every process. If it raises, the sweep stops with that
      error (with several processes, every process stops: the others with a `RuntimeError` naming it).

    Ctrl-C (in the main thread, with Python's own handler in place): the running chunk finishes and
    is stored, then the sweep raises `KeyboardInterrupt` saying how many chunks are kept; a second
    Ctrl-C stops at once.

    **Returns:** an `xarray.Dataset` with dimensions the axes (coordinates their values) followed by
    each output's own dimensions, plus `finite`: whether every output of a point is finite. A point that
    fails is flagged there (or by the status `fn` returns) and the others go on.

    Several processes (multi-host, after `jax.distributed.initialize()`): every process makes the
    same call; each chunk is sharded over the devices of all of them, its outputs gathered onto every
    process, and every process returns the whole dataset. Process 0 alone writes the store, which must
    then be on a filesystem they all see; the chunks it holds decide, for every process, what is
    skipped on resuming (a process that cannot read them stops every process with an error).

    **Raises:** `ValueError` for an empty, non-1-d or non-finite axis, `fn` asking for an axis that is
    not given, a `static` name that is not an axis, outputs whose shapes differ between groups, a
    `memory_budget` too small for one point, a store holding a different sweep, or (several
    processes) a store whose finished chunks some process cannot see; `RuntimeError` (several processes)
    when writing a chunk or `callback` failed on another process.

    !!! example

        ```python
        def final_distance(p):
            theory = flowsolve.EffectiveTheory(p["eta_h"], 1.0, 1.0, 0.5)
            sol = flowsolve.solve_theory(theory, jnp.stack([p["h0"], 0.0, 0.0]), 100.0, throw=False)
            return {"h_end": sol.h[-1], "ok": sol.result == flowsolve.RESULTS.successful}

        ds = flowsolve.sweep(final_distance, {"eta_h": [0.5, 1, 2], "h0": np.logspace(-3, 1, 50)})
        ds.h_end.sel(eta_h=1.0)
        ```
    """
    config_text = config_json(config)
    grid = make_grid(axes, static)
    out_struct = output_struct(fn, grid, batched)
    if memory_budget is not None and not (isinstance(memory_budget, int) and memory_budget >= 1):
        raise ValueError(f"`memory_budget` must be a positive int (bytes), got {memory_budget!r}.")
    output_budget = 2**30 if memory_budget is None else memory_budget
    if bytes_per_point(out_struct) > output_budget:
        raise ValueError(
            f"One point's outputs take {bytes_per_point(out_struct)} bytes, more than `memory_budget` = {output_budget}."
        )
    n = grid.size
    devices = jax.devices()
    multihost = jax.process_count() > 1
    sharding = point_sharding(devices)
    # Several processes: each chunk's outputs are gathered onto every device (after the computation),
    # so that every process holds the whole chunk (and returns the whole dataset); process 0 alone
    # writes the store.
    gathered = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()) if multihost else None
    auto_chunk = chunk_size is None
    if auto_chunk and store is not None:  # resuming: the store's chunks decide (the same on any machine)
        chunk_size = _hosts.stored_chunk_size(pathlib.Path(store), multihost)
        auto_chunk = chunk_size is None
    if auto_chunk:
        chunk_size = max(1, min(4096, output_budget // max(bytes_per_point(out_struct), 1), n))
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    chunk_size = -(-chunk_size // len(devices)) * len(devices)

    def program(group, size):
        example = {k: jax.ShapeDtypeStruct((size,), v.dtype, sharding=sharding) for k, v in grid.points.items()}
        return chunk_program(fn, group, batched, sharding, gathered, example)

    if auto_chunk and (memory_budget is not None or chunk_size > len(devices)):
        device_budget = device_memory(jax.local_devices()) * 3 // 4 if memory_budget is None else memory_budget
        programs = [program(group, chunk_size) for group in grid.groups]
        chunk_size = chunk_within(programs, grid.points, chunk_size, sharding, device_budget, len(devices))
        if multihost:
            chunk_size = _hosts.agree_on_chunk_size(chunk_size)
    n_chunks = -(-n // chunk_size)
    out_dims = output_dims(out_struct, dims)

    lead = jax.process_index() == 0
    tags = [[f"chunk-{c:06d}.nc" if not grid.static else f"chunk-g{g:04d}-{c:06d}.nc" for c in range(n_chunks)]
            for g in range(len(grid.groups))]
    where = lambda g, c: {"group": g, "chunk": c, "lo": c * chunk_size, "hi": min((c + 1) * chunk_size, n)}  # noqa: E731
    folder = holder = None
    done = np.zeros((len(grid.groups), n_chunks), dtype=bool)
    preloaded: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    if store is not None:
        folder = pathlib.Path(store)
        holder = _hosts.open_everywhere(folder, identity(grid, name, out_struct, chunk_size, coords, config_text),
                                        lead, multihost)
        try:
            _hosts.find_done(holder, tags, where, out_struct, done, preloaded, lead, multihost)
        except BaseException:
            holder.close()
            raise

    total_chunks = n_chunks * len(grid.groups)
    stored = int(done.sum())
    group_outputs = []
    bar = _control.progress_bar(n * len(grid.groups), name) if progress and lead else None
    with (_control.stop_after_chunk_on_interrupt() as interrupt, contextlib.closing(bar or _control.NoBar()),
          holder if holder is not None else contextlib.nullcontext()):
        for g, group in enumerate(grid.groups):
            compiled = None
            chunks: list[dict[str, np.ndarray]] = []
            for c in range(n_chunks):
                lo, hi = c * chunk_size, min((c + 1) * chunk_size, n)
                if done[g, c]:
                    chunks.append(preloaded.pop((g, c)) if lead else _hosts.read_chunk(holder, tags[g][c], where(g, c),
                                                                                        out_struct))
                else:
                    compiled = compiled or program(group, chunk_size)
                    idx = np.arange(lo, lo + chunk_size).clip(max=n - 1)  # pad the last chunk with its last point
                    inputs = {k: global_batch(v[idx], sharding) for k, v in grid.points.items()}
                    out = jax.device_get(compiled(inputs))
                    out = {k: np.asarray(out[k])[: hi - lo] for k in out_struct}
                    failure: BaseException | None = None
                    try:  # the host's part: writing the chunk, the user's callback
                        if lead and holder is not None:
                            holder.save(tags[g][c], where(g, c), out, out_dims)
                        stored += folder is not None
                        chunks.append(out)
                        if callback is not None:
                            callback(g * n_chunks + c, total_chunks)
                    except Exception as e:
                        failure = e
                    if failure is None and interrupt.requested:  # Ctrl-C: stop here, this chunk kept
                        failure = KeyboardInterrupt(
                            f"Sweep {name!r} interrupted after chunk {g * n_chunks + c + 1} of {total_chunks}; "
                            + (f"{stored} of {total_chunks} chunks are stored in {str(folder)!r}: the same call "
                               "resumes from them." if folder is not None else "nothing is kept (no `store=`).")
                        )
                    if multihost:  # before the next chunk's collectives: stop together, or not at all
                        _hosts.stop_together(failure, g * n_chunks + c)
                    elif failure is not None:
                        raise failure
                if bar is not None:
                    bar.update(hi - lo)
            group_outputs.append({k: np.concatenate([ch[k] for ch in chunks]) for k in out_struct})
        if holder is not None and lead:
            holder.say_replaced()
    if multihost and folder is not None:  # return once the store is complete, on every process
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"flowsolve.sweep {folder}")
    return assemble(grid, group_outputs, out_struct, out_dims, coords, name, config_text)
