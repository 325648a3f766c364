"""Sweeps: one compiled, batched computation over the product of axes, chunked, sharded, resumable."""

import contextlib
import functools
import itertools
import json
import math
import os
import pathlib
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import Array, ArrayLike

from ._store import held_chunk_size, Store

PointFn = Callable[[dict[str, Array]], dict[str, Array]]


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
    chunk, with each chunk's points sharded over every device JAX sees; return an `xarray.Dataset`.

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
    - `batched`: `fn` maps a whole chunk at once: each axis a 1-d array over the chunk's points, each
      output with a leading point axis. Use it to run one `ensemble_flow` per chunk instead of
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
    import xarray as xr

    config_json = _config_json(config)
    static = tuple(static)
    for k in static:
        if not isinstance(axes, Mapping) or k not in axes:
            raise ValueError(f"`static` names {k!r}, which is not an axis.")
    names, values = _check_axes(axes, static)
    dynamic = [k for k in names if k not in static]
    if not dynamic:
        raise ValueError("At least one axis must be non-static (the batched one).")
    d_values = [values[names.index(k)] for k in dynamic]
    s_values = [values[names.index(k)] for k in static]
    d_shape = tuple(len(v) for v in d_values)
    n = math.prod(d_shape)
    grids = np.meshgrid(*d_values, indexing="ij")
    points = {k: g.reshape(-1) for k, g in zip(dynamic, grids)}
    groups = list(itertools.product(*[range(len(v)) for v in s_values]))
    group_values = [{k: s_values[i][j].item() for i, (k, j) in enumerate(zip(static, g))} for g in groups]

    out_struct = None
    for gv in group_values:
        struct = _output_struct(fn, points, gv, batched, dynamic)
        if out_struct is not None and struct != out_struct:
            raise ValueError(
                f"The outputs' shapes must not depend on the static axes; group {gv} gives "
                f"{ {k: s.shape for k, s in struct.items()} }, another {({k: s.shape for k, s in out_struct.items()})}."
            )
        out_struct = struct
    clash = sorted(set(out_struct) & (set(names) | {"finite"}))
    if clash:
        raise ValueError(f"Output name(s) {clash} are also axis names (or `finite`, which the sweep adds); "
                         "rename the outputs (e.g. `fit_eta_h`).")
    if memory_budget is not None and not (isinstance(memory_budget, int) and memory_budget >= 1):
        raise ValueError(f"`memory_budget` must be a positive int (bytes), got {memory_budget!r}.")
    output_budget = 2**30 if memory_budget is None else memory_budget
    bytes_per_point = sum(math.prod(s.shape) * s.dtype.itemsize for s in out_struct.values())
    if bytes_per_point > output_budget:
        raise ValueError(
            f"One point's outputs take {bytes_per_point} bytes, more than `memory_budget` = {output_budget}."
        )
    devices = jax.devices()
    multihost = jax.process_count() > 1
    mesh = jax.sharding.Mesh(np.asarray(devices), ("points",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("points"))
    # Several processes: each chunk's outputs are gathered onto every device, so that every process
    # holds the whole chunk (and returns the whole dataset); process 0 alone writes the store.
    gathered = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()) if multihost else None
    auto_chunk = chunk_size is None
    if auto_chunk and store is not None:  # resuming: the store's chunks decide (the same on any machine)
        chunk_size = _held_chunk_size(pathlib.Path(store), multihost)
        auto_chunk = chunk_size is None
    if auto_chunk:
        chunk_size = max(1, min(4096, output_budget // max(bytes_per_point, 1), n))
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    chunk_size = -(-chunk_size // len(devices)) * len(devices)
    if auto_chunk and (memory_budget is not None or chunk_size > len(devices)):
        device_budget = _device_memory(jax.local_devices()) * 3 // 4 if memory_budget is None else memory_budget
        compiled_groups = [_batched(fn, tuple(gv.items()), batched, gathered) for gv in group_values]
        chunk_size = _chunk_within(compiled_groups, points, chunk_size, sharding, device_budget, len(devices))
        if multihost:  # every process must cut the sweep into the same chunks
            chunk_size = int(np.min(multihost_utils.process_allgather(np.asarray(chunk_size))))
    n_chunks = -(-n // chunk_size)
    dims = dict(dims or {})
    out_dims = {
        k: tuple(dims.get(k, [f"{k}_dim_{i}" for i in range(len(s.shape))])) for k, s in out_struct.items()
    }
    for k, d in out_dims.items():
        if len(d) != len(out_struct[k].shape):
            raise ValueError(f"`dims[{k!r}]` names {len(d)} dimensions but the output has shape {out_struct[k].shape}.")

    lead = jax.process_index() == 0
    tags = [[f"chunk-{c:06d}.nc" if not static else f"chunk-g{g:04d}-{c:06d}.nc" for c in range(n_chunks)]
            for g in range(len(groups))]
    where = lambda g, c: {"group": g, "chunk": c, "lo": c * chunk_size, "hi": min((c + 1) * chunk_size, n)}  # noqa: E731
    folder = holder = None
    done = np.zeros((len(groups), n_chunks), dtype=bool)
    preloaded: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    if store is not None:
        folder = pathlib.Path(store)
        identity = {
            "name": name, "axes": {k: np.asarray(v).tolist() for k, v in zip(names, values)},
            "outputs": {k: [list(s.shape), str(s.dtype)] for k, s in out_struct.items()}, "chunk_size": chunk_size,
        }
        if static:
            identity["static"] = list(static)
        if coords:
            identity["coords"] = {k: np.asarray(v).tolist() for k, v in coords.items()}
        if config_json is not None:
            identity["config"] = json.loads(config_json)
        holder = _open_everywhere(folder, identity, lead, multihost)
        try:
            _find_done(holder, tags, where, out_struct, done, preloaded, lead, multihost)
        except BaseException:
            holder.close()
            raise

    total_chunks = n_chunks * len(groups)
    stored = int(done.sum())
    group_outputs = []
    bar = _progress_bar(n * len(groups), name) if progress and lead else None
    with (_stop_after_chunk_on_interrupt() as interrupt, contextlib.closing(bar or _NoBar()),
          holder if holder is not None else contextlib.nullcontext()):
        for g, gv in enumerate(group_values):
            compiled = _batched(fn, tuple(gv.items()), batched, gathered)
            chunks: list[dict[str, np.ndarray]] = []
            for c in range(n_chunks):
                lo, hi = c * chunk_size, min((c + 1) * chunk_size, n)
                if done[g, c]:
                    chunks.append(preloaded.pop((g, c)) if lead else _read_chunk(holder, tags[g][c], where(g, c),
                                                                                  out_struct))
                else:
                    idx = np.arange(lo, lo + chunk_size).clip(max=n - 1)  # pad the last chunk with its last point
                    inputs = {k: _global_batch(v[idx], sharding) for k, v in points.items()}
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
                        _stop_together(failure, g * n_chunks + c)
                    elif failure is not None:
                        raise failure
                if bar is not None:
                    bar.update(hi - lo)
            group_outputs.append({k: np.concatenate([ch[k] for ch in chunks]) for k in out_struct})
        if holder is not None and lead:
            holder.say_replaced()
    if multihost and folder is not None:  # return once the store is complete, on every process
        multihost_utils.sync_global_devices(f"flowsolve.sweep {folder}")

    s_shape = tuple(len(v) for v in s_values)
    order = [(list(static) + dynamic).index(k) for k in names]  # (static..., dynamic...) → axes order
    shape = tuple(len(v) for v in values)
    data = {}
    for k, s in out_struct.items():
        full = np.stack([go[k] for go in group_outputs]).reshape(s_shape + d_shape + tuple(s.shape))
        full = np.transpose(full, order + list(range(len(names), full.ndim)))
        data[k] = ((*names, *out_dims[k]), full)
    finite = np.ones(shape, dtype=bool)
    for k, (_, v) in data.items():
        if np.issubdtype(v.dtype, np.inexact):
            finite &= np.all(np.isfinite(v), axis=tuple(range(len(shape), v.ndim)))
    data["finite"] = (names, finite)
    all_coords = {k: v for k, v in zip(names, values)}
    all_coords.update({k: np.asarray(v) for k, v in (coords or {}).items()})
    attrs: dict[str, Any] = {"name": name}
    if config_json is not None:
        attrs["config"] = config_json
        for k, v in json.loads(config_json).items():  # the plain values also one by one (netCDF attributes)
            if k not in attrs and isinstance(v, (int, float, str)) and not isinstance(v, bool):
                attrs[k] = v
    return xr.Dataset(data, coords=all_coords, attrs=attrs)


def _config_json(config: Mapping[str, Any] | None) -> str | None:
    """`config` as canonical JSON (numpy and JAX scalars and arrays as numbers and lists)."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise ValueError(f"`config` must be a mapping of names to settings, got {type(config).__name__}.")

    def plain(v):
        if isinstance(v, (np.ndarray, np.generic, jax.Array)):
            return np.asarray(v).tolist()
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        raise TypeError(type(v).__name__)

    try:
        return json.dumps({str(k): v for k, v in config.items()}, sort_keys=True, default=plain, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`config` must hold only JSON values (numbers, strings, booleans, lists, dicts, arrays): {e}."
        ) from None


def _global_batch(local: np.ndarray, sharding: jax.sharding.Sharding) -> Array:
    """One chunk's values of an axis as an array sharded over every device of every process (each
    process holds all the points, and places the shards of its own devices)."""
    local = np.asarray(local, dtype=jax.dtypes.canonicalize_dtype(local.dtype))
    return jax.make_array_from_callback(local.shape, sharding, lambda index: local[index])


def _find_done(holder: Store, tags, where, out_struct, done: np.ndarray, preloaded: dict, lead: bool,
               multihost: bool) -> None:
    """Mark in `done` (in place) the chunks the store holds for this sweep, and keep their values in
    `preloaded`: process 0 checks each file (this sweep's, at its place, intact values) and refuses a
    store that cannot be written but lacks chunks; with several processes its verdict is every
    process's, and each must see those files."""
    error = None
    if lead:
        try:
            for g, c in itertools.product(range(done.shape[0]), range(done.shape[1])):
                got = holder.load(tags[g][c], where(g, c), list(out_struct))
                if got is not None:
                    preloaded[g, c] = got
                    done[g, c] = True
            holder.require_writable(int((~done).sum()))
        except (ValueError, OSError) as e:
            error = e
    if multihost:  # every process stops if process 0 refused the store
        refused = bool(multihost_utils.broadcast_one_to_all(np.asarray(error is not None)))
        if error is not None:
            raise error
        if refused:
            raise ValueError(f"Process 0 refused the store {str(holder.folder)!r} (its error says why).")
    elif error is not None:
        raise error
    if multihost:
        done[...] = np.asarray(multihost_utils.broadcast_one_to_all(done), dtype=bool)
        visible = all((holder.folder / tags[g][c]).exists() for g, c in zip(*np.nonzero(done)))
        blind = np.flatnonzero(~np.asarray(multihost_utils.process_allgather(np.asarray(visible)), dtype=bool))
        if blind.size:
            raise ValueError(
                f"The store {str(holder.folder)!r} holds finished chunks that process(es) {blind.tolist()} cannot "
                "see: with several processes the store must be on a filesystem they all see."
            )


def _read_chunk(holder: Store, tag: str, where: dict[str, int], out_struct) -> dict[str, np.ndarray]:
    """A finished chunk from the store, read by a process other than 0 (which checked it)."""
    got = holder.load(tag, where, list(out_struct))
    if got is None:
        raise ValueError(
            f"The store's chunk {str(holder.folder / tag)!r} is finished for process 0 but missing or different "
            f"for process {jax.process_index()}: with several processes the store must be on a filesystem they all see."
        )
    return got


def _output_struct(fn, points, static_values, batched, dynamic) -> dict[str, jax.ShapeDtypeStruct]:
    """The shape and dtype of one point's outputs, found by tracing `fn` (no computation)."""
    if batched:
        example = {k: jnp.asarray(v[:1]) for k, v in points.items()}
    else:
        example = {k: jnp.asarray(v[0]) for k, v in points.items()}
    try:
        out = jax.eval_shape(lambda p: fn({**p, **static_values}), example)
    except KeyError as e:
        raise ValueError(
            f"`fn` asks for the axis {e.args[0]!r}, which is not among the axes {dynamic + list(static_values)}."
        ) from None
    if not isinstance(out, dict) or not out:
        raise ValueError("`fn` must return a non-empty dict name → array.")
    if batched:
        for k, s in out.items():
            if s.ndim < 1 or s.shape[0] != 1:
                raise ValueError(f"With `batched=True`, output {k!r} must have a leading point axis, got {s.shape}.")
        out = {k: jax.ShapeDtypeStruct(s.shape[1:], s.dtype) for k, s in out.items()}
    return out


def _held_chunk_size(folder: pathlib.Path, multihost: bool) -> int | None:
    """The chunk size of the sweep a store holds (process 0 reads it), or None."""
    held = (held_chunk_size(folder) or 0) if jax.process_index() == 0 else 0
    if multihost:
        held = int(multihost_utils.broadcast_one_to_all(np.asarray(held)))
    return held if held >= 1 else None


def _device_memory(devices) -> int:
    """Bytes of memory of the smallest of `devices`: what JAX reports (GPU, TPU), else the host's
    physical memory shared among the CPU devices."""
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
    if all(limits):
        return int(min(limits))
    host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(host // max(1, sum(d.platform == "cpu" for d in devices)))


def _chunk_within(compiled_groups, points: dict[str, np.ndarray], chunk_size: int,
                  sharding: jax.sharding.Sharding, budget: int, n_devices: int) -> int:
    """The largest chunk, a multiple of the device count and at most `chunk_size`, whose program fits
    `budget` bytes per device by XLA's count (arguments + outputs + temporaries − aliased), for every
    group. Each group is compiled at `chunk_size` (jit's cache keeps it for the run); a smaller chunk
    is estimated from that count per point, which over-counts the fixed part: it fits."""
    n = len(next(iter(points.values())))
    idx = np.arange(chunk_size).clip(max=n - 1)
    inputs = {k: _global_batch(v[idx], sharding) for k, v in points.items()}
    needed = 0
    for jitted in compiled_groups:
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


@functools.lru_cache(maxsize=64)
def _batched(fn: PointFn, static_items: tuple[tuple[str, Any], ...], batched: bool,
             out_sharding: jax.sharding.Sharding | None):
    """One jitted (and, unless `fn` is batched, vmapped) wrapper per `fn` and group, so that repeated
    sweeps reuse its compilation."""
    static_values = dict(static_items)

    def one(p):
        return fn({**p, **static_values})

    return jax.jit(one if batched else jax.vmap(one), out_shardings=out_sharding)


def _check_axes(axes, static=()) -> tuple[list[str], list[np.ndarray]]:
    if not isinstance(axes, Mapping) or not axes:
        raise ValueError("`axes` must be a non-empty dict name → 1-d values.")
    names, values = [], []
    for k, v in axes.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise ValueError(f"Axis names must be identifiers, got {k!r}.")
        arr = np.asarray(v)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"Axis {k!r} must be a non-empty 1-d array of values, got shape {arr.shape}.")
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            raise ValueError(f"Axis {k!r} has non-finite values.")
        if len(set(arr.tolist())) != arr.size:
            raise ValueError(f"Axis {k!r} has repeated values.")
        if k in static and (arr.dtype.kind in "US"):
            arr = arr.astype(str)
        elif not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"Axis {k!r} must be numeric, got dtype {arr.dtype}.")
        names.append(k)
        values.append(arr)
    return names, values


def _stop_together(failure: BaseException | None, chunk: int) -> None:
    """Several processes: if writing a chunk or the callback failed on any of them, or one was
    interrupted, every process raises here (the failing ones their own error), rather than the
    others waiting forever in the next chunk's collectives for a process that has left."""
    failed = np.flatnonzero(np.asarray(multihost_utils.process_allgather(np.asarray(failure is not None))))
    if failure is not None:
        raise failure
    if failed.size:
        raise RuntimeError(
            f"Process(es) {failed.tolist()} failed after chunk {chunk} (writing it, in `callback`, or "
            "interrupted); every process stops here. The chunks stored so far are kept: the same call "
            "resumes from them."
        )


def _open_everywhere(folder: pathlib.Path, identity: dict[str, Any], lead: bool, multihost: bool) -> Store:
    """Open the store on process 0 (its only writer: the lock, the manifest's check); the others
    read only. Every process raises if process 0 refused it."""
    holder = Store(folder, identity, writable=lead)
    if not multihost:
        return holder.__enter__()
    error = None
    if lead:
        try:
            holder.__enter__()
        except (ValueError, OSError) as e:
            error = e
    refused = bool(multihost_utils.broadcast_one_to_all(np.asarray(error is not None)))
    if error is not None:
        raise error
    if refused:
        raise ValueError(f"Process 0 refused the store {str(folder)!r} (its error says why).")
    return holder


class _StopRequest:
    requested: bool = False


class _NoBar:
    def close(self) -> None:
        pass


@contextlib.contextmanager
def _stop_after_chunk_on_interrupt():
    """Ctrl-C (SIGINT) during a sweep: the first one lets the running chunk finish and be stored, then
    the sweep stops with `KeyboardInterrupt` between chunks (when nothing is running: stopping inside
    XLA can leave the process to crash on exit); a second one stops at once, as usual. Only in the
    main thread, and only where Python's own Ctrl-C handler is in place (not over a user's handler)."""
    request = _StopRequest()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield request
        return

    def handler(signum, frame):
        if request.requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        request.requested = True
        print("\nflowsolve.sweep: interrupted; stopping once the running chunk is done and stored "
              "(Ctrl-C again stops at once).", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _progress_bar(total: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="pt", smoothing=0.1)
