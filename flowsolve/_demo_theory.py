"""The README's main job: solve the effective theory on the paper's default two-point data.

Data geometry of the reference setting (`THEORY.md` §5): inputs −1 and 0 (dx2 = 1), targets 0.6 and
0.6 + sqrt(0.5) (dy2 = 0.5). Three starts show the theory's regimes: small initial weights ("rich":
the representation takes the task's structure, h(∞) → A_low), large initial weights ("lazy": it keeps
its initial geometry, h(∞) ≈ h0), and an anti-aligned start whose two hidden representations collide
on the way (integrated through the collision in regular coordinates).
"""

import time

import jax

from ._results import result_name
from ._theory import EffectiveTheory, solve_theory

DEFAULT_SETTING = dict(eta_h=1.0, eta_y=1.0, dx2=1.0, dy2=0.5)
STARTS = {
    # name: (h0, y0, w0); admissible for dy2 = 0.5
    "rich (small init)": (0.01, 1e-6, 1e-6 - 0.5**0.5 * 1e-3),
    "lazy (large init)": (25.0, 0.2, 0.2 - 0.5**0.5 * 0.2**0.5 * 0.3),
    "colliding (anti-aligned)": (0.05, 0.125, 0.375),
}


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    theory = EffectiveTheory(**DEFAULT_SETTING)
    print("flowsolve — effective theory of van Rossem & Saxe (ICML 2024), float64")
    print("setting: " + ", ".join(f"{k}={v}" for k, v in DEFAULT_SETTING.items()) + "; time is gradient-flow time")
    for name, state0 in STARTS.items():
        h0, y0, _ = state0
        a_low, a_high, h_inf = theory.fixed_point(h0, y0)
        t1 = 40.0 / float(min(theory.convergence_rates(h_inf)))
        start = time.perf_counter()
        sol = solve_theory(theory, state0, t1)
        elapsed = time.perf_counter() - start
        q0 = float(sol.conserved[0])
        drift = float(abs(sol.conserved - q0).max()) / max(abs(q0), h0)
        print(f"\n== {name}: h0={h0:g}, y0={y0:g}, w0={state0[2]:.4g}; t1={t1:.4g}")
        print(f"{'t':>10} {'h=|dh|^2':>12} {'y=|dy|^2':>12} {'w':>12} {'loss':>12}")
        for i in (0, 1, 2, 5, 10, 20, 50, 100):
            print(
                f"{float(sol.ts[i]):10.4g} {float(sol.h[i]):12.6g} {float(sol.y[i]):12.6g} "
                f"{float(sol.w[i]):12.4e} {float(sol.loss[i]):12.4e}"
            )
        print(f"A_low={float(a_low):.6g}  A_high={float(a_high):.6g}")
        print(f"|dh(inf)|^2 predicted (closed form) = {float(h_inf):.10f}")
        print(f"|dh(inf)|^2 integrated              = {float(sol.h[-1]):.10f}"
              f"  (rel. diff {abs(float(sol.h[-1]) - float(h_inf)) / float(h_inf):.1e})")
        print(f"conserved Q drift (relative)        = {drift:.1e}")
        if bool(sol.collided):
            print(f"collision of the two representations at t = {float(sol.t_collision):.6g}")
        steps = int(sol.stats["num_steps"])
        print(f"solver: {steps} steps, {elapsed:.2f} s (incl. compilation), result: {result_name(sol.result)}")


if __name__ == "__main__":
    main()
