"""Symbolic derivations of the reduced effective theory (sympy).

Everything here returns sympy objects, so that users can read, print and manipulate the
expressions; `to_jax` turns any of them into a jittable JAX function. The numeric code in
`flowsolve` is checked against these results by the test-suite.

The starting point is the *linearised two-point model* of van Rossem & Saxe (ICML 2024),
section 2 of `THEORY.md`: an input difference `dx`, a hidden difference `dh = D_h·dx`, an output
difference `dŷ = D_y·dh`, and the loss `L = ½·m + ⅛·‖dŷ − dy*‖²`, each parameter under gradient
flow with its own time constant. Under the rank-one condition (which the flow preserves) the
hidden difference keeps one direction `e`, so `dh = a·e` with a signed scalar `a`, and the decoder
is `D_y = u·eᵀ`; `u` stays in the plane spanned by `dy*` and `u(0)`, so two components
`u = (u_par, u_perp)` suffice. That model is built here with concrete scalar parameters and
differentiated by sympy; nothing of the reduced system is typed in by hand.

!!! example

    ```python
    from flowsolve import symbolic

    system = symbolic.derive_reduced_system()
    print(system["h"])        # -dx2*eta_h*w
    Q = symbolic.derive_conserved_quantity()
    print(Q)                  # h - dx2*eta_h*y/(eta_y*h)
    ```

**References:** L. van Rossem and A. M. Saxe, "When Representations Align: Universality in
Representation Learning Dynamics", ICML 2024, arXiv:2402.09142.
"""

from collections.abc import Callable, Sequence
from functools import cache
from typing import NamedTuple

import sympy as sp

__all__ = [
    "FixedPoint",
    "Stability",
    "derive_conserved_quantity",
    "derive_fixed_point",
    "derive_reduced_system",
    "derive_regular_system",
    "derive_stability",
    "symbols",
    "to_jax",
]


class _Symbols(NamedTuple):
    h: sp.Symbol
    y: sp.Symbol
    w: sp.Symbol
    eta_h: sp.Symbol
    eta_y: sp.Symbol
    dx2: sp.Symbol
    dy2: sp.Symbol
    a: sp.Symbol
    u_par: sp.Symbol
    u_perp: sp.Symbol


@cache
def symbols() -> _Symbols:
    """The sympy symbols every expression of this module is written in.

    `h, y, w` (the reduced state), `eta_h, eta_y, dx2, dy2` (the theory's constants) and
    `a, u_par, u_perp` (the regular coordinates of `THEORY.md` §3). All are real; the
    constants and `h` are positive.
    """
    positive = dict(positive=True)
    return _Symbols(
        h=sp.Symbol("h", **positive),
        y=sp.Symbol("y", nonnegative=True),
        w=sp.Symbol("w", real=True),
        eta_h=sp.Symbol("eta_h", **positive),
        eta_y=sp.Symbol("eta_y", **positive),
        dx2=sp.Symbol("dx2", **positive),
        dy2=sp.Symbol("dy2", **positive),
        a=sp.Symbol("a", real=True),
        u_par=sp.Symbol("u_par", real=True),
        u_perp=sp.Symbol("u_perp", real=True),
    )


class _LinearisedModel(NamedTuple):
    """The linearised two-point model with scalar parameters, and its gradient flow."""

    params: tuple[sp.Symbol, ...]
    velocity: dict[sp.Symbol, sp.Expr]  # dθ/dt for every parameter θ
    loss: sp.Expr
    dx: sp.Symbol
    s: sp.Symbol  # ‖dy*‖
    d_h: sp.Symbol
    u_par: sp.Symbol
    u_perp: sp.Symbol


