"""Benchmark and convergence study of the exact gradient flow of the two-point networks.

For each case (the paper's default data on the leaky-ReLU kink; the same network with inputs moved off
the kink; smooth tanh, SiLU ("swish") and ELU networks), float64; on the smooth ones three solvers
(Tsit5 with an I controller, flowsolve's default; Bosh3 with a PI controller; `flowsolve.RKC`):

1. Convergence under tolerance refinement: the flow at a series of rtols; the spread of (h, y, w)
   (largest difference over the save times, relative to each curve's range) against the tightest run
   (the reference), with steps, gradient evaluations and wall time.
2. Gradient descent at 4·lr, 2·lr, lr, lr/2, … (lr: the setting's learning rate) against the reference
   flow: the same spread, and the spread against GD at the previous lr.
3. Cost at equal accuracy: the fewest gradient evaluations with which the flow (any rtol but the
   reference's) and GD (any lr) get within 1 % of the reference flow, and their ratio.
4. Wall time per gradient evaluation of the flow (the run cheapest at 1 %, else the loosest; compiled;
   saving at the `--n-save` times and saving only the end point; the fixed cost of one call — argument
   checks and dispatch, measured on a flow of a few steps — taken off) against one compiled GD step.
5. The paper's way (optional; needs PyTorch, `pip install torch` — the CPU build suffices): a PyTorch
   SGD loop over the same network (weights copied), float64, at the setting's lr for its epochs,
   reading the observed layer off the training forward pass at the save times. Its wall time, its
   spread against the reference flow and against flowsolve's GD at the same lr (which should agree to
   rounding), in the same run.

Sizes are reduced from the paper's (width `--width`, default 50; depth 20) so that the whole study
runs in minutes on a 2-core CPU; `--width 500` is the paper's network.

    python benchmarks/bench_flow.py                         # all cases, width 50
    python benchmarks/bench_flow.py --cases tanh swish elu  # only the smooth ones
"""

import argparse
import platform
import time

import diffrax
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402

KEYS = ("h", "y", "w")
SMOOTH_RTOLS = (1e-3, 3e-4, 1e-4, 1e-5, 1e-6, 1e-8)  # the last is the reference
KINK_RTOLS = (1e-4, 1e-5, 1e-6)
# (label, solver, pcoeff, icoeff): flowsolve's default, a cheap classical choice at ~1 % on smooth
# networks, and the stabilised second-order Runge–Kutta–Chebyshev method.
METHODS = {
    "Tsit5, I": (diffrax.Tsit5(), 0.0, 1.0),
    "Bosh3, PI": (diffrax.Bosh3(), 0.4, 0.3),
    "RKC, I": (fs.RKC(), 0.0, 1.0),
}
CASES = {
    "kink": dict(setting="default", x0=-1.0, rtols=KINK_RTOLS, methods=("Tsit5, I",),
                 label="leaky ReLU, inputs −1, 0 (on the kink)"),
    "off_kink": dict(setting="default", x0=-0.5, rtols=KINK_RTOLS, methods=("Tsit5, I",),
                     label="leaky ReLU, inputs −0.5, 0.5 (off the kink)"),
    "tanh": dict(setting="tanh", x0=-1.0, rtols=SMOOTH_RTOLS, methods=tuple(METHODS),
                 label="tanh (smooth), inputs −1, 0"),
    "swish": dict(setting="swish", x0=-1.0, rtols=SMOOTH_RTOLS, methods=tuple(METHODS),
                  label="SiLU (smooth), inputs −1, 0"),
    "elu": dict(setting="elu", x0=-1.0, rtols=SMOOTH_RTOLS, methods=tuple(METHODS),
                label="ELU (C¹), inputs −1, 0"),
}
LR_FACTORS = (4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0625)


def spread(a: dict, b: dict) -> float:
    """Largest |a − b| over time, relative to the range of b, over h, y, w (inf if a is not finite)."""
    out = 0.0
    for k in KEYS:
        ref = np.asarray(b[k])
        value = np.asarray(a[k])
        if not np.all(np.isfinite(value)):
            return float("inf")
        scale = max(float(np.ptp(ref)), 1e-30)
        out = max(out, float(np.max(np.abs(value - ref))) / scale)
    return out


def timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree_util.tree_leaves(out))
    return out, time.perf_counter() - start


