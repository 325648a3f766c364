"""Fitting η_h, η_y to one 3 000-sample trajectory: flowsolve against the paper's method.

Reference (the authors' approach): a grid of 200 `scipy.integrate.solve_ivp` Radau solves along the
ray η_h = η_y (log-spaced over 1e-2 … 1e2), then `scipy.optimize.minimize(method="BFGS")` on the
log-rates from the best grid point, with finite-difference gradients. Same data, same objective
(the sum of squared residuals of h, y, w, each divided by the range of its observed curve), same
solver tolerances (rtol 1e-8, atol 1e-10) and the analytic Jacobian for Radau.

flowsolve: `fit_effective_rates` (Levenberg–Marquardt through the diffrax solve, integral-equation
start). Times: the first call in this process (tracing + compiling), later calls (the fit itself),
and the first fit in a *fresh* process with a cold and with a warm `enable_compilation_cache()`.
Also: fits per second for a batch of 64 trajectories in one call.

    python benchmarks/bench_fit.py            # about 1–2 minutes on a laptop CPU
"""

import os
import subprocess
import sys
import tempfile
import textwrap
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

import flowsolve as fs  # noqa: E402

ETA_H, ETA_Y, DX2, DY2 = 2.0, 0.5, 1.0, 0.5
STATE0 = [0.05, 0.01, -0.05]
N, T1, NOISE = 3000, 40.0, 1e-3


def make_data(seed: int):
    theory = fs.EffectiveTheory(ETA_H, ETA_Y, DX2, DY2)
    ts = np.linspace(0.0, T1, N)
    sol = fs.solve_theory(theory, STATE0, T1, ts=ts, rtol=1e-11, atol=1e-13, stop_at_steady_state=False)
    clean = np.stack([sol.h, sol.y, sol.w])
    rng = np.random.default_rng(seed)
    noisy = clean + NOISE * np.ptp(clean, axis=1)[:, None] * rng.standard_normal(clean.shape)
    noisy[0] = np.abs(noisy[0])
    return ts, noisy


# ----------------------------------------------------------------------------------------------
# The reference method


def reference_fit(ts, obs):
    scale = np.ptp(obs, axis=1)

    def field(t, s, eh, ey):
        h, y, w = s
        return [-eh * DX2 * w,
                -w * (ey * h + eh * DX2 * y / h),
                -0.5 * ey * (3 * w - y + DY2) * h - 0.5 * eh * DX2 * (y + w) * w / h]

    def jac(t, s, eh, ey):
        h, y, w = s
        return [
            [0.0, 0.0, -eh * DX2],
            [-w * (ey - eh * DX2 * y / h**2), -w * eh * DX2 / h, -(ey * h + eh * DX2 * y / h)],
            [-0.5 * ey * (3 * w - y + DY2) + 0.5 * eh * DX2 * (y + w) * w / h**2,
             0.5 * ey * h - 0.5 * eh * DX2 * w / h,
             -1.5 * ey * h - 0.5 * eh * DX2 * (y + 2 * w) / h],
        ]

    def cost(log_rates):
        eh, ey = np.exp(log_rates)
        sol = solve_ivp(field, (ts[0], ts[-1]), obs[:, 0], method="Radau", t_eval=ts, args=(eh, ey), jac=jac,
                        rtol=1e-8, atol=1e-10)
        if not sol.success or sol.y.shape[1] != ts.size:
            return 1e10
        return float(np.sum(((sol.y - obs) / scale[:, None]) ** 2))

    grid = np.logspace(-2, 2, 200)
    costs = [cost(np.log([g, g])) for g in grid]
    start = np.log([grid[int(np.argmin(costs))]] * 2)
    res = minimize(cost, start, method="BFGS")
    return np.exp(res.x), res.fun


# ----------------------------------------------------------------------------------------------


FRESH = textwrap.dedent(
    """
    import sys, time, numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    import flowsolve as fs
    fs.enable_compilation_cache(sys.argv[1])
    ts, h, y, w = np.load(sys.argv[2])
    start = time.perf_counter()
    fit = fs.fit_effective_rates(ts, h, y, w, 1.0, 0.5)
    fit.eta_h.block_until_ready()
    print(time.perf_counter() - start)
    """
)


