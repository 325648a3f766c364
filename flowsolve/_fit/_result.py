"""The result of a fit: the rates, their errors, how the fit went."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .._results import RESULTS
from .._theory import EffectiveTheory, solve_theory, TheorySolution
from .._validation import is_concrete


class FitResult(eqx.Module):
    """The effective learning rates fitted to a trajectory, returned by `fit_effective_rates`.

    Times are those of the data (gradient-flow time for `gradient_flow` output; fitting against
    epochs instead makes the rates absorb the learning rate, `THEORY.md` §4). Fields carry any
    leading batch axes of the data.

    **Fields:**

    - `eta_h`, `eta_y`: the fitted rates.
    - `eta_h_se`, `eta_y_se`: their standard errors, from the Jacobian at the optimum
      (`s²·(JᵀJ)⁻¹` with `s²` the residual variance; delta method from the log-rates).
    - `eta_mean`, `eta_mean_se`: the mean's rate `η̄` (`THEORY.md` §2) when `m` was given, else NaN.
    - `state0`: the initial `[h0, y0, w0]` of the fitted theory: the first sample, or fitted.
    - `m0`: the initial `m` of the fitted theory (NaN without `m`).
    - `dx2`, `dy2`: the distances the theory was fitted with.
    - `init`: the starting `[eta_h, eta_y]` of the optimiser run that gave the result (the integral
      equations' estimate, or equal rates at its geometric mean, or the user's `init`).
    - `residual`: sum of squares of the weighted, normalised residuals at the optimum.
    - `errors`: normalised error of each fitted curve, `RMSE / (max − min)` of the observed one:
      `"h"`, `"y"`, `"w"`, and with `m` also `"m"` and `"loss"`.
    - `converged`: the optimiser met its tolerance and the theory's solve at the optimum succeeded.
    - `result`: a `flowsolve.RESULTS` saying how the fit went: `successful`; `poor_fit` (converged,
      but a normalised error of h, y or w above `max_error`); `fit_not_converged`;
      `theory_solve_failed`; `invalid_input` (traced data that a direct call would refuse).
    - `num_steps`: optimiser steps (both starts); `ode_steps`: solver steps of the final theory solve.
    """

    eta_h: Float[Array, "*batch"]
    eta_y: Float[Array, "*batch"]
    eta_h_se: Float[Array, "*batch"]
    eta_y_se: Float[Array, "*batch"]
    eta_mean: Float[Array, "*batch"]
    eta_mean_se: Float[Array, "*batch"]
    state0: Float[Array, "*batch 3"]
    m0: Float[Array, "*batch"]
    dx2: Float[Array, "*batch"]
    dy2: Float[Array, "*batch"]
    init: Float[Array, "*batch 2"]
    residual: Float[Array, "*batch"]
    errors: dict[str, Float[Array, "*batch"]]
    converged: Bool[Array, "*batch"]
    result: RESULTS
    num_steps: Int[Array, "*batch"]
    ode_steps: Int[Array, "*batch"]

    @property
    def theory(self) -> EffectiveTheory:
        """The fitted `EffectiveTheory`."""
        return EffectiveTheory(self.eta_h, self.eta_y, self.dx2, self.dy2)

    def predict(self, ts: Float[ArrayLike, " times"], **kwargs) -> TheorySolution:
        """Solve the fitted theory from the fitted `state0` at times `ts` (`ts[0]` is the initial
        time); keyword arguments go to `solve_theory`. Unbatched results only; for a batch, index
        the fields or use `solve_theory_batch`."""
        if self.eta_h.ndim != 0:
            raise ValueError("`predict` needs an unbatched fit; index the batch first, e.g. `fit[i]`.")
        ts = jnp.asarray(ts)
        if not is_concrete(self.m0):  # under jit: no mean fitted ⇔ m0 NaN ⇔ m0 = 0 here
            known = jnp.isfinite(self.m0) & jnp.isfinite(self.eta_mean)
            m = {"m0": jnp.where(known, self.m0, 0.0), "eta_mean": jnp.where(known, self.eta_mean, 0.0)}
        else:
            m = {} if not np.isfinite(np.asarray(self.m0)) else {"m0": self.m0, "eta_mean": self.eta_mean}
        return solve_theory(self.theory, self.state0, ts[-1], t0=ts[0], ts=ts, **m, **kwargs)

    def __getitem__(self, index) -> "FitResult":
        """One member (or a slice) of a batched fit."""
        return jax.tree_util.tree_map(lambda x: x[index], self)


def result_treedef(error_names: list[str]):
    """The flattened structure of a `FitResult` with these `errors` (to rebuild one from a stored
    program's outputs)."""
    fields = {f: 0.0 for f in FitResult.__dataclass_fields__}
    fields["errors"] = {k: 0.0 for k in error_names}
    fields["result"] = RESULTS.successful
    return jax.tree_util.tree_structure(FitResult(**fields))