@cache
def _linearised_model() -> _LinearisedModel:
    S = symbols()
    dx, s = sp.symbols("dx s", positive=True)  # input distance, target distance
    d_h, x_bar = sp.symbols("D_h xbar", real=True)  # encoder slope; mean input (irrelevant)
    u_par, u_perp = sp.symbols("u_par u_perp", real=True)  # decoder along e
    ybar_par, ybar_perp = sp.symbols("ybar_par ybar_perp", real=True)  # mean output
    t1_par, t1_perp = sp.symbols("t1_par t1_perp", real=True)  # first target
    # Two inputs x1 = x̄ − dx/2, x2 = x̄ + dx/2; targets y1*, y2* = y1* + dy* with dy* = (s, 0).
    targets = [sp.Matrix([t1_par, t1_perp]), sp.Matrix([t1_par + s, t1_perp])]
    u = sp.Matrix([u_par, u_perp])
    ybar = sp.Matrix([ybar_par, ybar_perp])
    loss = 0
    for sign, target in zip((-1, 1), targets):
        hidden_offset = sign * sp.Rational(1, 2) * d_h * dx  # h(x_i) − h̄ along e
        prediction = ybar + u * hidden_offset
        residual = prediction - target
        loss += sp.Rational(1, 4) * (residual.T * residual)[0, 0]  # ½ · mean over 2 points
    del x_bar
    tau_h, tau_y, tau_mean = 1 / (2 * S.eta_h), 1 / (2 * S.eta_y), sp.Symbol("tau_ybar")
    time_constant = {d_h: tau_h, u_par: tau_y, u_perp: tau_y, ybar_par: tau_mean, ybar_perp: tau_mean}
    velocity = {p: sp.expand(-sp.diff(loss, p) / tau) for p, tau in time_constant.items()}
    return _LinearisedModel(
        params=tuple(time_constant),
        velocity=velocity,
        loss=sp.expand(loss),
        dx=dx,
        s=s,
        d_h=d_h,
        u_par=u_par,
        u_perp=u_perp,
    )


def _time_derivative(expr: sp.Expr, model: _LinearisedModel) -> sp.Expr:
    """d/dt of an expression of the model's parameters, by the chain rule along the flow."""
    return sp.expand(sum(sp.diff(expr, p) * v for p, v in model.velocity.items()))


@cache
def derive_reduced_system() -> dict[str, sp.Expr]:
    """Derive the reduced three-variable system `d/dt (h, y, w)` from the linearised model.

    The observables of the linearised model are `h = (D_h·dx)²`, `y = ‖u‖²·(D_h·dx)²` and
    `w = y − dy*·dŷ`. Their time derivatives are taken by the chain rule along the gradient flow
    of the model's parameters and then rewritten in `h, y, w` alone with the inverse map
    `D_h·dx = √h`, `u_par = (y − w)/(√h·‖dy*‖)`, `u_perp² = y/h − u_par²`.

    **Returns:** a dict `{"h": dh/dt, "y": dy/dt, "w": dw/dt}` of sympy expressions in the
    symbols of `symbols()`. They equal `THEORY.md` §2:

        dh/dt = −η_h·dx2·w
        dy/dt = −w·(η_y·h + η_h·dx2·y/h)
        dw/dt = −½·η_y·(3w − y + dy2)·h − ½·η_h·dx2·(y + w)·w/h
    """
    S = symbols()
    M = _linearised_model()
    a = M.d_h * M.dx  # signed hidden distance
    dyhat_par, dyhat_perp = M.u_par * a, M.u_perp * a
    observables = {
        "h": a**2,
        "y": dyhat_par**2 + dyhat_perp**2,
        "w": dyhat_par**2 + dyhat_perp**2 - M.s * dyhat_par,
    }
    # Inverse map on the branch a > 0 (the system is invariant under a → −a, u → −u).
    u_par_of = (S.y - S.w) / (sp.sqrt(S.h) * sp.sqrt(S.dy2))
    inverse = {
        M.d_h: sp.sqrt(S.h) / M.dx,
        M.u_par: u_par_of,
        M.s: sp.sqrt(S.dy2),
        M.dx: sp.sqrt(S.dx2),
    }
    u_perp_squared = S.y / S.h - u_par_of**2
    system = {}
    for name, observable in observables.items():
        rate = _time_derivative(observable, M)
        # u_perp enters only through even powers; replace u_perp² before the rest.
        rate = sp.expand(rate).subs(M.u_perp**2, sp.Symbol("_u_perp2"))
        rate = rate.subs(sp.Symbol("_u_perp2"), u_perp_squared)
        if rate.has(M.u_perp):  # pragma: no cover - would signal a non-closing system
            raise RuntimeError(f"d{name}/dt does not close on (h, y, w): {rate}")
        rate = rate.subs(M.d_h, inverse[M.d_h]).subs(inverse)
        system[name] = sp.simplify(sp.factor(sp.expand(rate)))
    return system