def fresh_process_seconds(cache: str, data_file: str) -> float:
    out = subprocess.run([sys.executable, "-c", FRESH, cache, data_file], capture_output=True, text=True,
                         check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    return float(out.stdout.split()[-1])


def main():
    ts, obs = make_data(0)
    print(f"data: theory trajectory η_h={ETA_H}, η_y={ETA_Y}, {N} samples to t={T1}, "
          f"noise {NOISE:g}·range on every sample; {jax.devices()[0].platform}, {os.cpu_count()} cores\n")

    t = time.perf_counter()
    ref_rates, ref_cost = reference_fit(ts, obs)
    ref_seconds = time.perf_counter() - t

    t = time.perf_counter()
    fit = fs.fit_effective_rates(ts, *obs, DX2, DY2)
    fit.eta_h.block_until_ready()
    first = time.perf_counter() - t
    repeats = []
    for _ in range(5):
        t = time.perf_counter()
        fit = fs.fit_effective_rates(ts, *obs, DX2, DY2)
        fit.eta_h.block_until_ready()
        repeats.append(time.perf_counter() - t)
    warm = float(np.median(repeats))

    with tempfile.TemporaryDirectory() as tmp:
        data_file = os.path.join(tmp, "data.npy")
        np.save(data_file, np.vstack([ts, obs]))
        cold_fresh = fresh_process_seconds(os.path.join(tmp, "cache"), data_file)
        warm_fresh = min(fresh_process_seconds(os.path.join(tmp, "cache"), data_file) for _ in range(2))

    batch = [make_data(seed) for seed in range(64)]
    bts = np.stack([b[0] for b in batch])
    bobs = np.stack([b[1] for b in batch])
    batch_rows = []
    for label, options in [("one call, chunk 1 (the CPU default)", {"chunk_size": 1}),
                           ("one call, all 64 vmapped", {"chunk_size": 64}),
                           ("one call, chunk 1, fit_initial_state", {"chunk_size": 1, "fit_initial_state": True})]:
        fits = fs.fit_effective_rates(bts, bobs[:, 0], bobs[:, 1], bobs[:, 2], DX2, DY2, **options)
        fits.eta_h.block_until_ready()
        t = time.perf_counter()
        fits = fs.fit_effective_rates(bts, bobs[:, 0], bobs[:, 1], bobs[:, 2], DX2, DY2, **options)
        fits.eta_h.block_until_ready()
        batch_rows.append((label, time.perf_counter() - t, fits))

    rows = [
        ("reference: 200 Radau on a ray + BFGS", ref_seconds, ref_rates, ref_cost),
        ("flowsolve, first call (trace + compile)", first, (fit.eta_h, fit.eta_y), fit.residual),
        ("flowsolve, later calls (median of 5)", warm, (fit.eta_h, fit.eta_y), fit.residual),
        ("flowsolve, fresh process, cold cache", cold_fresh, None, None),
        ("flowsolve, fresh process, warm cache", warm_fresh, None, None),
    ]
    print(f"{'method':44s} {'wall s':>9s} {'× ref':>8s} {'η_h':>10s} {'η_y':>10s} {'residual':>10s}")
    for name, seconds, rates, cost in rows:
        rate_text = (f"{float(rates[0]):10.6f} {float(rates[1]):10.6f} {float(cost):10.5f}" if rates is not None
                     else f"{'':10s} {'':10s} {'':10s}")
        print(f"{name:44s} {seconds:9.3f} {ref_seconds / seconds:8.1f} {rate_text}")
    print(f"\n64 trajectories (noise seeds 0–63); one fit per Python call: {1 / warm:.1f} fits/s")
    print(f"{'batch':40s} {'wall s':>7s} {'fits/s':>7s} {'conv':>5s} {'η_h mean ± sd':>20s} {'mean se':>8s}")
    for label, seconds, fits in batch_rows:
        print(f"{label:40s} {seconds:7.3f} {64 / seconds:7.1f} {str(bool(np.all(fits.converged))):>5s} "
              f"{float(np.mean(fits.eta_h)):10.5f} ± {float(np.std(fits.eta_h)):.1e} {float(np.mean(fits.eta_h_se)):8.1e}")
    print("(sd ≫ se with the first sample taken as exact: its noise biases each fit; fit_initial_state removes that)")
    print(f"flowsolve's residual / reference's: {float(fit.residual) / ref_cost:.6f} (≤ 1 is no worse)")


if __name__ == "__main__":
    main()