def torch_sgd(exp, steps, every):
    """The paper's way: a PyTorch SGD loop, float64, weights copied from `exp.model` (an MLP)."""
    import torch

    torch.set_default_dtype(torch.float64)
    acts = {"leaky_relu": lambda x: torch.nn.functional.leaky_relu(x, 0.01), "relu": torch.relu, "tanh": torch.tanh,
            "elu": torch.nn.functional.elu, "silu": torch.nn.functional.silu, "none": lambda x: x}
    act = acts[exp.model.activation]
    params = []
    for layer in (*exp.model.layers, exp.model.readout):
        w = torch.tensor(np.asarray(layer.weight), requires_grad=True)
        b = torch.tensor(np.asarray(layer.bias), requires_grad=True)
        params.append((w, b))
    x = torch.tensor(np.asarray(exp.inputs))
    y_target = torch.tensor(np.asarray(exp.targets))
    optimizer = torch.optim.SGD([p for pair in params for p in pair], lr=exp.lr)
    hiddens, outputs = [], []

    def forward():
        h = x
        seen = None
        for i, (w, b) in enumerate(params[:-1]):
            h = act(h @ w.T + b)
            if i == exp.layer:
                seen = h
        w, b = params[-1]
        return h @ w.T + b, seen

    start = time.perf_counter()
    for step in range(steps + 1):
        optimizer.zero_grad()
        out, seen = forward()
        if step % every == 0:  # the state *before* this step's update, as flowsolve's GD observes
            hiddens.append(seen.detach().clone())
            outputs.append(out.detach().clone())
        if step == steps:
            break
        loss = 0.5 * ((out - y_target) ** 2).sum(dim=1).mean()
        loss.backward()
        optimizer.step()
    wall = time.perf_counter() - start
    obs = [fs.two_point_observables(exp.inputs, exp.targets, jnp.asarray(h.numpy()), jnp.asarray(o.numpy()))
           for h, o in zip(hiddens, outputs)]
    return {k: np.array([getattr(o, k) for o in obs]) for k in KEYS}, wall


