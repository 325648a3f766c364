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
    invalid_input = (
        "An input was out of range or non-finite (a rate, distance or time, m0 or eta_mean, or times "
        "`ts` that are not increasing within [t0, t1]); nothing was computed for it."
    )
    inadmissible_state = (
        "The initial state is not admissible: it needs finite h0 > 0, y0 >= 0 and (y0 - w0)^2 <= dy2*y0 "
        "(Cauchy-Schwarz), with finite squares; no network has it, so nothing was computed for it."
    )
    fit_not_converged = (
        "The fit's optimiser did not meet its tolerance within `max_optimizer_steps` (or stopped on a "
        "non-finite step): the rates are its last iterate, not an optimum. Try a larger `max_optimizer_steps` "
        "or another `init`."
    )
    theory_solve_failed = (
        "The theory's solve at the fitted rates failed (its step limit or a non-finite state): try a larger "
        "`max_steps`, or `solver=diffrax.Kvaerno5()` for a stiff trajectory."
    )
    poor_fit = (
        "The fit converged, but the theory does not describe the data: a normalised error (RMSE / range) of "
        "h, y or w is above `max_error`. The rates are the best the theory can do; do not read them as the "
        "data's."
    )


_NAMES = (
    # diffrax's (and lineax's / optimistix's, through it)
    "successful", "max_steps_reached", "singular", "breakdown", "stagnation", "conlim", "nonfinite_input",
    "nonlinear_max_steps_reached", "nonlinear_divergence", "nonfinite", "dt_min_reached", "event_occurred",
    "max_steps_rejected", "internal_error",
    # flowsolve's
    "nonfinite_state", "invalid_input", "inadmissible_state", "fit_not_converged", "theory_solve_failed", "poor_fit",
)


def result_name(result) -> "str | np.ndarray":
    """The name of a `RESULTS` member (`"successful"`, `"poor_fit"`, …), or an array of names for a
    batch of them (e.g. a vmapped solve's or a batched fit's `result`). `RESULTS` items print their
    message, which is empty for success; this is the readable label for tables and files.

    !!! example

        ```python
        fit = flowsolve.fit_effective_rates(ts, h, y, w, dx2, dy2)
        flowsolve.result_name(fit.result)    # 'successful', or e.g. array(['successful', 'poor_fit'])
        ```
    """
    import numpy as np

    item = type(RESULTS.successful)
    if not isinstance(result, item):
        raise ValueError(f"`result` must be a flowsolve.RESULTS item, got {type(result).__name__}.")
    names = [n for n in _NAMES if isinstance(getattr(RESULTS, n, None), item)]
    out = np.full(np.shape(result == RESULTS.successful), "unknown", dtype=object)
    for n in names:
        out = np.where(np.asarray(result == getattr(RESULTS, n)), n, out)
    return str(out[()]) if out.ndim == 0 else out.astype(str)


def raise_on_failure(result: RESULTS, what: str) -> None:
    """Raise `eqx.EquinoxRuntimeError` with the result's message when a concrete `result` is not success.

    The host-side twin of `result.error_if`: a program checked this way carries no host callback, so
    JAX's persistent cache can store it.
    """
    import equinox as eqx
    import jax
    import numpy as np

    failed = ~np.asarray(result == RESULTS.successful)
    if failed.any():
        first = np.unravel_index(int(np.flatnonzero(failed)[0]), failed.shape) if failed.ndim else ()
        item = jax.tree_util.tree_map(lambda v: v[first], result)
        where = f" (member {first[0] if len(first) == 1 else first})" if failed.ndim else ""
        raise eqx.EquinoxRuntimeError(f"{what} failed{where}: {RESULTS[item]}")
