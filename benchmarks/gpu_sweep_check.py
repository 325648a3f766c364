"""GPU check for sweeps: correctness against the host CPU, then throughput of many flows at once.

`PYTHONPATH=. python3 benchmarks/gpu_sweep_check.py` (or `benchmarks/gpu_check.sh`) on a GPU machine:
1. correctness: a 1 000-point theory sweep and an `ensemble_flow` of 16 small tanh networks, on the
   GPU and on the host CPU backend of the same process, compared point by point;
2. small networks (MLP 100×4 tanh, two points, t1 = 5, rtol 1e-6, float64): 64 seeds as a Python
   loop of one jitted flow, as one vmapped sweep, as one ensemble flow; then 1 024 seeds as ensembles;
3. the default network (THEORY.md §5: leaky ReLU, width 500, depth 20, t1 = 30, rtol 1e-5, float32):
   one flow; sweeps of 256 and 1 024 seeds as ensembles in chunks the sweep sizes to the GPU's memory,
   each chunk timed over its first 100 steps (time per step, and flows per GPU-minute extrapolated:
   an estimate); then full ensembles of 16, 64, 256 seeds as the time budget allows.
`FLOWSOLVE_GPU_CHECK_SMALL=1` shrinks everything (a smoke test of the script on a CPU).
"""

import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402
import models  # noqa: E402

SMALL = os.environ.get("FLOWSOLVE_GPU_CHECK_SMALL") == "1"
BUDGET_S = float(os.environ.get("FLOWSOLVE_GPU_CHECK_BUDGET_S", "330"))
START = time.perf_counter()


def say(text):
    print(text, flush=True)


def theory_point(p):
    theory = fs.EffectiveTheory(p["eta_h"], 1.0, 1.0, 0.5)
    y0 = 1e-3 * p["h0"]
    sol = fs.solve_theory(theory, jnp.stack([p["h0"], y0, y0 - jnp.sqrt(0.5 * y0)]), 100.0,
                          ts=jnp.linspace(0.0, 100.0, 5), throw=False)
    return {"h": sol.h, "ok": sol.result == fs.RESULTS.successful}


def small_nets(seeds, width):
    return eqx.filter_vmap(lambda s: models.MLP(1, 1, width, 4, activation="tanh", key=jax.random.key(s)))(seeds)


def timed(f):
    start = time.perf_counter()
    out = jax.block_until_ready(f())
    return time.perf_counter() - start, out


