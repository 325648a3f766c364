"""A sweep's store under faults: kill -9 at random moments, tampered and damaged files, two processes
on one store, a store deleted under a running sweep and reused, a store that cannot be written.
What must hold: nothing stored is ever returned for a different computation, nothing finished is
recomputed, and the resumed result is identical to an uninterrupted run."""

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import flowsolve as fs
from flowsolve._sweep import _store

AXES = {"a": np.linspace(0.1, 2.0, 24)}
CHUNK = 3  # 8 chunks


def point(p):
    return {"v": jnp.sin(p["a"] * jnp.arange(1.0, 17.0)), "s": jnp.sum(jnp.cos(p["a"] * jnp.arange(8.0)))}


def other_point(p):  # another computation with outputs of the same names and shapes
    return {"v": jnp.cos(p["a"] * jnp.arange(1.0, 17.0)), "s": jnp.sum(jnp.sin(p["a"] * jnp.arange(8.0)))}


def run(store, fn=point, axes=AXES, config=None, **kw):
    computed = []
    ds = fs.sweep(fn, axes, chunk_size=CHUNK, store=store, progress=False, config=config or {"fn": fn.__name__},
                  callback=lambda c, n: computed.append(c), **kw)
    return ds, computed


@pytest.fixture(scope="module")
def reference():
    ds = fs.sweep(point, AXES, chunk_size=CHUNK, progress=False, config={"fn": "point"})
    return ds


def same(ds, ref) -> bool:
    return all(np.array_equal(ds[k].values, ref[k].values) for k in ("v", "s", "finite"))


def test_a_resumed_store_skips_only_its_intact_chunks(tmp_path, reference):
    store = tmp_path / "s"
    ds, computed = run(store)
    assert computed == list(range(8)) and same(ds, reference)
    again, computed = run(store)
    assert computed == [] and same(again, reference)
    # Every chunk records the sweep, its place and a checksum of its values.
    import xarray as xr

    with xr.open_dataset(store / "chunk-000002.nc", engine="h5netcdf") as chunk:
        assert chunk.attrs["chunk"] == 2 and chunk.attrs["lo"] == 6 and chunk.attrs["hi"] == 9
        held = json.loads((store / "sweep.json").read_text())
        assert chunk.attrs["sweep_id"] == _store.identity_hash(held)
        assert chunk.attrs["checksum"] == _store.checksum({"v": chunk["v"].values, "s": chunk["s"].values})


def _tamper(store: pathlib.Path, how: str, foreign: pathlib.Path) -> list[int]:
    """Damage the store one way; return the chunks that must be recomputed."""
    c2, c5 = store / "chunk-000002.nc", store / "chunk-000005.nc"
    if how == "deleted":
        c2.unlink()
    elif how == "truncated":
        c2.write_bytes(c2.read_bytes()[:200])
    elif how == "empty":
        c2.write_bytes(b"")
    elif how == "folder":
        c2.unlink()
        c2.mkdir()
    elif how == "swapped":
        tmp = store / "x"
        c2.rename(tmp)
        c5.rename(c2)
        tmp.rename(c5)
        return [2, 5]
    elif how == "foreign":  # the same chunk of another computation with the same shapes
        shutil.copy(foreign / "chunk-000002.nc", c2)
    elif how == "nan":  # values overwritten, attributes kept
        import xarray as xr

        with xr.open_dataset(c2, engine="h5netcdf") as ds:
            ds = ds.load()
        ds["v"][:] = np.nan
        c2.unlink()
        ds.to_netcdf(c2, engine="h5netcdf")
    elif how == "bitflip":
        raw = bytearray(c2.read_bytes())
        # the last bytes of the file hold the data of the last variable written
        raw[-9] ^= 0x10
        c2.write_bytes(bytes(raw))
    return [2]


@pytest.mark.parametrize("how", ["deleted", "truncated", "empty", "folder", "swapped", "foreign", "nan", "bitflip"])
def test_a_damaged_or_foreign_chunk_is_recomputed_never_returned(tmp_path, reference, how):
    store, foreign = tmp_path / "s", tmp_path / "foreign"
    run(store)
    run(foreign, fn=other_point)  # another sweep, outputs of the same names and shapes
    redo = _tamper(store, how, foreign)
    if how == "deleted":
        ds, computed = run(store)
    else:
        with pytest.warns(_store.StoreWarning, match="chunk-000002.nc"):
            ds, computed = run(store)
    assert computed == redo and same(ds, reference)
    again, computed = run(store)  # repaired: nothing left to do
    assert computed == [] and same(again, reference)


def test_a_damaged_manifest_is_written_anew_and_the_chunks_checked(tmp_path, reference):
    store = tmp_path / "s"
    run(store)
    for garbage in (b"", b"{\"name\": \"sw", b"\x00\xff garbage", b"[1, 2]"):
        (store / "sweep.json").write_bytes(garbage)
        with pytest.warns(_store.StoreWarning, match="manifest"):
            ds, computed = run(store)
        assert computed == [] and same(ds, reference)
        json.loads((store / "sweep.json").read_text())


def test_without_its_manifest_a_store_returns_nothing_of_another_sweep(tmp_path):
    store = tmp_path / "s"
    run(store)
    (store / "sweep.json").unlink()
    axes = {"a": AXES["a"] + 0.5}  # other axes: the old chunks are not this sweep's
    with pytest.warns(_store.StoreWarning, match="written by another sweep"):
        ds, computed = run(store, axes=axes)
    assert computed == list(range(8))
    expected = fs.sweep(point, axes, chunk_size=CHUNK, progress=False)
    assert np.array_equal(ds["v"].values, expected["v"].values)


