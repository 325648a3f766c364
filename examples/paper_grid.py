"""The final hidden distance over a grid of input and output distances, as the authors ran it.

For each architecture, 25 networks (the authors' grid: ‖dx‖ ∈ linspace(0.5, 1.5, 5), ‖dy*‖ ∈
linspace(0, 1, 5), i.e. dx2 = ‖dx‖², dy2 = ‖dy*‖²; inputs −1, −1 + ‖dx‖, targets 0.6, 0.6 + ‖dy*‖;
a fresh initialisation for every point) are trained by full-batch GD (float32) at the settings
file's lr × `--lr-factor` (default 1/2; the authors use 1/5) until the loss is below 1e-4, for at
most the gradient-flow time of the authors' 40 000 epochs at lr/5; points whose final loss is above
1e-3 are flagged (the authors drop them). The theory predicts each point's final
‖dh‖² from that point's own (h0, y0) with one pair of rates: the mean over seeds of the rates
fitted at the reference point by `examples/paper.py` (its lr/2 protocol — the authors average 50
such fits).

    python examples/paper_grid.py --out docs/results/paper     # after examples/paper.py: the committed results
    python examples/paper_grid.py --out paper --lr-factor 0.2    # the authors' lr/5 (2.5× the CPU time)
    python examples/paper_grid.py --fast --out /tmp/grid       # a smoke run

The loss is checked every `--block` epochs (500), so training stops up to 499 epochs after the
authors' epoch-by-epoch check would. Every point is stored in `--out/grid_runs/` as it finishes
(resumable); `grid.csv`, `grid.md` and `grid.png` are made from the stored points.
"""

import argparse
import csv
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402

DX = np.linspace(0.5, 1.5, 5)
DY = np.linspace(0.0, 1.0, 5)
ROWS = ["default", "tanh", "shallow", "skip"]
THRESHOLD, MAX_EPOCHS, FLAG = 1e-4, 40_000, 1e-3


def mean_rates(out: pathlib.Path, row: str) -> tuple[float, float, int]:
    with open(out / "fits.csv") as f:
        fits = [r for r in csv.DictReader(f) if r["row"] == row and r["protocol"] == "lr/2"
                and r["converged"] == "True" and r["verdict"] != "plateau"]
    if not fits:
        raise SystemExit(f"no converged lr/2 fits of {row!r} in {out / 'fits.csv'}: run examples/paper.py first.")
    return (float(np.mean([float(r["eta_h"]) for r in fits])), float(np.mean([float(r["eta_y"]) for r in fits])),
            len(fits))


