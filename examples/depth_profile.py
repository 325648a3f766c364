"""Depth profile: fit the theory at every hidden layer of the default network.

The authors' protocol (their `2_points_depth` notebook): the default row (leaky ReLU, 20 hidden
layers of 500, gain 1) trained by full-batch gradient descent at lr 0.01 for 3000 epochs (float32),
the hidden distance h recorded at all 20 layers (y, w and m do not depend on the layer), then
`fit_effective_rates` fits every layer in one batched call. `--trainer flow` uses the exact gradient
flow instead (float64, Tsit5). Reports the fit error (largest normalised error of h, y, w) and the
fitted η_h, η_y per layer, mean ± sd over seeds, as a table, a CSV and a figure. The authors' runs
fit worst at the first layers and best around layers 11–12 of 20.

    python examples/depth_profile.py --out docs/results/paper   # width 500, GD, 5 seeds: ~3 min on 2 CPU cores
    python examples/depth_profile.py --width 50 --trainer flow --seeds 3

Writes `depth_profile.md`, `depth_profile.csv` and `depth_profile.png` into `--out`; each seed's run
is stored in `--out/depth_runs/` as it completes, so an interrupted run resumes.
"""

import argparse
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402


def observe_all_layers(model, inputs, targets):
    outputs, hiddens = jax.vmap(model)(inputs)
    per_layer = [fs.two_point_observables(inputs, targets, hidden, outputs) for hidden in hiddens]
    h = jax.numpy.stack([obs[0] for obs in per_layer])
    _, y, w, m = per_layer[0]
    return {"h": h, "y": y, "w": w, "m": m}


def run_for_seed(seed: int, width: int, trainer: str, rtol: float, folder: pathlib.Path):
    file = folder / f"{trainer}-width{width}-seed{seed}.npz"
    if file.exists():
        stored = np.load(file)
        return {k: stored[k] for k in stored.files}
    if trainer == "gd":
        exp = fs.experiments.two_points("default", key=jax.random.key(seed), width=width, dtype=jax.numpy.float32)
        sol = fs.gradient_descent(exp.model, exp.inputs, exp.targets, exp.lr, exp.epochs, observe=observe_all_layers,
                                  every=exp.epochs // 300)
    else:
        exp = fs.experiments.two_points("default", key=jax.random.key(seed), width=width)
        ts = np.linspace(0.0, exp.t1, 201)
        sol = fs.gradient_flow(exp.model, exp.inputs, exp.targets, exp.t1, ts=ts, observe=observe_all_layers,
                               rtol=rtol, atol=1e-3 * rtol)
    data = {"ts": np.asarray(sol.ts, np.float64), **{k: np.asarray(v, np.float64) for k, v in sol.observed.items()}}
    np.savez(file, **data)
    return data


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trainer", choices=["gd", "flow"], default="gd",
                        help="gd: the authors' full-batch GD (lr 0.01, 3000 epochs); flow: the exact gradient flow")
    parser.add_argument("--rtol", type=float, default=1e-5, help="the flow's relative tolerance")
    parser.add_argument("--out", default="depth_profile")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    (out / "depth_runs").mkdir(parents=True, exist_ok=True)

    errors, eta_h, eta_y = [], [], []
    for seed in range(args.seeds):
        d = run_for_seed(seed, args.width, args.trainer, args.rtol, out / "depth_runs")
        depth = d["h"].shape[1]
        h = d["h"].T  # (layers, times)
        tile = lambda v: np.broadcast_to(v, h.shape)  # noqa: E731
        fit = fs.fit_effective_rates(d["ts"], h, tile(d["y"]), tile(d["w"]), 1.0, 0.5, m=tile(d["m"]))
        err = np.max(np.stack([np.asarray(fit.errors[k]) for k in ("h", "y", "w")]), axis=0)
        errors.append(err)
        eta_h.append(np.asarray(fit.eta_h))
        eta_y.append(np.asarray(fit.eta_y))
        print(f"seed {seed}: best layer {int(np.argmin(err))} (error {err.min():.3f}), "
              f"worst layer {int(np.argmax(err))} (error {err.max():.3f}); all converged: "
              f"{bool(np.all(fit.converged))}", flush=True)
    errors, eta_h, eta_y = np.array(errors), np.array(eta_h), np.array(eta_y)

    with open(out / "depth_profile.csv", "w") as f:
        f.write("seed,layer,error,eta_h,eta_y\n")
        for seed in range(args.seeds):
            for k in range(depth):
                f.write(f"{seed},{k},{errors[seed, k]:.6g},{eta_h[seed, k]:.6g},{eta_y[seed, k]:.6g}\n")
    how = ("full-batch GD, lr 0.01 × 3000 epochs, float32" if args.trainer == "gd"
           else f"exact flow, rtol {args.rtol:g}")
    lines = [
        f"Default network (leaky ReLU, depth {depth}, width {args.width}), {how}, "
        f"{args.seeds} seeds; error = largest of the normalised errors of h, y, w (mean ± sd over seeds).",
        "",
        "| layer | error | η_h | η_y |",
        "|---|---|---|---|",
    ]
    for k in range(depth):
        lines.append(f"| {k} | {errors[:, k].mean():.3f} ± {errors[:, k].std():.3f} | "
                     f"{eta_h[:, k].mean():.3g} ± {eta_h[:, k].std():.2g} | {eta_y[:, k].mean():.3g} ± {eta_y[:, k].std():.2g} |")
    mean_err = errors.mean(axis=0)
    best = np.argsort(mean_err)[:3]
    lines += ["", f"Best layers (mean error): {', '.join(f'{k} ({mean_err[k]:.3f})' for k in best)}; "
              f"worst: {int(np.argmax(mean_err))} ({mean_err.max():.3f})."]
    table = "\n".join(lines)
    (out / "depth_profile.md").write_text(table + "\n")
    print(table)

    layers = np.arange(depth)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.errorbar(layers, mean_err, errors.std(axis=0), marker="o", capsize=2)
    ax1.set_xlabel("observed hidden layer")
    ax1.set_ylabel("fit error (max normalised RMSE of h, y, w)")
    for values, label in ((eta_h, "η_h"), (eta_y, "η_y")):
        ax2.errorbar(layers, values.mean(axis=0), values.std(axis=0), marker="o", capsize=2, label=label)
    ax2.set_yscale("log")
    ax2.set_xlabel("observed hidden layer")
    ax2.set_ylabel("fitted rate")
    ax2.legend()
    fig.suptitle(f"default network, width {args.width}, {how}, {args.seeds} seeds")
    fig.tight_layout()
    fig.savefig(out / "depth_profile.png", dpi=110)
    print(f"wrote {out / 'depth_profile.md'}, {out / 'depth_profile.png'}")


if __name__ == "__main__":
    main()
