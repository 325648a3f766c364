"""GPU check for the exact gradient flow at the paper's network size (width 500, depth 20).

`PYTHONPATH=. python3 benchmarks/gpu_flow_check.py` on a machine with a GPU:
1. correctness: the smooth tanh setting's flow (rtol 1e-7) on the GPU and on the host CPU backend
   of the same process, compared observable by observable;
2. timing: the default (leaky-ReLU) setting's flow at rtol 1e-5 to t1 = 30 and plain GD at the
   paper's lr on the GPU: steps, gradient evaluations, wall time per evaluation vs per GD step.
"""

import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402


def on(device, fn):
    with jax.default_device(device):
        out = fn()
        return jax.device_get(out)


def main():
    gpu, cpu = jax.devices()[0], jax.devices("cpu")[0]
    print(f"jax {jax.__version__}; accelerator: {gpu.device_kind}")
    exp = fs.experiments.two_points("tanh", key=jax.random.key(0))

    def tanh_flow():
        return fs.gradient_flow(exp.model, exp.inputs, exp.targets, exp.t1, layer=exp.layer, rtol=1e-7, atol=1e-9).observed

    start = time.perf_counter()
    g = on(gpu, tanh_flow)
    g_s = time.perf_counter() - start
    start = time.perf_counter()
    c = on(cpu, tanh_flow)
    c_s = time.perf_counter() - start
    diffs = {k: float(np.max(np.abs(g[k] - c[k])) / max(float(np.ptp(c[k])), 1e-30)) for k in ("h", "y", "w", "loss")}
    print(f"tanh width 500 flow, rtol 1e-7: GPU {g_s:.1f} s, CPU {c_s:.1f} s (both incl. compile); "
          f"max |GPU − CPU| / range: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))

    exp = fs.experiments.two_points("default", key=jax.random.key(0))
    with jax.default_device(gpu):
        ts = jnp.linspace(0.0, exp.t1, 61)
        for attempt in ("first (compile)", "second"):
            start = time.perf_counter()
            sol = fs.gradient_flow(exp.model, exp.inputs, exp.targets, exp.t1, ts=ts, layer=exp.layer, rtol=1e-5,
                                   atol=1e-7, max_steps=200_000)
            jax.block_until_ready(sol.ts)
            wall = time.perf_counter() - start
            evals = int(sol.stats["gradient_evaluations"])
            print(f"default width 500 flow, rtol 1e-5, {attempt}: {int(sol.stats['num_steps'])} steps, {evals} "
                  f"gradient evaluations, {wall:.1f} s, {wall / evals * 1e3:.3f} ms per evaluation; "
                  f"final h = {float(sol.observed['h'][-1]):.5f}")
        for attempt in ("first (compile)", "second"):
            start = time.perf_counter()
            gd = fs.gradient_descent(exp.model, exp.inputs, exp.targets, exp.lr, exp.epochs, layer=exp.layer, every=50)
            jax.block_until_ready(gd.ts)
            wall = time.perf_counter() - start
            print(f"default width 500 GD, lr {exp.lr} × {exp.epochs}, {attempt}: {wall:.2f} s, "
                  f"{wall / exp.epochs * 1e3:.3f} ms per step; final h = {float(gd.observed['h'][-1]):.5f}")


if __name__ == "__main__":
    main()