def main():
    gpu, cpu = jax.devices()[0], jax.devices("cpu")[0]
    say(f"jax {jax.__version__}; device: {gpu.device_kind}")
    inputs, targets = fs.experiments.two_point_data(x0=-0.5)

    # 1. correctness
    axes = {"eta_h": np.logspace(-1, 1, 10), "h0": np.logspace(-2, 1, 10 if SMALL else 100)}
    results = {}
    for dev in (gpu, cpu):
        with jax.default_device(dev):
            results[dev.platform] = fs.sweep(theory_point, axes, dims={"h": ["time"]}, progress=False)
    g, c = results[gpu.platform], results["cpu"]
    rel = float(np.max(np.abs(g.h.values - c.h.values) / np.abs(c.h.values)))
    say(f"theory sweep {g.h.shape[0] * g.h.shape[1]} points: all ok GPU {bool(g.ok.all())}, CPU {bool(c.ok.all())}; "
        f"max relative |GPU − CPU| {rel:.1e}")
    ts = jnp.linspace(0.0, 5.0, 11)
    obs = {}
    for dev in (gpu, cpu):
        with jax.default_device(dev):
            sol = fs.ensemble_flow(small_nets(jnp.arange(16), 20 if SMALL else 100), inputs, targets, 5.0, ts=ts,
                                   layer=2, rtol=1e-9, atol=1e-12)
            obs[dev.platform] = {k: np.asarray(v) for k, v in sol.observed.items()}
    diffs = {k: float(np.max(np.abs(obs[gpu.platform][k] - obs["cpu"][k]) / np.ptp(obs["cpu"][k], axis=1,
                                                                                       keepdims=True)))
             for k in ("h", "y", "w", "loss")}
    say("ensemble of 16 tanh 100×4 flows, rtol 1e-9: max |GPU − CPU| / range: "
        + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))

    # 2. small networks
    width = 20 if SMALL else 100
    seeds = jnp.arange(64)

    def flow_point(p):
        net = models.MLP(1, 1, width, 4, activation="tanh", key=jax.random.key(p["seed"]))
        sol = fs.gradient_flow(net, inputs, targets, 5.0, ts=ts, layer=2, rtol=1e-6, throw=False)
        return {"h": sol.observed["h"]}

    def ensemble_chunk(p):
        sol = fs.ensemble_flow(small_nets(p["seed"], width), inputs, targets, 5.0, ts=ts, layer=2, rtol=1e-6,
                               throw=False)
        return {"h": sol.observed["h"]}

    single = jax.jit(flow_point)
    single({"seed": seeds[0]})  # compile for the very argument type the loop passes
    loop_s, _ = timed(lambda: [single({"seed": s}) for s in seeds])
    say(f"\n| small nets (MLP {width}×4 tanh), {gpu.device_kind} | seeds | wall s | flows/s | × loop |")
    say("|---|---:|---:|---:|---:|")
    say(f"| Python loop of one jitted flow | 64 | {loop_s:.2f} | {64 / loop_s:.1f} | 1.0 |")
    for label, fn, kw in (("vmapped sweep", flow_point, {}), ("ensemble sweep (batched)", ensemble_chunk,
                                                              {"batched": True})):
        run = lambda: fs.sweep(fn, {"seed": np.arange(64)}, dims={"h": ["time"]}, progress=False, **kw)  # noqa
        run()
        s, _ = timed(run)
        say(f"| {label} | 64 | {s:.2f} | {64 / s:.1f} | {loop_s / s:.1f} |")
    run = lambda: fs.sweep(ensemble_chunk, {"seed": np.arange(1024)}, dims={"h": ["time"]}, progress=False,  # noqa
                           batched=True, chunk_size=1024)
    run()
    s, _ = timed(run)
    say(f"| ensemble sweep (batched) | 1024 | {s:.2f} | {1024 / s:.1f} | {1024 / s / (64 / loop_s):.1f} |")

    # 3. the default network
    exp_t1 = 30.0
    big_width, big_depth = (50, 20) if SMALL else (500, 20)

    def default_nets(keys):
        make = lambda k: fs.experiments.two_points("default", key=k, width=big_width, depth=big_depth).model  # noqa
        nets = eqx.filter_vmap(make)(keys)
        return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, nets)

    x32, y32 = fs.experiments.two_point_data(dtype=jnp.float32)
    t32 = jnp.linspace(0.0, exp_t1, 31, dtype=jnp.float32)
    say(f"\n| default net {big_width}×{big_depth} leaky ReLU, float32, rtol 1e-5, t1 30, {gpu.device_kind} "
        "| members | steps | wall s (compile) | flows per GPU-minute | × one flow |")
    say("|---|---:|---:|---:|---:|---:|")
    one_net = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_inexact_array(x) else x,
                                     default_nets(jax.random.split(jax.random.key(0), 1)))
    first, _ = timed(lambda: fs.gradient_flow(one_net, x32, y32, exp_t1, ts=t32, layer=10, rtol=1e-5, atol=1e-7,
                                              max_steps=200_000).ts)
    s, sol = timed(lambda: fs.gradient_flow(one_net, x32, y32, exp_t1, ts=t32, layer=10, rtol=1e-5, atol=1e-7,
                                            max_steps=200_000))
    base = 60.0 / s
    sol_one_steps = int(sol.stats["num_steps"])
    say(f"| one gradient_flow | 1 | {int(sol.stats['num_steps'])} | {s:.1f} ({first - s:.0f}) | {base:.1f} | 1.0 |")
    # Large batches as sweeps (`batched=True`, chunk size left to the sweep: the largest ensemble whose
    # compiled program fits 3/4 of the GPU's memory by XLA's count), each chunk's ensemble stopped after
    # a fixed number of steps (a full flow of 256 members takes minutes): seconds per lockstep step from
    # the chunks after the first (which compiles), and flows per GPU-minute extrapolated to the one
    # flow's step count times the lockstep factor measured on 64 members (1.6). Labelled as an estimate.
    capped = 8 if SMALL else 100

    def capped_chunk(p):
        nets = default_nets(jax.vmap(lambda s: jax.random.fold_in(jax.random.key(2), s))(p["seed"]))
        sol = fs.ensemble_flow(nets, x32, y32, exp_t1, ts=t32, layer=10, rtol=1e-5, atol=1e-7, max_steps=capped,
                               throw=False)
        return {"steps": jnp.broadcast_to(sol.stats["num_steps"], p["seed"].shape)}

    for members in (256, 1024):
        stamps = [time.perf_counter()]
        try:
            ds = fs.sweep(capped_chunk, {"seed": np.arange(members)}, batched=True, progress=False,
                          callback=lambda c, n: stamps.append(time.perf_counter()))
        except Exception as e:  # e.g. RESOURCE_EXHAUSTED after all
            say(f"| sweep of ensembles, {capped} steps | {members} | failed: {type(e).__name__}: {str(e)[:80]} | | | |")
            continue
        chunk_s = np.diff(stamps)
        n_chunks = len(chunk_s)
        chunk = -(-members // n_chunks)
        steady = float(np.median(chunk_s[1:])) if n_chunks > 1 else float(chunk_s[0])
        step_s = steady / int(ds.steps.values.max())
        full_s = step_s * 1.6 * int(sol_one_steps)
        rate = 60.0 * chunk / full_s
        say(f"| sweep of ensembles, {n_chunks} chunks of ≤ {chunk} (chosen by the sweep), first "
            f"{int(ds.steps.values.max())} steps: {1e3 * step_s:.0f} ms per step"
            f"{' (one chunk: includes compilation)' if n_chunks == 1 else ''} (estimate for a full chunk: "
            f"{full_s:.0f} s) | {members} | {capped} | {stamps[-1] - stamps[0]:.1f} ({chunk_s[0] - steady:.0f}) | "
            f"≈ {rate:.1f} | ≈ {rate / base:.1f} |")
    for members in (16, 64, 256):
        elapsed = time.perf_counter() - START
        if elapsed > BUDGET_S * (0.45 if members == 256 else 0.6):
            say(f"| ensemble_flow | {members} | skipped: {elapsed:.0f} s of the {BUDGET_S:.0f} s budget used | | | |")
            continue
        nets = default_nets(jax.random.split(jax.random.key(1), members))
        run = lambda: fs.ensemble_flow(nets, x32, y32, exp_t1, ts=t32, layer=10, rtol=1e-5, atol=1e-7,  # noqa
                                       max_steps=200_000, throw=False)
        total, sol = timed(run)
        ok = int(jnp.sum(sol.result == fs.RESULTS.successful))
        rate = 60.0 * members / total
        say(f"| ensemble_flow (incl. compile), {ok}/{members} ok | {members} | {int(sol.stats['num_steps'])} | "
            f"{total:.1f} | {rate:.1f} | {rate / base:.1f} |")
    say(f"\ntotal {time.perf_counter() - START:.0f} s")


if __name__ == "__main__":
    main()
