"""A persistent cache of *traced* programs, so that a fresh process skips tracing as well as compiling.

JAX's persistent compilation cache stores compiled executables, but a fresh process still traces the
Python program before it can look one up, and tracing an optimiser looped around a differentiated
diffrax solve takes seconds. Here the program is traced once, exported with `jax.export` (StableHLO)
and stored next to JAX's cache; later processes deserialize it and call it, and the compilation itself
then comes from JAX's cache.

Used only when JAX's persistent cache is enabled (`flowsolve.enable_compilation_cache`) and only for
programs without host callbacks (neither cache can hold one): programs that report every failure
through status values, with their solves saved by `_saving.solve_saving_at`. A program that still has
one is not exported; it is compiled as usual, with a warning.
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
    it) by its repr, which must name every value: a key holding an array or a function is not stored.
    Returns `None` when the cache is off or the program cannot be exported (or not keyed); the caller
    then runs its ordinary jitted path.
    """
    directory = cache_dir()
    if directory is None:
        return None
    arrays = any(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in jax.tree_util.tree_leaves(key))
    if arrays or "<" in repr(key):
        # A setting whose repr does not say what it computes — one holding an array (printed by its shape
        # alone) or a function (`<function norm>`, `<lambda>`): two different ones could share a key, so
        # such a program is never stored.
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
            except Exception as e:  # e.g. a program with a host callback
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

    jitted = jax.jit(lambda *a: tuple(fn(*a)))
    try:
        return export.export(jitted)(*args)
    except ValueError:
        # Custom calls without a compatibility guarantee, e.g. LAPACK kernels (LU, QR) of an implicit
        # solver: allowed, since the cache key holds the JAX version, the backend and this package's
        # source, so a program is only ever reloaded where it was exported.
        text = jitted.lower(*args).as_text()
        targets = sorted(set(re.findall(r"custom_call @(\w+)", text)))
        if any("callback" in t for t in targets):
            raise ValueError("the program calls back to the host") from None
        checks = [export.DisabledSafetyCheck.custom_call(t) for t in targets]
        return export.export(jitted, disabled_checks=checks)(*args)


_source_digest: str | None = None


def _source_tree_digest(root: pathlib.Path) -> str:
    """A digest of every Python file under `root`, subpackages included, each with its relative path."""
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def _package_version() -> str:
    """The version and a digest of this package's source: an exported program is reused only by the
    code that exported it (an edited source tree at the same version included)."""
    global _source_digest
    if _source_digest is None:
        _source_digest = _source_tree_digest(pathlib.Path(__file__).parent)
    from . import __version__

    return f"{__version__}+{_source_digest}"