@cache
def derive_regular_system() -> dict[str, sp.Expr]:
    """Derive the regular system `d/dt (a, u_par, u_perp)` (`THEORY.md` §3, "Collisions").

    `a = D_h·dx` is the signed hidden distance and `(u_par, u_perp)` the decoder's image of the
    unit hidden direction, split along `dy*` and across it. The system is polynomial, so it is
    regular at `a = 0` where the `(h, y, w)` system divides by zero.

    **Returns:** `{"a": da/dt, "u_par": du_par/dt, "u_perp": du_perp/dt}` in the symbols of
    `symbols()`.
    """
    S = symbols()
    M = _linearised_model()
    substitutions = {M.d_h: S.a / M.dx, M.u_par: S.u_par, M.u_perp: S.u_perp}
    names = {"a": M.d_h * M.dx, "u_par": M.u_par, "u_perp": M.u_perp}
    system = {}
    for name, coordinate in names.items():
        rate = _time_derivative(coordinate, M).subs(substitutions)
        rate = rate.subs({M.dx: sp.sqrt(S.dx2), M.s: sp.sqrt(S.dy2)})
        system[name] = sp.factor(sp.expand(rate))
    return system


@cache
def derive_conserved_quantity() -> sp.Expr:
    """Derive the first integral `Q(h, y)` of the reduced system.

    Along a solution, `dy/dh = (dy/dt)/(dh/dt)` does not depend on `w`; it is a linear ODE in
    `y(h)` that sympy's `dsolve` integrates. Solving the general solution for its integration
    constant gives a conserved quantity, normalised here so that it has the units of `h`:

        Q = h − (η_h/η_y)·dx2·y/h

    **Returns:** the sympy expression `Q` in `h, y, eta_h, eta_y, dx2`.
    """
    S = symbols()
    system = derive_reduced_system()
    y_of_h = sp.Function("y")
    slope = sp.simplify(system["y"] / system["h"])  # w cancels
    slope = slope.subs(S.y, y_of_h(S.h))
    general = sp.dsolve(sp.Eq(y_of_h(S.h).diff(S.h), slope), y_of_h(S.h))
    constant = next(iter(sp.Tuple(general.rhs).free_symbols - set(S) - {S.h}), None)
    if constant is None:  # pragma: no cover
        raise RuntimeError(f"dsolve returned no integration constant: {general}")
    (first_integral,) = sp.solve(sp.Eq(S.y, general.rhs.subs(y_of_h(S.h), S.y)), constant)
    # first_integral = y/h − (η_y/(η_h·dx2))·h; rescale to units of h.
    q = sp.expand(-first_integral * S.eta_h * S.dx2 / S.eta_y)
    return q


class FixedPoint(NamedTuple):
    """Symbolic fixed point reached from `(h0, y0)`: see `derive_fixed_point`."""

    A_low: sp.Expr
    A_high: sp.Expr
    h_inf: sp.Expr
    h0: sp.Symbol
    y0: sp.Symbol