def run_case(name, width, depth, n_save, with_torch):
    case = CASES[name]
    exp = fs.experiments.two_points(case["setting"], key=jax.random.key(0), width=width, depth=depth, x0=case["x0"])
    t1 = exp.t1
    ts = jnp.linspace(0.0, t1, n_save)
    rtols = case["rtols"]

    def flow(method, rtol, save_ts=ts):
        solver, pcoeff, icoeff = METHODS[method]
        return fs.gradient_flow(exp.model, exp.inputs, exp.targets, t1, ts=save_ts, layer=exp.layer, rtol=rtol,
                                atol=rtol * 1e-2, pcoeff=pcoeff, icoeff=icoeff, solver=solver, max_steps=1_000_000)

    reference_key = ("Tsit5, I", rtols[-1])
    flows = {(m, r): timed(lambda: flow(m, r)) for m in case["methods"] for r in rtols[:-1]}
    flows[reference_key] = timed(lambda: flow(*reference_key))
    best = flows[reference_key][0].observed
    print(f"\n### {case['label']} — width {width}, depth {depth}, layer {exp.layer}, t1 = {t1:g}\n")
    print("| solver, controller | flow rtol | steps | gradient evals | wall s (incl. compile) | spread vs reference |")
    print("|---|---:|---:|---:|---:|---:|")
    for (method, rtol), (sol, wall) in flows.items():
        ref = " (reference)" if (method, rtol) == reference_key else ""
        print(f"| {method} | {rtol:g}{ref} | {int(sol.stats['num_steps'])} | "
              f"{int(sol.stats['gradient_evaluations'])} | {wall:.1f} | {spread(sol.observed, best):.2e} |")
    print("\n| GD lr | steps = gradient evals | wall s | spread vs reference flow | spread vs GD at the previous lr |")
    print("|---:|---:|---:|---:|---:|")
    gd_rows, gd_at_lr = [], None
    previous = None
    for factor in LR_FACTORS:
        lr = exp.lr * factor
        steps = int(round(t1 / lr))
        every = max(steps // (n_save - 1), 1)
        try:
            gd, wall = timed(lambda: fs.gradient_descent(exp.model, exp.inputs, exp.targets, lr, steps,
                                                         layer=exp.layer, every=every))
        except RuntimeError as err:  # diverged: reported, not hidden
            print(f"| {lr:g} | {steps} | | diverged ({str(err).splitlines()[0][:60]}) | |")
            previous = None
            continue
        gd_obs = {k: np.interp(np.asarray(ts), np.asarray(gd.ts), np.asarray(gd.observed[k])) for k in KEYS}
        s = spread(gd_obs, best)
        gd_rows.append((lr, steps, s))
        if factor == 1.0:
            gd_at_lr = (gd, wall)
        self_spread = "" if previous is None else f"{spread(gd_obs, previous):.2e}"
        previous = gd_obs
        print(f"| {lr:g} | {steps} | {wall:.1f} | {s:.2e} | {self_spread} |")
    # Cost at equal accuracy (1 % and 0.1 %): the cheapest run within it, flow and GD.
    cheapest = None
    for accuracy in (0.01, 0.001):
        flow_ok = sorted((int(sol.stats["gradient_evaluations"]), key) for key, (sol, _) in flows.items()
                         if key != reference_key and spread(sol.observed, best) <= accuracy)
        gd_ok = sorted((steps, lr) for lr, steps, s in gd_rows if s <= accuracy)
        flow_txt = (f"{flow_ok[0][0]} ({flow_ok[0][1][0]}, rtol {flow_ok[0][1][1]:g})" if flow_ok
                    else "none of the runs but the reference")
        gd_txt = f"{gd_ok[0][0]} (lr {gd_ok[0][1]:g})" if gd_ok else f"not reached down to lr {gd_rows[-1][0]:g}"
        ratio = f"; GD / flow = **{gd_ok[0][0] / flow_ok[0][0]:.1f}×**" if flow_ok and gd_ok else ""
        print(f"\ncost to be within {accuracy:.1%} of the reference flow: flow {flow_txt} gradient evaluations; "
              f"GD {gd_txt}{ratio}.")
        if cheapest is None and flow_ok:
            cheapest = flow_ok[0][1]
    # Wall time per gradient evaluation of the flow vs one GD step (both compiled): the run that was
    # cheapest at 1 % (else the loosest of the default method).
    method, loose = cheapest or (case["methods"][0], rtols[0])
    again, wall_saving = timed(lambda: flow(method, loose))
    ends = jnp.array([0.0, t1])
    flow(method, loose, ends)
    bare, wall_bare = timed(lambda: flow(method, loose, ends))
    # The fixed cost of one call (argument checks, dispatch; a flow to t1·1e-9 takes a few steps),
    # taken off both before dividing by the gradient evaluations.
    tiny_t1 = t1 * 1e-9
    tiny = lambda: fs.gradient_flow(exp.model, exp.inputs, exp.targets, tiny_t1, ts=jnp.linspace(0.0, tiny_t1, n_save),  # noqa: E731
                                    layer=exp.layer, rtol=loose, atol=loose * 1e-2, pcoeff=METHODS[method][1],
                                    icoeff=METHODS[method][2], solver=METHODS[method][0])
    tiny()
    call_cost = min(timed(tiny)[1] for _ in range(3))
    wall_saving = max(wall_saving - call_cost, 0.0)
    wall_bare = max(wall_bare - call_cost, 0.0)
    evals = int(again.stats["gradient_evaluations"])
    steps = 2000
    fs.gradient_descent(exp.model, exp.inputs, exp.targets, exp.lr, steps, layer=exp.layer, every=steps)
    _, gd_wall = timed(lambda: fs.gradient_descent(exp.model, exp.inputs, exp.targets, exp.lr, steps,
                                                   layer=exp.layer, every=steps))
    per_step = gd_wall / steps
    per_eval = wall_saving / evals
    per_eval_bare = wall_bare / int(bare.stats["gradient_evaluations"])
    print(f"\nflow ({method}, rtol {loose:g}) wall time per gradient evaluation {per_eval * 1e3:.3f} ms saving at {n_save} "
          f"times, {per_eval_bare * 1e3:.3f} ms saving only the end; GD step {per_step * 1e3:.3f} ms; ratios "
          f"**{per_eval / per_step:.2f}** / {per_eval_bare / per_step:.2f} (the call's fixed {call_cost * 1e3:.0f} ms "
          f"excluded); compile time of the flow ≈ "
          f"{flows[method, loose][1] - wall_saving:.1f} s (first call − second call)")
    if with_torch and gd_at_lr is not None:
        gd, gd_wall = gd_at_lr
        steps = int(round(t1 / exp.lr))
        every = max(steps // (n_save - 1), 1)
        torch_obs, torch_wall = torch_sgd(exp, steps, every)
        gd_obs = {k: np.asarray(gd.observed[k]) for k in KEYS}
        torch_interp = {k: np.interp(np.asarray(ts), np.asarray(gd.ts), torch_obs[k]) for k in KEYS}
        print(f"PyTorch SGD loop (the paper's way), lr {exp.lr:g} × {steps} steps: {torch_wall:.2f} s "
              f"({torch_wall / steps * 1e3:.3f} ms/step; flowsolve GD {gd_wall:.2f} s incl. compile, flow "
              f"({method}, rtol {loose:g}) {wall_saving:.2f} s compiled); spread vs flowsolve GD at the same lr "
              f"{spread(torch_obs, gd_obs):.1e}, vs the reference flow {spread(torch_interp, best):.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--n-save", type=int, default=61)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline even if installed")
    args = parser.parse_args()
    try:
        import torch

        with_torch = not args.no_torch
        torch_txt = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        with_torch, torch_txt = False, "PyTorch not installed: no baseline rows"
    print(f"# bench_flow — {time.strftime('%Y-%m-%d')}, {platform.machine()}, jax {jax.__version__} "
          f"on {jax.devices()[0].platform}, float64; {torch_txt}")
    for name in args.cases:
        run_case(name, args.width, args.depth, args.n_save, with_torch)


if __name__ == "__main__":
    main()
