"""A sweep's store: a folder of finished chunks that a later run resumes from.

Every chunk file carries the identity of the sweep that wrote it (a hash of the manifest), its place
(group, chunk, point range) and a checksum of its values; a chunk that does not match all three is
never returned: it is recomputed, and the sweep says so once. The manifest and the chunks are
written atomically and durably (a temporary file, fsync, rename, fsync of the folder). One process
at a time holds the store (an `fcntl` lock, released by the kernel when the holder dies, even by
SIGKILL); a second one is refused with the holder's pid and host. Temporary files that a killed
writer left are removed by the next holder. A store that cannot be written is found out before
anything is computed.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import socket
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MANIFEST = "sweep.json"
LOCK = "sweep.lock"


class StoreWarning(UserWarning):
    """A chunk file of a store did not match (damaged, or written by another sweep) and is recomputed."""


def identity_hash(identity: Mapping[str, Any]) -> str:
    """The sweep's identity: the SHA-256 of its manifest's canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def checksum(values: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a chunk's outputs: each name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(values):
        v = np.ascontiguousarray(values[k])
        h.update(f"{k}|{v.dtype.str}|{v.shape}|".encode())
        h.update(v.tobytes())
    return h.hexdigest()


class Store:
    """The store of one sweep at `folder`; use as a context manager (it holds the lock).

    `writable=False` (a follower process of a multi-process sweep) reads and checks chunks only.
    """

    def __init__(self, folder: os.PathLike | str, identity: dict[str, Any], *, writable: bool = True):
        self.folder = pathlib.Path(folder)
        self.identity = identity
        self.sweep_id = identity_hash(identity)
        self.writable = writable
        self.read_only = False  # a store that cannot be written (found out in `open`)
        self._lock_fd: int | None = None
        self._opened = False
        self.replaced: list[str] = []  # chunk files that did not match, with why

    # -- the lock and the manifest ---------------------------------------------------------------

    def __enter__(self) -> "Store":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Take the store (idempotent): the lock, stale temporary files, the manifest's check."""
        if self.writable and not self._opened:
            self._opened = True
            try:
                self._open()
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _open(self) -> None:
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"The store {str(folder)!r} is a file, not a folder; give a folder (or a new path).")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"The store {str(folder)!r} cannot be created: {e.strerror or e}.") from None
        try:
            self._lock_fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            probe = folder / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            self.read_only = True  # readable perhaps; `require_writable` refuses before any computing
            self._check_manifest(write=False)
            return
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_text(folder / LOCK).strip() or "another process"
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ValueError(
                f"The store {str(folder)!r} is in use by {holder}; wait for that sweep to finish "
                "(or stop it) and run again, or use another store."
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        for stale in folder.glob("*.tmp*"):  # left by a killed writer: nobody else holds the store
            with contextlib.suppress(OSError):
                stale.unlink()
        self._check_manifest(write=True)

    def _check_manifest(self, write: bool) -> None:
        manifest = self.folder / MANIFEST
        text = json.dumps(self.identity, sort_keys=True)
        held = None
        if manifest.exists():
            try:
                held = json.loads(manifest.read_text())
                if not isinstance(held, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError, UnicodeDecodeError) as e:
                anew = "it is written anew" if write else "the store cannot be written, so it stays"
                warnings.warn(f"The store's manifest {str(manifest)!r} is damaged ({e}); {anew}. "
                              "Its chunks are checked one by one against this sweep.", StoreWarning, stacklevel=4)
                held = None
        if held is not None and json.dumps(held, sort_keys=True) != text:
            diff = []
            for k in sorted(set(self.identity) | set(held)):
                mine, theirs = self.identity.get(k), held.get(k)
                if isinstance(mine, dict) and isinstance(theirs, dict):  # say which entry (e.g. config.t1)
                    diff += [f"{k}.{e}" for e in sorted(set(mine) | set(theirs)) if mine.get(e) != theirs.get(e)]
                elif mine != theirs:
                    diff.append(k)
            raise ValueError(
                f"The store {str(self.folder)!r} holds a different sweep (differs in: {', '.join(diff)}); "
                "use another store, or delete it to start over."
            )
        if held is None and write:
            write_durably(manifest, text.encode())

    def require_writable(self, missing: int) -> None:
        """Refuse, before computing, a store that cannot be written but lacks `missing` chunks."""
        if self.read_only and missing:
            raise ValueError(
                f"The store {str(self.folder)!r} cannot be written, and {missing} of its chunks are missing or "
                "damaged: make it writable, or give another store."
            )

    # -- chunks ------------------------------------------------------------------------------------

    def load(self, tag: str, where: dict[str, int], names: Sequence[str]) -> dict[str, np.ndarray] | None:
        """A chunk's values if its file holds exactly this sweep's chunk at `where` (group, chunk,
        lo, hi) with an intact checksum; else None (missing: silently; otherwise said once)."""
        file = self.folder / tag
        if not file.exists():
            return None
        why = None
        try:
            import xarray as xr

            with xr.open_dataset(file, engine="h5netcdf") as ds:
                attrs = dict(ds.attrs)
                values = {k: ds[k].values for k in names}
            if attrs.get("sweep_id") != self.sweep_id:
                why = "written by another sweep"
            elif any(int(attrs.get(k, -1)) != v for k, v in where.items()):
                why = "holds another chunk's points"
            elif attrs.get("checksum") != checksum(values):
                why = "its values do not match their checksum"
        except Exception as e:  # truncated, empty, a folder, not netCDF, a missing variable, …
            why = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
        if why is None:
            return values
        self.replaced.append(f"{file.name}: {why}")
        if self.writable and not self.read_only:
            with contextlib.suppress(OSError):
                if file.is_dir():
                    import shutil

                    shutil.rmtree(file)
                else:
                    file.unlink()
        return None

    def save(self, tag: str, where: dict[str, int], values: dict[str, np.ndarray], dims: dict[str, tuple]) -> None:
        """Write a finished chunk with its identity, place and checksum, atomically and durably."""
        import xarray as xr

        ds = xr.Dataset({k: (("point", *dims[k]), v) for k, v in values.items()})
        ds.attrs.update({"sweep_id": self.sweep_id, "checksum": checksum(values), **where})
        file = self.folder / tag
        tmp = file.with_name(f"{file.name}.tmp{os.getpid()}")
        ds.to_netcdf(tmp, engine="h5netcdf")
        _fsync(tmp)
        os.replace(tmp, file)
        _fsync_folder(self.folder)

    def say_replaced(self) -> None:
        """Warn once about the chunk files that did not match and were recomputed."""
        if self.replaced:
            warnings.warn(
                f"The store {str(self.folder)!r} held {len(self.replaced)} chunk file(s) that do not belong to this "
                f"sweep or are damaged; they were recomputed: {'; '.join(self.replaced[:5])}"
                + (" …" if len(self.replaced) > 5 else ""), StoreWarning, stacklevel=3)


def write_durably(file: pathlib.Path, data: bytes) -> None:
    """Write `file` atomically (temporary file, fsync, rename) and durably (fsync of the folder)."""
    tmp = file.with_name(f"{file.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)
    _fsync_folder(file.parent)


def held_chunk_size(folder: pathlib.Path) -> int | None:
    """The chunk size recorded in a store's manifest, or None (no store yet, or an unreadable one)."""
    try:
        held = int(json.loads((pathlib.Path(folder) / MANIFEST).read_text()).get("chunk_size", 0))
    except (OSError, ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return None
    return held if held >= 1 else None


def _fsync(file: pathlib.Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: pathlib.Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be fsync'd
        _fsync(folder)


def _read_text(file: pathlib.Path) -> str:
    try:
        return file.read_text()
    except OSError:
        return ""