def train_point(row: str, i: int, dx: float, dy: float, block: int, lr_factor: float, fast: bool) -> dict:
    sizes = dict(width=16, depth=4) if fast else {}
    exp = fs.experiments.two_points(row, key=jax.random.key(1000 + i), dtype=jnp.float32, **sizes)
    x, y = fs.experiments.two_point_data(dx**2, dy**2, dtype=jnp.float32)
    lr = exp.lr * lr_factor
    observer = fs.TwoPointObserver(exp.layer)
    first = observer(exp.model, x, y)
    model, epochs, loss = exp.model, 0, float(first["loss"])
    start = time.perf_counter()
    max_epochs = 10 * block if fast else int(MAX_EPOCHS * 0.2 / lr_factor)
    while loss >= THRESHOLD and epochs < max_epochs:
        gd = fs.gradient_descent(model, x, y, lr, block, layer=exp.layer, every=block, throw=False)
        model, epochs = gd.model, epochs + block
        last = {k: float(v[-1]) for k, v in gd.observed.items()}
        loss = last["loss"]
        if not np.isfinite(loss):
            break
    if epochs == 0:
        last = {k: float(v) for k, v in first.items()}
    return {"row": row, "point": i, "dx2": dx**2, "dy2": dy**2, "lr": lr, "epochs": epochs,
            "h0": float(first["h"]), "y0": float(first["y"]), "w0": float(first["w"]),
            "h": last["h"], "y": last["y"], "w": last["w"], "loss": loss, "seconds": time.perf_counter() - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--block", type=int, default=500, help="epochs between loss checks")
    parser.add_argument("--lr-factor", type=float, default=0.5,
                        help="learning rate = the row's lr × this (default 1/2; the authors: 1/5, 2.5× the CPU time)")
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--out", default="paper", help="the folder of examples/paper.py's results")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    store = out / "grid_runs"
    store.mkdir(parents=True, exist_ok=True)
    rows = args.rows.split(",")
    block = 20 if args.fast else args.block
    points = {}
    for row in rows:
        for i, (dx, dy) in enumerate((dx, dy) for dx in DX for dy in DY):
            file = store / f"{row}-lr{args.lr_factor:g}-{i}.npz"
            if file.exists():
                stored = np.load(file, allow_pickle=False)
                points[(row, i)] = {k: stored[k].item() for k in stored.files}
                continue
            p = train_point(row, i, float(dx), float(dy), block, args.lr_factor, args.fast)
            tmp = file.with_suffix(".tmp.npz")
            np.savez(tmp, **p)
            tmp.replace(file)
            points[(row, i)] = p
            print(f"{row:8s} point {i:2d} dx2 {p['dx2']:.3f} dy2 {p['dy2']:.3f}: {p['epochs']:5d} epochs, "
                  f"loss {p['loss']:.2g}, h {p['h0']:.3g} → {p['h']:.3g} ({p['seconds']:.0f} s)", flush=True)

    table = [["row", "point", "dx2", "dy2", "lr", "epochs", "loss", "converged", "h0", "y0", "h_final",
              "eta_h", "eta_y", "A_low", "A_high", "h_theory"]]
    lines = [
        "Final ‖dh‖² of the network against the closed form h(∞) = ½A_high + √(¼A_high² + A_low²) with one "
        "pair of rates per architecture (mean of its lr/2 fits at the reference point), over the authors' "
        f"5 × 5 grid, GD at the row's lr × {args.lr_factor:g}; *converged*: final loss ≤ 1e-3 (the authors drop the "
        "others). Lazy baseline: h(∞) = h0.",
        "",
        "| row | rates (mean of n fits) | converged | corr(theory, network) | median rel. error | "
        "max rel. error | lazy baseline: median rel. error |",
        "|---|---|---|---|---|---|---|",
    ]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.3 * len(rows), 3.2), squeeze=False)
    for ax, row in zip(axes[0], rows):
        eta_h, eta_y, n = mean_rates(out, row) if not args.fast else (1.0, 1.0, 0)
        ps = [points[(row, i)] for i in range(len(DX) * len(DY))]
        theory = fs.EffectiveTheory(eta_h, eta_y, jnp.asarray([p["dx2"] for p in ps]),
                                    jnp.asarray([p["dy2"] for p in ps]))
        a_low, a_high, h_inf = (np.asarray(v) for v in theory.fixed_point(
            jnp.asarray([p["h0"] for p in ps]), jnp.asarray([p["y0"] for p in ps])))
        ok = np.asarray([p["loss"] <= FLAG for p in ps])
        net = np.asarray([p["h"] for p in ps])
        h0 = np.asarray([p["h0"] for p in ps])
        for p, lo, hi, th, good in zip(ps, a_low, a_high, h_inf, ok):
            table.append([row, p["point"], f"{p['dx2']:.4g}", f"{p['dy2']:.4g}", f"{p['lr']:.4g}", p["epochs"],
                          f"{p['loss']:.3g}", int(good), f"{p['h0']:.6g}", f"{p['y0']:.6g}", f"{p['h']:.6g}",
                          f"{eta_h:.6g}", f"{eta_y:.6g}", f"{lo:.6g}", f"{hi:.6g}", f"{th:.6g}"])
        rel = np.abs(h_inf[ok] / net[ok] - 1)
        lazy = np.abs(h0[ok] / net[ok] - 1)
        corr = float(np.corrcoef(h_inf[ok], net[ok])[0, 1]) if ok.sum() > 2 else float("nan")

        def pct(fn, values):
            return f"{fn(values):.1%}" if values.size else "–"

        lines.append(f"| {row} | η_h {eta_h:.3g}, η_y {eta_y:.3g} (n = {n}) | {ok.sum()}/{len(ps)} | {corr:.3f} | "
                     f"{pct(np.median, rel)} | {pct(np.max, rel)} | {pct(np.median, lazy)} |")
        ax.scatter(h_inf[ok], net[ok], s=14, label="converged")
        if (~ok).any():
            ax.scatter(h_inf[~ok], net[~ok], s=14, marker="x", color="C3", label="loss > 1e-3")
        top = 1.1 * max(float(np.max(net)), float(np.max(h_inf)))
        ax.plot([0, top], [0, top], ls="--", color="0.6", zorder=0)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("‖dh(∞)‖², theory (closed form)")
        ax.set_ylabel("‖dh‖², network (end of training)")
        ax.set_title(f"{row}: corr {corr:.3f}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"final hidden distance over the 5 × 5 grid of ‖dx‖, ‖dy*‖ (GD at lr × {args.lr_factor:g}; "
                 "one pair of fitted rates per row)")
    fig.tight_layout()
    fig.savefig(out / "grid.png", dpi=100)
    with open(out / "grid.csv", "w", newline="") as f:
        csv.writer(f).writerows(table)
    text = "\n".join(lines)
    (out / "grid.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