@cache
def derive_fixed_point() -> FixedPoint:
    """Derive the fixed point on the zero-loss set reached from `(h0, y0)`.

    The fixed points are the zero-loss set `w = 0, y = dy2` (any `h > 0`); the conserved
    quantity selects the one reached: `Q(h_inf, dy2) = Q(h0, y0)`, a quadratic in `h_inf` whose
    positive root is taken.

    **Returns:** a `FixedPoint` with `A_high = Q(h0, y0)`, `A_low = sqrt(η_h/η_y·dx2·dy2)` and
    `h_inf = ½·A_high + sqrt(¼·A_high² + A_low²)` as sympy expressions in `h0, y0` and the
    constants.
    """
    S = symbols()
    h0, y0, h_inf = sp.symbols("h0 y0 h_inf", positive=True)
    q = derive_conserved_quantity()
    a_high = q.subs({S.h: h0, S.y: y0})
    roots = sp.solve(sp.Eq(q.subs({S.h: h_inf, S.y: S.dy2}), a_high), h_inf)
    # The quadratic has one positive and one negative root (their product is −A_low² < 0).
    (positive_root,) = [r for r in roots if _is_positive_root(r)]
    a_low = sp.sqrt(S.eta_h * S.dx2 * S.dy2 / S.eta_y)
    return FixedPoint(A_low=a_low, A_high=a_high, h_inf=positive_root, h0=h0, y0=y0)


def _is_positive_root(root: sp.Expr) -> bool:
    value = root.subs({s: sp.Rational(7, 10) for s in root.free_symbols})
    return bool(sp.N(value) > 0)


class Stability(NamedTuple):
    """Symbolic linear stability on the fixed set: see `derive_stability`."""

    jacobian: sp.Matrix
    eigenvalues: tuple[sp.Expr, ...]
    h_star: sp.Symbol


@cache
def derive_stability() -> Stability:
    """Derive the Jacobian of the reduced system on the zero-loss set and its eigenvalues.

    At a fixed point `(h*, dy2, 0)` the Jacobian of `d/dt (h, y, w)` has one zero eigenvalue (the
    fixed set is a line of equilibria) and two negative ones; `−λ` are the asymptotic rates at
    which the loss terms `w` and `y − dy2` decay.

    **Returns:** a `Stability` with the 3×3 `jacobian`, the three `eigenvalues` (zero first) and
    the symbol `h_star`.
    """
    S = symbols()
    h_star = sp.Symbol("h_star", positive=True)
    system = derive_reduced_system()
    state = sp.Matrix([S.h, S.y, S.w])
    field = sp.Matrix([system["h"], system["y"], system["w"]])
    jacobian = field.jacobian(state).subs({S.h: h_star, S.y: S.dy2, S.w: 0})
    jacobian = sp.simplify(jacobian)
    eigen = [sp.simplify(e) for e in jacobian.eigenvals(multiple=True)]
    eigen.sort(key=lambda e: 0 if e == 0 else 1)
    return Stability(jacobian=jacobian, eigenvalues=tuple(eigen), h_star=h_star)


def to_jax(expr: sp.Expr | Sequence[sp.Expr], args: Sequence[sp.Symbol]) -> Callable:
    """Turn sympy expressions into a jittable JAX function of `args`.

    **Arguments:**

    - `expr`: one sympy expression, or a sequence of them (the function then returns a tuple).
    - `args`: the symbols, in the order the function takes them.

    **Returns:** a function `f(*args)` built with `sympy.lambdify(..., modules="jax")`, safe under
    `jax.jit` and `jax.vmap`.

    !!! example

        ```python
        S = symbols()
        q = to_jax(derive_conserved_quantity(), [S.h, S.y, S.eta_h, S.eta_y, S.dx2])
        q(1.0, 0.2, 1.0, 1.0, 1.0)   # 0.8
        ```
    """
    if isinstance(expr, sp.Expr):
        return sp.lambdify(list(args), expr, modules="jax")
    return sp.lambdify(list(args), list(expr), modules="jax")
