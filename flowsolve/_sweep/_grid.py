"""A sweep's grid: the axes checked, the static groups, the points of the batched axes, the outputs'
shapes, and the assembly of the computed chunks into one `xarray.Dataset`."""

import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

PointFn = Callable[[dict[str, Array]], dict[str, Array]]


class Grid(NamedTuple):
    """The product of a sweep's axes, split into static groups (one compiled program each) and the
    batched points of the other axes (C order)."""

    names: list[str]
    values: list[np.ndarray]
    static: tuple[str, ...]
    dynamic: list[str]
    points: dict[str, np.ndarray]  # the batched axes' values at each point of one group
    groups: list[dict[str, Any]]  # each group's static values, as plain Python values

    @property
    def size(self) -> int:
        """Points per group."""
        return len(next(iter(self.points.values())))


def make_grid(axes: Mapping[str, ArrayLike | Sequence[Any]], static: Sequence[str]) -> Grid:
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
    grids = np.meshgrid(*d_values, indexing="ij")
    points = {k: g.reshape(-1) for k, g in zip(dynamic, grids)}
    groups = [{k: s_values[i][j].item() for i, (k, j) in enumerate(zip(static, g))}
              for g in itertools.product(*[range(len(v)) for v in s_values])]
    return Grid(names, values, static, dynamic, points, groups)


def _check_axes(axes, static) -> tuple[list[str], list[np.ndarray]]:
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


def output_struct(fn: PointFn, grid: Grid, batched: bool) -> dict[str, jax.ShapeDtypeStruct]:
    """The shape and dtype of one point's outputs, found by tracing `fn` in every group (no
    computation); the same in every group."""
    out_struct = None
    for group in grid.groups:
        struct = _one_group_struct(fn, grid, group, batched)
        if out_struct is not None and struct != out_struct:
            raise ValueError(
                f"The outputs' shapes must not depend on the static axes; group {group} gives "
                f"{ {k: s.shape for k, s in struct.items()} }, another {({k: s.shape for k, s in out_struct.items()})}."
            )
        out_struct = struct
    assert out_struct is not None
    clash = sorted(set(out_struct) & (set(grid.names) | {"finite"}))
    if clash:
        raise ValueError(f"Output name(s) {clash} are also axis names (or `finite`, which the sweep adds); "
                         "rename the outputs (e.g. `fit_eta_h`).")
    return out_struct


def _one_group_struct(fn, grid: Grid, group, batched) -> dict[str, jax.ShapeDtypeStruct]:
    if batched:
        example = {k: jnp.asarray(v[:1]) for k, v in grid.points.items()}
    else:
        example = {k: jnp.asarray(v[0]) for k, v in grid.points.items()}
    try:
        out = jax.eval_shape(lambda p: fn({**p, **group}), example)
    except KeyError as e:
        raise ValueError(
            f"`fn` asks for the axis {e.args[0]!r}, which is not among the axes {grid.dynamic + list(group)}."
        ) from None
    if not isinstance(out, dict) or not out:
        raise ValueError("`fn` must return a non-empty dict name → array.")
    if batched:
        for k, s in out.items():
            if s.ndim < 1 or s.shape[0] != 1:
                raise ValueError(f"With `batched=True`, output {k!r} must have a leading point axis, got {s.shape}.")
        out = {k: jax.ShapeDtypeStruct(s.shape[1:], s.dtype) for k, s in out.items()}
    return out


def output_dims(out_struct, dims: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """Each output's own dimension names: as given in `dims`, else `NAME_dim_0, …`."""
    dims = dict(dims or {})
    out_dims = {k: tuple(dims.get(k, [f"{k}_dim_{i}" for i in range(len(s.shape))])) for k, s in out_struct.items()}
    for k, d in out_dims.items():
        if len(d) != len(out_struct[k].shape):
            raise ValueError(f"`dims[{k!r}]` names {len(d)} dimensions but the output has shape {out_struct[k].shape}.")
    return out_dims


def config_json(config: Mapping[str, Any] | None) -> str | None:
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


def identity(grid: Grid, name: str, out_struct, chunk_size: int, coords, config: str | None) -> dict[str, Any]:
    """What makes a sweep this sweep, as the store records it (its manifest)."""
    ident: dict[str, Any] = {
        "name": name, "axes": {k: np.asarray(v).tolist() for k, v in zip(grid.names, grid.values)},
        "outputs": {k: [list(s.shape), str(s.dtype)] for k, s in out_struct.items()}, "chunk_size": chunk_size,
    }
    if grid.static:
        ident["static"] = list(grid.static)
    if coords:
        ident["coords"] = {k: np.asarray(v).tolist() for k, v in coords.items()}
    if config is not None:
        ident["config"] = json.loads(config)
    return ident


def assemble(grid: Grid, group_outputs: list[dict[str, np.ndarray]], out_struct, out_dims, coords,
             name: str, config: str | None):
    """The dataset: dimensions the axes (coordinates their values) followed by each output's own,
    plus `finite` (every output of the point finite)."""
    import xarray as xr

    names = grid.names
    s_shape = tuple(len(grid.values[names.index(k)]) for k in grid.static)
    d_shape = tuple(len(grid.values[names.index(k)]) for k in grid.dynamic)
    order = [(list(grid.static) + grid.dynamic).index(k) for k in names]  # (static..., dynamic...) → axes order
    shape = tuple(len(v) for v in grid.values)
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
    all_coords = {k: v for k, v in zip(names, grid.values)}
    all_coords.update({k: np.asarray(v) for k, v in (coords or {}).items()})
    attrs: dict[str, Any] = {"name": name}
    if config is not None:
        attrs["config"] = config
        for k, v in json.loads(config).items():  # the plain values also one by one (netCDF attributes)
            if k not in attrs and isinstance(v, (int, float, str)) and not isinstance(v, bool):
                attrs[k] = v
    return xr.Dataset(data, coords=all_coords, attrs=attrs)


def bytes_per_point(out_struct) -> int:
    return sum(math.prod(s.shape) * s.dtype.itemsize for s in out_struct.values())
