"""Shared test helpers: admissible random states and tolerance statements."""

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
