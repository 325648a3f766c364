"""One-off use: a theory solve, a fit and each command in a *fresh* process, flowsolve against scipy.

Every row is a whole process (`python -c …` or the `flowsolve` command), timed from its start to its
exit; the median of `--repeats` runs. flowsolve runs with its compilation cache cold (a new, empty
folder per run) and warm (the folder a previous run filled); the command line keeps the cache on by
default, the API with `flowsolve.enable_compilation_cache()`. The scipy rows do the same job in
plain Python: `solve_ivp` (RK45, the (h, y, w) system, the same rtol 1e-8 / atol 1e-10), and for the
fit `scipy.optimize.least_squares` on the log-rates through `solve_ivp`, started from the rates (1, 1)
(flowsolve's fit starts from its integral-equation guess). The theory command's scipy twin also
writes the CSV and the PNG the command writes; the other commands have no scipy twin.

    python benchmarks/bench_oneoff.py                  # about 3 minutes on 2 cores
    python benchmarks/bench_oneoff.py --repeats 5
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

SOLVE = textwrap.dedent(
    """
    import sys, jax
    jax.config.update("jax_enable_x64", True)
    import flowsolve as fs
    if sys.argv[1] != "off":
        fs.enable_compilation_cache(sys.argv[1])
    sol = fs.solve_theory(fs.EffectiveTheory(1.0, 1.0, 1.0, 0.5), [0.01, 0.0, 0.0], 200.0)
    print(float(sol.h[-1]))
    """
)

SOLVE_SCIPY = textwrap.dedent(
    """
    import numpy as np
    from scipy.integrate import solve_ivp
    def f(t, s):
        h, y, w = s
        return [-w, -w * (h + y / h), -0.5 * (3 * w - y + 0.5) * h - 0.5 * (y + w) * w / h]
    sol = solve_ivp(f, (0.0, 200.0), [0.01, 1e-300, 0.0], t_eval=np.linspace(0, 200, 101), rtol=1e-8, atol=1e-10)
    print(sol.y[0, -1])
    """
)

THEORY_SCIPY = textwrap.dedent(
    """
    import csv, sys, numpy as np
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.integrate import solve_ivp
    def f(t, s):
        h, y, w = s
        return [-w, -w * (h + y / h), -0.5 * (3 * w - y + 0.5) * h - 0.5 * (y + w) * w / h]
    ts = np.linspace(0, 200, 101)
    sol = solve_ivp(f, (0.0, 200.0), [0.01, 1e-6, 1e-6 - 0.5**0.5 * 1e-3], t_eval=ts, rtol=1e-8, atol=1e-10)
    with open(sys.argv[1] + "/theory.csv", "w", newline="") as out:
        csv.writer(out).writerows([["t", "h", "y", "w"], *np.column_stack([ts, sol.y.T]).tolist()])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for ax, row in zip(axes, sol.y):
        ax.plot(ts, row)
    fig.savefig(sys.argv[1] + "/theory.png", dpi=110)
    """
)

FIT = textwrap.dedent(
    """
    import sys, numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    import flowsolve as fs
    if sys.argv[1] != "off":
        fs.enable_compilation_cache(sys.argv[1])
    t, h, y, w = np.loadtxt(sys.argv[2], delimiter=",", skiprows=1, unpack=True)
    fit = fs.fit_effective_rates(t, h, y, w, 1.0, 0.5)
    print(float(fit.eta_h), float(fit.eta_y))
    """
)

FIT_SCIPY = textwrap.dedent(
    """
    import sys, numpy as np
    from scipy.integrate import solve_ivp
    from scipy.optimize import least_squares
    t, h, y, w = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1, unpack=True)
    obs = np.stack([h, y, w]); scale = np.ptp(obs, axis=1)[:, None]
    def f(_, s, eh, ey):
        h, y, w = s
        return [-eh * w, -w * (ey * h + eh * y / h), -0.5 * ey * (3 * w - y + 0.5) * h - 0.5 * eh * (y + w) * w / h]
    def residuals(p):
        sol = solve_ivp(f, (t[0], t[-1]), obs[:, 0], t_eval=t, args=tuple(np.exp(p)), rtol=1e-8, atol=1e-10)
        if not sol.success:
            return np.full(obs.size, 1e3)
        return ((sol.y - obs) / scale).ravel()
    res = least_squares(residuals, [0.0, 0.0])
    print(*np.exp(res.x))
    """
)


def seconds(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - start


def measure(cmd_for, repeats: int) -> dict[str, float]:
    """cmd_for(cache) → command; cold: a new cache folder each run; warm: one folder, filled first."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cold = []
        for i in range(repeats):
            folder = os.path.join(tmp, f"cold{i}")
            cold.append(seconds(*cmd_for(folder)))
        out["cold"] = statistics.median(cold)
        warm_folder = os.path.join(tmp, "warm")
        seconds(*cmd_for(warm_folder))
        out["warm"] = statistics.median(seconds(*cmd_for(warm_folder)) for _ in range(repeats))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    py = sys.executable
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flowsolve = [py, "-m", "flowsolve._cli"]
    work = tempfile.mkdtemp()
    try:
        data = os.path.join(work, "data.csv")
        code = ("import numpy as np, jax; jax.config.update('jax_enable_x64', True); import flowsolve as fs\n"
                "ts = np.linspace(0, 40, 161)\n"
                "s = fs.solve_theory(fs.EffectiveTheory(2.0, 0.5, 1.0, 0.5), [0.05, 0.01, -0.05], 40.0, ts=ts)\n"
                f"np.savetxt({data!r}, np.column_stack([ts, s.h, s.y, s.w]), delimiter=',', header='t,h,y,w',"
                " comments='')")
        subprocess.run([py, "-c", code], check=True, env=env)
        out = os.path.join(work, "out")
        os.makedirs(out)

        def cli(*command):
            return lambda cache: (flowsolve + list(command) + ["--out", out], dict(env, FLOWSOLVE_CACHE=cache))

        rows = [
            ("one theory solve (API)", lambda c: ([py, "-c", SOLVE, c], env), [py, "-c", SOLVE_SCIPY]),
            ("one fit, 161 samples (API)", lambda c: ([py, "-c", FIT, c, data], env), [py, "-c", FIT_SCIPY, data]),
            ("`flowsolve theory`", cli("theory"), [py, "-c", THEORY_SCIPY, out]),
            ("`flowsolve fit data.csv`", cli("fit", data), None),
            ("`flowsolve flow tanh --width 50`", cli("flow", "tanh", "--width", "50"), None),
        ]
        import jax

        print(f"# bench_oneoff — {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, "
              f"jax {jax.__version__}, whole processes, median of {args.repeats}")
        print()
        print("| job | flowsolve cold s | flowsolve warm s | scipy s | warm / scipy |")
        print("|---|---:|---:|---:|---:|")
        for name, cmd_for, scipy_cmd in rows:
            t = measure(cmd_for, args.repeats)
            ref = statistics.median(seconds(scipy_cmd, env) for _ in range(args.repeats)) if scipy_cmd else np.nan
            ratio = f"{t['warm'] / ref:.1f}×" if scipy_cmd else "—"
            ref_s = f"{ref:.2f}" if scipy_cmd else "—"
            print(f"| {name} | {t['cold']:.2f} | {t['warm']:.2f} | {ref_s} | {ratio} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
