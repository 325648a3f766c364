"""Altered versions of the theory's equations, for falsification checks.

A theory that fits everything explains nothing: fitted to the same network trajectories, these
alternatives (a factor 2 on one term, a flipped sign, a dropped term) should fit measurably worse
than the true system (`THEORY.md` §2). Each is a `vector_field` for `fit_effective_rates`:
`f(state, eta_h, eta_y, dx2, dy2) -> d/dt [h, y, w]`.

!!! example

    ```python
    from flowsolve.alternatives import ALTERNATIVES
    fits = {name: flowsolve.fit_effective_rates(ts, h, y, w, dx2, dy2, vector_field=field)
            for name, field in ALTERNATIVES.items()}
    ```
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._theory import vector_field_terms


TERMS = ("dh", "dy_decoder", "dy_encoder", "dw_decoder", "dw_encoder")
"""The five terms of the theory's vector field (`THEORY.md` §2; `flowsolve._theory.vector_field_terms`), in
the order of `ScaledTerms.factors`: `−η_h·dx2·w`, `−w·η_y·h`, `−w·η_h·dx2·y/h`, `−½·η_y·(3w − y + dy2)·h`,
`−½·η_h·dx2·(y + w)·w/h`."""


class ScaledTerms(eqx.Module):
    """The theory's vector field with each term multiplied by a factor (1 = the true system).

    The factors are an array, not code, so every alternative reuses one compiled fit.
    """

    factors: Float[Array, "5"]

    def __init__(self, **factors: float):
        unknown = set(factors) - set(TERMS)
        if unknown:
            raise ValueError(f"Unknown term(s) {sorted(unknown)}; the terms are {TERMS}.")
        self.factors = jnp.asarray([float(factors.get(name, 1.0)) for name in TERMS])

    def __call__(self, state, eta_h, eta_y, dx2, dy2) -> Array:
        f = self.factors.astype(state.dtype)
        dh, dy_decoder, dy_encoder, dw_decoder, dw_encoder = vector_field_terms(state, eta_h, eta_y, dx2, dy2)
        return jnp.stack([
            f[0] * dh,
            f[1] * dy_decoder + f[2] * dy_encoder,
            f[3] * dw_decoder + f[4] * dw_encoder,
        ])


true_system = ScaledTerms()
"""The theory itself in `(h, y, w)` (`THEORY.md` §2), as the reference for the alternatives."""

ALTERNATIVES: dict[str, ScaledTerms] = {
    "true system": true_system,
    "2× dy equation": ScaledTerms(dy_decoder=2.0, dy_encoder=2.0),
    "2× dh equation": ScaledTerms(dh=2.0),
    "2× encoder term of dy": ScaledTerms(dy_encoder=2.0),
    "2× decoder term of dw": ScaledTerms(dw_decoder=2.0),
    "flipped encoder term of dy": ScaledTerms(dy_encoder=-1.0),
    "flipped encoder term of dw": ScaledTerms(dw_encoder=-1.0),
    "dropped encoder term of dy": ScaledTerms(dy_encoder=0.0),
    "dropped encoder term of dw": ScaledTerms(dw_encoder=0.0),
}
"""Name → vector field. `"true system"` first; every other entry alters one term."""

PAPER_ALTERNATIVES: tuple[str, ...] = ("2× dy equation", "2× dh equation", "flipped encoder term of dw",
                                       "dropped encoder term of dy")
"""The four alterations van Rossem & Saxe fit in their paper (their `2_points_alternative` notebook);
the other entries of `ALTERNATIVES` are this project's own."""
