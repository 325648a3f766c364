"""The outcome of a flowsolve computation: diffrax's results plus flowsolve's own."""

import diffrax


class RESULTS(diffrax.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """Why a solve stopped. `RESULTS.successful` when it did what was asked.

    Extends `diffrax.RESULTS` (max steps reached, singular, ...) with flowsolve's own checks.
    Compare with `==`, e.g. `sol.result == RESULTS.successful`, which works under `jax.vmap`.
    """

    nonfinite_state = (
        "The state became non-finite (inf or NaN). Check the parameters and initial state, "
        "or use float64 (`jax.config.update('jax_enable_x64', True)`)."
    )
