"""Benchmark and convergence study of the exact gradient flow of the two-point networks.

For each case (the paper's default data on the leaky-ReLU kink; the same network with inputs moved off
the kink; a smooth tanh network), float64:

1. Convergence under tolerance refinement: the flow at rtol 1e-4 … `--min-rtol`; the spread of
   (h, y, w) (largest difference over the save times, relative to each curve's range) against the
   tightest run, with steps, gradient evaluations and wall time.
2. Gradient descent at lr, lr/2, lr/4, … against the tightest flow: the same spread, and how many
   gradient evaluations GD needs to get within 1 % (the flow's cost at the loosest rtol that is also
   within 1 % is the comparison).
3. Wall time per gradient evaluation of the flow against one GD step (compiled, same network).

Sizes are reduced from the paper's (width `--width`, default 50; depth 20) so that the whole study
runs in minutes on a 2-core CPU; `--width 500` is the paper's network.

    python benchmarks/bench_flow.py                      # width 50, rtol down to 1e-6
    python benchmarks/bench_flow.py --min-rtol 1e-7 --cases kink
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402

KEYS = ("h", "y", "w")
CASES = {
    "kink": dict(setting="default", x0=-1.0, label="leaky ReLU, inputs −1, 0 (on the kink)"),
    "off_kink": dict(setting="default", x0=-0.5, label="leaky ReLU, inputs −0.5, 0.5 (off the kink)"),
    "tanh": dict(setting="tanh", x0=-1.0, label="tanh (smooth), inputs −1, 0"),
}


def spread(a: dict, b: dict) -> float:
    """Largest |a − b| over time, relative to the range of b, over h, y, w."""
    out = 0.0
    for k in KEYS:
        ref = np.asarray(b[k])
        scale = max(float(np.ptp(ref)), 1e-30)
        out = max(out, float(np.max(np.abs(np.asarray(a[k]) - ref))) / scale)
    return out


def run_case(name, width, depth, rtols, lr_divisors, n_save):
    case = CASES[name]
    exp = fs.experiments.two_points(case["setting"], key=jax.random.key(0), width=width, depth=depth, x0=case["x0"])
    t1 = exp.t1
    ts = jnp.linspace(0.0, t1, n_save)
    flows = {}
    for rtol in rtols:
        start = time.perf_counter()
        sol = fs.gradient_flow(exp.model, exp.inputs, exp.targets, t1, ts=ts, layer=exp.layer, rtol=rtol,
                               atol=rtol * 1e-2, max_steps=400_000)
        jax.block_until_ready(sol.ts)
        flows[rtol] = (sol, time.perf_counter() - start)
    best = flows[rtols[-1]][0].observed
    print(f"\n### {case['label']} — width {width}, depth {depth}, layer {exp.layer}, t1 = {t1:g}\n")
    print("| flow rtol | steps | gradient evals | wall s (incl. compile) | spread vs tightest |")
    print("|---:|---:|---:|---:|---:|")
    for rtol, (sol, wall) in flows.items():
        print(f"| {rtol:g} | {int(sol.stats['num_steps'])} | {int(sol.stats['gradient_evaluations'])} | {wall:.1f} | "
              f"{spread(sol.observed, best):.2e} |")
    print("\n| GD lr | steps = gradient evals | wall s | spread vs tightest flow | spread vs GD at the previous lr |")
    print("|---:|---:|---:|---:|---:|")
    gd_rows = []
    previous = None
    for div in lr_divisors:
        lr = exp.lr / div
        steps = int(round(t1 / lr))
        every = steps // (n_save - 1)
        start = time.perf_counter()
        gd = fs.gradient_descent(exp.model, exp.inputs, exp.targets, lr, steps, layer=exp.layer, every=every)
        jax.block_until_ready(gd.ts)
        wall = time.perf_counter() - start
        s = spread(gd.observed, best)
        gd_rows.append((lr, steps, s))
        self_spread = "" if previous is None else f"{spread(gd.observed, previous):.2e}"
        previous = gd.observed
        print(f"| {lr:g} | {steps} | {wall:.1f} | {s:.2e} | {self_spread} |")
    # Cost at 1 % accuracy.
    flow_ok = [(int(sol.stats["gradient_evaluations"]), r) for r, (sol, _) in flows.items()
               if r != rtols[-1] and spread(sol.observed, best) <= 0.01]
    gd_ok = [(steps, lr) for lr, steps, s in gd_rows if s <= 0.01]
    flow_txt = f"{min(flow_ok)[0]} (rtol {min(flow_ok)[1]:g})" if flow_ok else "none of the looser runs"
    gd_txt = f"{min(gd_ok)[0]} (lr {min(gd_ok)[1]:g})" if gd_ok else f"not reached down to lr {gd_rows[-1][0]:g}"
    print(f"\ncost to be within 1 % of the tightest flow: flow {flow_txt} gradient evaluations; GD {gd_txt}.")
    # Wall time per gradient evaluation of the flow vs one GD step (compiled).
    sol, _ = flows[rtols[0]]
    start = time.perf_counter()
    again = fs.gradient_flow(exp.model, exp.inputs, exp.targets, t1, ts=ts, layer=exp.layer, rtol=rtols[0],
                             atol=rtols[0] * 1e-2, max_steps=400_000)
    jax.block_until_ready(again.ts)
    again_wall = time.perf_counter() - start
    per_eval = again_wall / int(again.stats["gradient_evaluations"])
    steps = 2000
    fs.gradient_descent(exp.model, exp.inputs, exp.targets, exp.lr, steps, layer=exp.layer, every=steps)
    start = time.perf_counter()
    gd = fs.gradient_descent(exp.model, exp.inputs, exp.targets, exp.lr, steps, layer=exp.layer, every=steps)
    jax.block_until_ready(gd.ts)
    per_step = (time.perf_counter() - start) / steps
    print(f"flow wall time per gradient evaluation {per_eval * 1e3:.2f} ms vs GD step {per_step * 1e3:.2f} ms "
          f"(ratio {per_eval / per_step:.2f}); compile time of the flow ≈ {flows[rtols[0]][1] - again_wall:.1f} s (first call − second call)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--min-rtol", type=float, default=1e-6)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--lr-divisors", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--n-save", type=int, default=61)
    args = parser.parse_args()
    rtols = [r for r in (1e-4, 1e-5, 1e-6, 1e-7, 1e-8) if r >= args.min_rtol * 0.999]
    print(f"# bench_flow — {time.strftime('%Y-%m-%d')}, {platform.machine()}, jax {jax.__version__} "
          f"on {jax.devices()[0].platform}, float64")
    for name in args.cases:
        run_case(name, args.width, args.depth, rtols, args.lr_divisors, args.n_save)


if __name__ == "__main__":
    main()
