"""Final ‖dh‖² of the network against the theory over a 5 × 5 grid of input and output distances.

The paper's comparison plot. For every squared input distance dx2 ∈ [0.5, 1.5] and squared output
distance dy2 ∈ [0, 1] (5 values each), the default network (THEORY.md §5: leaky-ReLU MLP, depth 20,
gain 1, layer 10; two points x = −1, −1 + sqrt(dx2), targets 0.6, 0.6 + sqrt(dy2)) is trained by
its exact gradient flow to t1 = 30 in one `flowsolve.sweep` (stored, resumable). The theory then
predicts each point's final ‖dh‖² from that point's own initial (h, y, w):

- *one pair of rates*: η_h, η_y fitted once, at the reference point (dx2 = 1, dy2 = 0.5), used for
  all 25 points — a prediction for the other 24;
- *fitted per point*: rates fitted to each point's own trajectory (how well the reduced model can
  describe it at all; the spread of these rates over the grid says whether they depend on geometry).

    python examples/distance_grid.py                      # width 50: ~5 min on 2 CPU cores
    python examples/distance_grid.py --width 500 --chunk 25   # the paper's width, one batch (a GPU's job)

Writes `distance_grid.png`, `distance_grid.csv` (one line per point) and `distance_grid.md` (the
summary: correlations and relative errors) into `--out`; the sweep's store is `--out/sweep`.
"""

import argparse
import csv
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402

DX2 = np.linspace(0.5, 1.5, 5)
DY2 = np.linspace(0.0, 1.0, 5)
REFERENCE = (1.0, 0.5)  # the grid's centre, THEORY.md §5's data
T1 = 30.0  # lr · epochs of the default setting


