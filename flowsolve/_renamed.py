"""Old spellings of public names: each fails with a message naming the new one (docs/api.md, Names)."""

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

RENAMED_ATTRIBUTES = {
    "two_point_observer": "flowsolve.TwoPointObserver(layer)",
    "rates_observer": "flowsolve.RatesObserver(layer)",
}
"""Former public names of `flowsolve` → what to write instead."""


def renamed_attribute(name: str) -> AttributeError:
    return AttributeError(f"`flowsolve.{name}` is now spelled `{RENAMED_ATTRIBUTES[name]}` (docs/api.md, Names).")


def renamed_keywords(**renames: str) -> Callable[[F], F]:
    """Refuse the former keyword arguments `renames` (old → new spelling) of the decorated function
    with a `TypeError` naming the new spelling, instead of Python's bare "unexpected keyword"."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    raise TypeError(f"`{fn.__name__}({old}=...)` is now spelled `{new}` (docs/api.md, Names).")
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
