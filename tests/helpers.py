"""Shared test helpers: admissible random states, a tree comparison, a counter of XLA compilations."""

import numpy as np


def admissible_state(rng: np.random.Generator, dy2: float, *, h0=None, anti=False):
    """A random admissible [h, y, w]: output difference at a random angle to dy*."""
    h0 = float(rng.uniform(0.05, 3.0)) if h0 is None else h0
    norm = float(rng.uniform(0.0, 1.5))
    angle = float(rng.uniform(0.0, np.pi))
    if anti:
        angle = float(rng.uniform(0.75 * np.pi, np.pi))
    par, perp = norm * np.cos(angle), norm * np.sin(angle)  # dŷ in the (dy*, ⊥) plane
    y0 = par**2 + perp**2
    w0 = y0 - np.sqrt(dy2) * par
    return np.array([h0, y0, w0])


class CompileCounter:
    """Counts XLA backend compilations while active (`with CompileCounter() as c: ...; c.count`)."""

    _active: list = []
    _registered = False

    def __enter__(self):
        import jax.monitoring

        if not CompileCounter._registered:
            def listen(event, duration, **kwargs):
                if event == "/jax/core/compile/backend_compile_duration":
                    for counter in CompileCounter._active:
                        counter.count += 1

            jax.monitoring.register_event_duration_secs_listener(listen)
            CompileCounter._registered = True
        self.count = 0
        CompileCounter._active.append(self)
        return self

    def __exit__(self, *exc):
        CompileCounter._active.remove(self)


def assert_tree_allclose(actual, expected, *, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Every leaf of `actual` within `atol + rtol·|expected|` of the same leaf of `expected` (the two of
    one structure: e.g. two `observed` dicts); a failure names the leaf's path."""
    import jax

    leaves, structure = jax.tree_util.tree_flatten_with_path(actual)
    for (path, a), e in zip(leaves, structure.flatten_up_to(expected)):
        a, e, where = np.asarray(a), np.asarray(e), jax.tree_util.keystr(path)
        if np.issubdtype(a.dtype, np.inexact):
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=where)
        else:  # flags, counts, status codes: equal
            np.testing.assert_array_equal(a, e, err_msg=where)