def make_point(width: int, depth: int, rtol: float, n_times: int):
    ts = jnp.linspace(0.0, T1, n_times)

    def point(p):
        exp = fs.experiments.two_points("default", key=jax.random.key(p["seed"]), width=width, depth=depth)
        x = jnp.stack([jnp.array([-1.0]), jnp.array([-1.0]) + jnp.sqrt(p["dx2"])])
        y = jnp.stack([jnp.array([0.6]), jnp.array([0.6]) + jnp.sqrt(p["dy2"])])
        sol = fs.gradient_flow(exp.model, x, y, T1, ts=ts, layer=exp.layer, rtol=rtol, atol=1e-3 * rtol,
                               throw=False)
        return {**{k: sol.observed[k] for k in ("h", "y", "w", "loss")},
                "ok": sol.result == fs.RESULTS.successful, "steps": sol.stats["num_steps"]}

    return ts, point


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--chunk", type=int, default=1, help="points per compiled call (1 is fastest on a CPU)")
    parser.add_argument("--out", default="distance_grid")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ts, point = make_point(args.width, args.depth, args.rtol, 121)
    ds = fs.sweep(point, {"seed": [args.seed], "dx2": DX2, "dy2": DY2}, chunk_size=args.chunk,
                  dims={k: ["time"] for k in ("h", "y", "w", "loss")}, coords={"time": np.asarray(ts)},
                  store=out / "sweep", name="distance_grid",
                  config={"width": args.width, "depth": args.depth, "rtol": args.rtol})
    ds = ds.isel(seed=0)
    ok = ds.ok.values & ds.finite.values
    gx, gy = np.meshgrid(DX2, DY2, indexing="ij")
    h, y, w = (ds[k].values for k in ("h", "y", "w"))

    # Rates fitted per point (one batched call), and the reference point's pair used everywhere.
    fit = fs.fit_effective_rates(np.broadcast_to(np.asarray(ts), h.shape), h, y, w, gx, gy)
    i, j = int(np.argmin(np.abs(DX2 - REFERENCE[0]))), int(np.argmin(np.abs(DY2 - REFERENCE[1])))
    eta_h, eta_y = float(fit.eta_h[i, j]), float(fit.eta_y[i, j])

    def theory_final(eh, ey):
        theory = fs.EffectiveTheory(eh, ey, gx, gy)
        _, _, h_inf = theory.fixed_point(h[..., 0], y[..., 0])
        return np.asarray(h_inf)

    net = h[..., -1]
    one_pair = theory_final(eta_h, eta_y)
    per_point = theory_final(np.asarray(fit.eta_h), np.asarray(fit.eta_y))

    converged = np.asarray(fit.converged)

    def summary(pred, mask=ok):
        good = mask & np.isfinite(pred)
        r = float(np.corrcoef(net[good], pred[good])[0, 1])
        rel = np.abs(pred[good] - net[good]) / net[good]
        return r, float(np.median(rel)), float(np.max(rel))

    lines = [
        f"# Final ‖dh‖²: network vs theory over dx2 × dy2 (width {args.width}, depth {args.depth}, "
        f"seed {args.seed}, rtol {args.rtol})",
        "",
        f"{int(ok.sum())}/25 flows succeeded; final loss ≤ {float(np.nanmax(ds.loss.values[..., -1])):.1e} "
        "(a network still on its plateau at t1 has not reached the fixed point the theory predicts). "
        f"Rates at the reference point (dx2 = {REFERENCE[0]}, dy2 = {REFERENCE[1]}): "
        f"η_h = {eta_h:.4g}, η_y = {eta_y:.4g}.",
        "",
        "| theory's rates | correlation with the network | median relative error | largest |",
        "|---|---:|---:|---:|",
    ]
    learned = ok & (ds.loss.values[..., -1] < 1e-4)  # the network has converged by t1
    for label, pred, mask in (("one pair (fitted at the reference point)", one_pair, ok),
                              (f"one pair, the {int(learned.sum())} networks converged by t1 (loss < 1e-4)",
                               one_pair, learned),
                              (f"fitted per point ({int((ok & converged).sum())} converged fits)", per_point,
                               ok & converged)):
        r, med, big = summary(pred, mask)
        lines.append(f"| {label} | {r:.4f} | {med:.1%} | {big:.1%} |")
    ratio = np.asarray(fit.eta_h) / np.asarray(fit.eta_y)
    lines += ["", f"η_h/η_y of the converged per-point fits: {np.nanmin(ratio[ok & converged]):.3g} … "
              f"{np.nanmax(ratio[ok & converged]):.3g} "
              f"(reference {eta_h / eta_y:.3g}); h(0) over the grid {np.min(h[..., 0]):.3g} … {np.max(h[..., 0]):.3g}."]
    text = "\n".join(lines) + "\n"
    (out / "distance_grid.md").write_text(text)
    print(text)

    with open(out / "distance_grid.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dx2", "dy2", "ok", "steps", "h0", "net_h_final", "theory_h_one_pair",
                         "theory_h_per_point", "eta_h", "eta_y", "fit_converged"])
        for a in range(5):
            for b in range(5):
                writer.writerow([DX2[a], DY2[b], bool(ok[a, b]), int(ds.steps.values[a, b]), h[a, b, 0], net[a, b],
                                 one_pair[a, b], per_point[a, b], float(fit.eta_h[a, b]), float(fit.eta_y[a, b]),
                                 bool(fit.converged[a, b])])

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    vmax = float(np.nanmax([net.max(), one_pair.max()]))
    for ax, values, title in ((axes[0], net, "network"), (axes[1], one_pair, "theory (one pair of rates)")):
        im = ax.imshow(values.T, origin="lower", vmin=0, vmax=vmax, extent=(0.375, 1.625, -0.125, 1.125),
                       aspect="auto", cmap="viridis")
        ax.set(xlabel="dx2 (input distance²)", ylabel="dy2 (output distance²)", title=f"final ‖dh‖²: {title}")
    fig.colorbar(im, ax=axes[:2], shrink=0.9)
    ax = axes[2]
    ax.scatter(net[ok], one_pair[ok], c=gy[ok], cmap="plasma", label="one pair of rates")
    good = ok & converged
    ax.scatter(net[good], per_point[good], facecolors="none", edgecolors="k", label="rates fitted per point")
    lim = [0, 1.05 * max(net.max(), one_pair.max())]
    ax.plot(lim, lim, "k:", lw=1)
    ax.set(xlabel="network final ‖dh‖²", ylabel="theory final ‖dh‖²", xlim=lim, ylim=lim,
           title=f"r = {summary(one_pair)[0]:.3f} (colour: dy2)")
    ax.legend(fontsize=8)
    fig.savefig(out / "distance_grid.png", dpi=120, bbox_inches="tight")
    print(f"wrote {out / 'distance_grid.png'}, {out / 'distance_grid.csv'}, {out / 'distance_grid.md'}")


if __name__ == "__main__":
    main()
