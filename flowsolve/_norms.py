"""Error norms for diffrax's step-size controller."""

import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, PyTree


def rms_norm_nan_is_inf(error: PyTree) -> Array:
    """`optimistix.rms_norm` (diffrax's default), except that a NaN norm counts as an infinite error.

    A trial step that overflows (an implicit stage whose Newton iteration diverged, or an explicit
    one that left the basin) can give a candidate state with `inf` in it; diffrax scales the error by
    `atol + rtol·max(|y0|, |y1|)`, so `inf / inf` makes the norm NaN, the step-size factor NaN, and
    every later step is rejected until `max_steps` (seen on the effective theory at stiffness ≈ 9e3
    from the initial step guess). As an infinite error the step is rejected and shrunk instead.
    """
    norm = optx.rms_norm(error)
    return jnp.where(jnp.isnan(norm), jnp.inf, norm)
