"""A persistent cache of *traced* programs, so that a fresh process skips tracing as well as compiling.

JAX's persistent compilation cache stores compiled executables, but a fresh process still traces the
Python program before it can look one up, and tracing an optimiser looped around a differentiated
diffrax solve takes seconds. Worse, programs with host callbacks (which `eqx.error_if` inserts, e.g. in
diffrax's checks) are never written to that cache at all. Here the program is traced once, exported
with `jax.export` (StableHLO) and stored next to JAX's cache; later processes deserialize it and call
it, and the compilation itself then comes from JAX's cache. `fn` must be a plain (not jitted)
function: a jitted one may hand back a trace made earlier with callbacks in it.

Used only when JAX's persistent cache is enabled (`flowsolve.enable_compilation_cache`) and only for
programs that report every failure through status values rather than by raising: they are exported with
`eqx.error_if` set to return NaN instead of calling back to the host.
"""

import hashlib
import os
import pathlib
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

_loaded: dict[str, Callable] = {}


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Turn on JAX's persistent compilation cache, which flowsolve's fits also use to skip tracing.

    With it, the first fit of a given shape and configuration in a *fresh* process takes about a
    second instead of about ten (`benchmarks/bench_fit.py`). Call it once, before the first
    computation.

    **Arguments:**

    - `path`: the cache directory; default `$FLOWSOLVE_CACHE`, else `~/.cache/flowsolve`.

    **Returns:** the directory used.

    !!! example

        ```python
        import flowsolve
        flowsolve.enable_compilation_cache()
        ```
    """
    if path is None:
        path = os.environ.get("FLOWSOLVE_CACHE") or pathlib.Path.home() / ".cache" / "flowsolve"
    path = pathlib.Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def cache_dir() -> pathlib.Path | None:
    """Where exported programs go: beside JAX's persistent cache, or `None` when that is off."""
    root = jax.config.jax_compilation_cache_dir
    return None if not root else pathlib.Path(root) / "flowsolve-exported"


def call_cached(name: str, fn: Callable, key: Any, args: Sequence[Any]) -> list[Any] | None:
    """`fn(*args)` (flat arrays in, a flat list of arrays out) through an exported program.

    `key` must determine the program given the arguments' shapes and dtypes (which are added to
    it). Returns `None` when the cache is off or the program cannot be exported; the caller then
    runs its ordinary jitted path.
    """
    directory = cache_dir()
    if directory is None:
        return None
    from jax import export  # lazily: it needs `flatbuffers`

    shapes = [(np.shape(a), str(np.asarray(a).dtype) if not hasattr(a, "dtype") else str(a.dtype)) for a in args]
    identity = repr((name, key, shapes, jax.__version__, jax.default_backend(), _package_version()))
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    if digest not in _loaded:
        file = directory / f"{name}-{digest}.bin"
        try:
            exported = export.deserialize(bytearray(file.read_bytes())) if file.exists() else None
        except Exception:  # a corrupt or foreign file: rebuild it
            exported = None
        if exported is None:
            try:
                exported = _export(fn, args)
            except Exception as e:  # e.g. a callback traced earlier in this process and reused
                warnings.warn(f"flowsolve could not store `{name}` for fresh processes ({e}); "
                              "it is compiled as usual.", stacklevel=3)
                return None
            directory.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(exported.serialize())
            os.replace(tmp, file)  # atomic: concurrent processes never read half a file
        _loaded[digest] = jax.jit(exported.call)
    return list(_loaded[digest](*args))


def _export(fn: Callable, args: Sequence[Any]):
    from jax import export
    import equinox._errors as eqx_errors  # `eqx.error_if`'s mode is read from here at trace time

    jitted = jax.jit(lambda *a: tuple(fn(*a)))
    previous, previous_jit = eqx_errors.EQX_ON_ERROR, eqx_errors.branched_error_if_impl_jit

    def error_if_nan(x, pred, index, msgs, *, on_error):
        # An explicit mode, so that error checks traced earlier in "raise" mode are not reused.
        return previous_jit(x, pred, index, msgs, on_error="nan" if on_error == "default" else on_error)

    # No host callbacks: exportable and cacheable.
    eqx_errors.EQX_ON_ERROR, eqx_errors.branched_error_if_impl_jit = "nan", error_if_nan
    try:
        text = jitted.lower(*args).as_text()
        # LAPACK kernels (QR, SVD) carry no cross-version guarantee; the cache key holds the JAX
        # version and the backend, so they are only ever reloaded where they were exported.
        targets = sorted(set(re.findall(r"custom_call @(\w+)", text)))
        checks = [export.DisabledSafetyCheck.custom_call(t) for t in targets]
        return export.export(jitted, disabled_checks=checks)(*args)
    finally:
        eqx_errors.EQX_ON_ERROR, eqx_errors.branched_error_if_impl_jit = previous, previous_jit


def _package_version() -> str:
    from . import __version__

    return __version__