def test_stale_temporary_files_are_removed_and_bad_paths_refused(tmp_path):
    store = tmp_path / "s"
    run(store)
    (store / "chunk-000003.nc.tmp99999").write_bytes(b"half a chunk")
    (store / "sweep.json.tmp99999").write_bytes(b"{")
    run(store)
    assert not list(store.glob("*.tmp*"))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        run(tmp_path / "file")


def test_a_store_that_cannot_be_written_is_refused_before_computing(tmp_path, reference, monkeypatch):
    store = tmp_path / "s"
    run(store)
    (store / "chunk-000004.nc").unlink()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # as on a read-only folder (root ignores chmod)
        if str(path).endswith(_store.LOCK) and flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(_store.os, "open", read_only)
    calls = []
    with pytest.raises(ValueError, match="cannot be written, and 1 of its chunks are missing"):
        fs.sweep(lambda p: (calls.append(1), point(p))[1], AXES, chunk_size=CHUNK, store=store, progress=False,
                 config={"fn": "point"})
    assert not (store / "chunk-000004.nc").exists()
    monkeypatch.undo()
    run(store)  # writable again: the missing chunk is computed
    monkeypatch.setattr(_store.os, "open", read_only)
    ds, computed = run(store)  # complete: read-only is enough to read it
    assert computed == [] and same(ds, reference)


# ---------------------------------------------------------------------------------------------
# In subprocesses: kill -9, two processes, a store deleted under a running sweep.

_CHILD = textwrap.dedent("""
    import sys, time
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np
    import flowsolve as fs
    from flowsolve._sweep import _store

    store, log, which = sys.argv[1], sys.argv[2], sys.argv[3]
    slow_write = _store._fsync
    def slowly(file):  # widen the window of a chunk's write, so that random kills land in it too
        time.sleep(0.08)
        slow_write(file)
    _store._fsync = slowly

    def point(p):
        return {"v": jnp.sin(p["a"] * jnp.arange(1.0, 17.0)), "s": jnp.sum(jnp.cos(p["a"] * jnp.arange(8.0)))}
    def other_point(p):
        return {"v": jnp.cos(p["a"] * jnp.arange(1.0, 17.0)), "s": jnp.sum(jnp.sin(p["a"] * jnp.arange(8.0)))}
    def computed(c, n):
        with open(log, "a") as f:
            f.write(f"{c}\\n")
        time.sleep(0.08)  # and the computation's
    fn = point if which == "point" else other_point
    print("START", flush=True)
    fs.sweep(fn, {"a": np.linspace(0.1, 2.0, 24)}, chunk_size=3, store=store, progress=False,
             config={"fn": fn.__name__}, callback=computed)
    print("DONE", flush=True)
""")


def _child(tmp_path, store, log, which="point"):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    return subprocess.Popen([sys.executable, str(script), str(store), str(log), which], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(proc, predicate, timeout=120.0):
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None or time.monotonic() - start > timeout:
            return False
        time.sleep(0.01)
    return True


def _lines(log: pathlib.Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


@pytest.mark.slow  # up to five child processes, each importing JAX and compiling its sweep: ≈ 16 s
def test_kill_9_at_random_moments_then_resume_gives_the_same_result(tmp_path, reference):
    """Killed by SIGKILL during the computation and during chunk writes, several times over; each
    restart recomputes only chunks that were not finished, and the end result is bit-identical."""
    store, rng = tmp_path / "s", random.Random(7)
    kills = 0
    for attempt in range(5):
        log = tmp_path / f"log{attempt}"
        before = {p.name for p in store.glob("chunk-*.nc")}
        proc = _child(tmp_path, store, log)
        target = rng.randint(1, 3)  # let a few more chunks finish, then kill at a random moment
        _wait_for(proc, lambda: len(_lines(log)) >= target)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        redone = [f"chunk-{c:06d}.nc" for c in _lines(log)]
        assert not set(redone) & before, (redone, before)  # a finished chunk is never recomputed
        if len(list(store.glob("chunk-*.nc"))) == 8:
            break
    assert kills >= 3
    ds, computed = run(store)
    assert same(ds, reference)
    assert not list(store.glob("*.tmp*"))


def test_two_processes_on_one_store_the_second_is_refused(tmp_path, reference):
    store, log = tmp_path / "s", tmp_path / "log"
    proc = _child(tmp_path, store, log)
    try:
        assert _wait_for(proc, lambda: len(_lines(log)) >= 1)
        with pytest.raises(ValueError, match=rf"is in use by pid {proc.pid} on host"):
            run(store)
    finally:
        out, err = proc.communicate(timeout=120)
    assert "DONE" in out, err[-2000:]
    ds, computed = run(store)  # the first one finished alone: each chunk computed once
    assert computed == [] and _lines(log) == list(range(8)) and same(ds, reference)


def test_a_store_deleted_under_a_running_sweep_and_reused_returns_only_its_own_data(tmp_path):
    """The old run keeps writing its chunks into the path after it was deleted and a different sweep
    started there: the new sweep returns its own values only, and a later resume of it too."""
    store, log = tmp_path / "s", tmp_path / "log"
    proc = _child(tmp_path, store, log, which="other")
    try:
        assert _wait_for(proc, lambda: len(_lines(log)) >= 2)
        shutil.rmtree(store)
        store.mkdir()
        ds, computed = run(store)  # a new sweep on the same path while the old one writes on
    finally:
        proc.kill()
        proc.wait(timeout=60)
    expected = fs.sweep(point, AXES, chunk_size=CHUNK, progress=False)
    assert np.array_equal(ds["v"].values, expected["v"].values)
    with warnings.catch_warnings():  # the old run's chunks, if it wrote some after: recomputed
        warnings.simplefilter("ignore", _store.StoreWarning)
        again, computed = run(store)
    assert np.array_equal(again["v"].values, expected["v"].values)
