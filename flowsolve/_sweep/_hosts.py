"""A sweep on several processes (multi-host, after `jax.distributed.initialize()`): process 0 alone
writes the store, and every process agrees with it on what is done, what is refused and when to stop."""

import itertools
import pathlib
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from ._store import held_chunk_size, Store


def find_done(holder: Store, tags, where, out_struct, done: np.ndarray, preloaded: dict, lead: bool,
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


def read_chunk(holder: Store, tag: str, where: dict[str, int], out_struct) -> dict[str, np.ndarray]:
    """A finished chunk from the store, read by a process other than 0 (which checked it)."""
    got = holder.load(tag, where, list(out_struct))
    if got is None:
        raise ValueError(
            f"The store's chunk {str(holder.folder / tag)!r} is finished for process 0 but missing or different "
            f"for process {jax.process_index()}: with several processes the store must be on a filesystem they all see."
        )
    return got


def stored_chunk_size(folder: pathlib.Path, multihost: bool) -> int | None:
    """The chunk size of the sweep a store holds (process 0 reads it), or None."""
    held = (held_chunk_size(folder) or 0) if jax.process_index() == 0 else 0
    if multihost:
        held = int(multihost_utils.broadcast_one_to_all(np.asarray(held)))
    return held if held >= 1 else None


def stop_together(failure: BaseException | None, chunk: int) -> None:
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


def open_everywhere(folder: pathlib.Path, identity: dict[str, Any], lead: bool, multihost: bool) -> Store:
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


def agree_on_chunk_size(chunk_size: int) -> int:
    """Every process cuts the sweep into the same chunks: the smallest any of them chose."""
    return int(np.min(multihost_utils.process_allgather(np.asarray(chunk_size))))
