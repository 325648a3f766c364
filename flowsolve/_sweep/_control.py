"""A running sweep's controls: Ctrl-C stops it between chunks, and a progress bar."""

import contextlib
import signal
import sys
import threading


class _StopRequest:
    requested: bool = False


class NoBar:
    def close(self) -> None:
        pass


@contextlib.contextmanager
def stop_after_chunk_on_interrupt():
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


def progress_bar(total: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="pt", smoothing=0.1)
