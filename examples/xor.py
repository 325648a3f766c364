"""XOR as van Rossem & Saxe ran it: the final representational distances, network against theory.

The authors' setting (`model_settings/XOR.txt` and `XOR.ipynb` of `loekvanrossem/universality`):
inputs {0, 1}², targets x₁ XOR x₂; an MLP of 20 hidden layers of 500 (ReLU: their notebook builds
the network with `non_linearity=relu`, although the settings file says leaky_relu), Xavier-normal
weights, zero biases, observed at hidden layer 10; full-batch SGD on PyTorch's `MSELoss` (mean of
(ŷ − y)², no ½), float32. Four rows: rich (gain 0.85, lr 0.015, 3000 epochs), intermediate (1.25,
0.002, 1000), lazy (2.0, 3e-9, 1000) and shallow (one hidden layer, gain 0.0015, lr 0.03, 2000
epochs, layer 0) — the paper's example of where the theory fails.

The theory (THEORY.md §3–4) predicts each pair's final distance from the pair's own ‖dx‖, ‖dy*‖, the
network's distances at initialisation and A_low/A_high, with
- the rates **carried over** from the two-point fits of the default row (mean η_h and mean η_y of
  the committed fits in docs/results/paper/fits.csv), as the authors do; and
- the rates **fitted in-sample** to this run's six pairs (median over the pairs' fits) — not the
  authors' method; a second column, to separate "wrong rates" from "wrong theory".

    python examples/xor.py --out docs/results/xor            # 4 rows × 5 seeds (resumable)
    python examples/xor.py --out docs/results/xor --report-only
    python examples/xor.py --fast                            # width 16, depth 4: seconds

Writes `xor.csv` (one line per run), `xor_distances.csv` (one line per run and pair), `xor.md` and
`xor.png` (distance matrices of seed 0: network at t = 0, network final, theory with carried rates,
theory with in-sample rates) into `--out`.
"""

import argparse
import pathlib
import time

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)  # the fits in float64; the networks train in float32

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import flowsolve as fs  # noqa: E402
import models  # noqa: E402
from _many_points import FITS, Store, carried_rates, chosen, distances, fit_pairs, predicted_distances, relative_error, similarity  # noqa: E402

LABELS = ["(0,0)", "(0,1)", "(1,0)", "(1,1)"]
SAMPLES = 201  # observations per run


def torch_mse(model, inputs, targets):
    """PyTorch's `MSELoss()` on the squeezed outputs: mean of (ŷ − y)² (no ½)."""
    return 2.0 * fs.mse_loss(model, inputs, targets)


def run(name: str, seed: int, width: int | None, depth: int | None, epochs: int | None, eta_carried) -> tuple[dict, list]:
    row = fs.experiments.XOR_SETTINGS[name]
    width, depth = width or row.width, depth or row.depth
    epochs = epochs or row.epochs
    layer = row.layer if depth == row.depth else min(row.layer, depth // 2)
    x, y = fs.experiments.xor_data(jnp.float32)
    net = models.MLP(2, 1, width, depth, activation=row.activation, gain=row.gain, key=jax.random.key(seed))
    net = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, net)
    observe = {"hidden": lambda m, xs, ys: jax.vmap(m)(xs)[1][layer],
               "out": lambda m, xs, ys: jax.vmap(m)(xs)[0], "loss": torch_mse}
    every = max(1, epochs // (SAMPLES - 1))
    start = time.perf_counter()
    sol = fs.gradient_descent(net, x, y, row.lr, epochs, observe=observe, loss=torch_mse, every=every, throw=False)
    hidden, out = np.asarray(sol.observed["hidden"], np.float64), np.asarray(sol.observed["out"], np.float64)
    seconds = time.perf_counter() - start
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    net_d, init_d = distances(hidden[-1]), distances(hidden[0])
    carried = predicted_distances(xs, ys, hidden[0], out[0], *eta_carried)
    fitted = fit_pairs(np.asarray(sol.ts), xs, ys, hidden, out, max_pairs=6)
    insample = predicted_distances(xs, ys, hidden[0], out[0], fitted["eta_h"], fitted["eta_y"])
    x_d, y_d = distances(xs), distances(ys)
    line = {
        "setting": name, "seed": seed, "width": width, "depth": depth, "layer": layer, "activation": row.activation,
        "gain": row.gain, "lr": row.lr, "epochs": epochs, "ok": bool(sol.result == fs.RESULTS.successful),
        "loss0": float(sol.observed["loss"][0]), "loss_final": float(sol.observed["loss"][-1]),
        "eta_h_carried": eta_carried[0], "eta_y_carried": eta_carried[1],
        "eta_h_fit": fitted["eta_h"], "eta_y_fit": fitted["eta_y"], "fits_converged": fitted["converged"],
        "fit_worst_median": float(np.median(fitted["worst"])),
        "corr_carried": similarity(carried, net_d), "corr_fit": similarity(insample, net_d),
        "relerr_carried": relative_error(carried, net_d), "relerr_fit": relative_error(insample, net_d),
        "corr_targets": similarity(net_d, y_d), "corr_inputs": similarity(net_d, x_d),
        "corr_initial": similarity(net_d, init_d), "seconds": seconds,
    }
    pairs = [{"setting": name, "seed": seed, "i": i, "j": j, "dx": x_d[i, j], "dy": y_d[i, j],
              "initial": init_d[i, j], "network": net_d[i, j], "theory_carried": carried[i, j],
              "theory_fit": insample[i, j]} for i in range(4) for j in range(i + 1, 4)]
    return line, pairs


def matrix(pairs: list[dict], column: str) -> np.ndarray:
    m = np.zeros((4, 4))
    for p in pairs:
        i, j = int(p["i"]), int(p["j"])
        m[i, j] = m[j, i] = float(p[column])
    return m


def report(out: pathlib.Path, names: list[str]) -> str:
    runs = Store(out / "xor.csv", ("setting", "seed")).rows
    pairs = Store(out / "xor_distances.csv", ("setting", "seed")).rows
    f = lambda rows, k: np.array([float(r[k]) for r in rows])  # noqa: E731
    ms = lambda v: f"{np.nanmean(v):.3g} ± {np.nanstd(v):.2g}" if len(v) > 1 else f"{v[0]:.3g}"  # noqa: E731
    lines = ["Distances ‖h_i − h_j‖ at the observed layer after training; mean ± sd over seeds. *corr*: Pearson "
             "correlation of the six off-diagonal distances; *err.*: |theory − network| / network, the median and the "
             "largest over the six pairs; *same-target pairs*: the network's final distance of the two pairs with "
             "equal targets ((0,0)–(1,1) and (0,1)–(1,0)) over its initial one, against the theory's (which keeps "
             "them where they start when A_high > 0: A_low = 0 there). Carried rates: the mean two-point default-row "
             "fits (the authors' method); in-sample: fitted to this run's six pairs.", "",
             "| setting | seeds | loss 0 → final | theory vs network, carried rates: corr · err. median / max | "
             "in-sample rates: corr · err. median / max | same-target pairs, final/initial: network · theory | "
             "network vs targets | vs inputs | vs initial |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        rows = [r for r in runs if r["setting"] == name]
        if not rows:
            continue
        err = {k: [] for k in ("carried_med", "carried_max", "fit_med", "fit_max", "same_net", "same_theory")}
        for r in rows:
            ps = [p for p in pairs if p["setting"] == name and p["seed"] == r["seed"]]
            net = f(ps, "network")
            for col in ("carried", "fit"):
                rel = np.abs(f(ps, f"theory_{col}") - net) / net
                err[f"{col}_med"].append(np.median(rel))
                err[f"{col}_max"].append(np.max(rel))
            same = [p for p in ps if float(p["dy"]) == 0]
            err["same_net"].append(np.mean(f(same, "network") / f(same, "initial")))
            err["same_theory"].append(np.mean(f(same, "theory_carried") / f(same, "initial")))
        e = {k: np.array(v) for k, v in err.items()}
        lines.append(
            f"| {name} | {len(rows)} | {np.mean(f(rows, 'loss0')):.3g} → {np.mean(f(rows, 'loss_final')):.2g} | "
            f"{ms(f(rows, 'corr_carried'))} · {ms(e['carried_med'])} / {ms(e['carried_max'])} | "
            f"{ms(f(rows, 'corr_fit'))} · {ms(e['fit_med'])} / {ms(e['fit_max'])} | "
            f"{ms(e['same_net'])} · {ms(e['same_theory'])} | {ms(f(rows, 'corr_targets'))} | "
            f"{ms(f(rows, 'corr_inputs'))} | {ms(f(rows, 'corr_initial'))} |")
    first = runs[0] if runs else None
    if first:
        lines += ["", f"Carried rates: η_h = {float(first['eta_h_carried']):.4g}, η_y = {float(first['eta_y_carried']):.4g} "
                  f"(η_h/η_y = {float(first['eta_h_carried']) / float(first['eta_y_carried']):.4g})."]
    text = "\n".join(lines) + "\n"
    (out / "xor.md").write_text(text)
    shown = [n for n in names if any(p["setting"] == n and p["seed"] == "0" for p in pairs)]
    if shown:
        panels = [("initial", "network, t = 0"), ("network", "network, final"),
                  ("theory_carried", "theory, carried rates"), ("theory_fit", "theory, in-sample rates")]
        fig, axes = plt.subplots(len(shown), len(panels), figsize=(2.6 * len(panels), 2.5 * len(shown)), squeeze=False)
        for r, name in enumerate(shown):
            run_pairs = [p for p in pairs if p["setting"] == name and p["seed"] == "0"]
            for c, (column, title) in enumerate(panels):
                m = matrix(run_pairs, column)
                ax = axes[r, c]
                ax.imshow(m, cmap="viridis")
                ax.set_xticks(range(4), LABELS, fontsize=6, rotation=45)
                ax.set_yticks(range(4), LABELS, fontsize=6)
                ax.set_title(f"{title}\nmax {np.nanmax(m):.3g}" if r == 0 else f"max {np.nanmax(m):.3g}", fontsize=8)
                if c == 0:
                    ax.set_ylabel(name)
        fig.suptitle("XOR: ‖h_i − h_j‖ at the observed layer (seed 0; each panel on its own scale)", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "xor.png", dpi=110)
        plt.close(fig)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default=",".join(fs.experiments.XOR_SETTINGS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--width", type=int, default=None, help="override the rows' width (500)")
    parser.add_argument("--depth", type=int, default=None, help="override the deep rows' depth (20)")
    parser.add_argument("--epochs", type=int, default=None, help="override the rows' epochs")
    parser.add_argument("--fits", default=str(FITS), help="two-point fits to carry the rates from")
    parser.add_argument("--report-only", action="store_true", help="tables and figure from the CSVs")
    parser.add_argument("--fast", action="store_true", help="width 16, depth 4, 200 epochs, 1 seed")
    parser.add_argument("--out", default="xor")
    args = parser.parse_args()
    names = chosen(parser, args.settings, fs.experiments.XOR_SETTINGS)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        width, depth, epochs, seeds = args.width, args.depth, args.epochs, args.seeds
        if args.fast:
            width, depth, epochs, seeds = 16, 4, 200, 1
        rates = carried_rates(fits=pathlib.Path(args.fits))
        runs = Store(out / "xor.csv", ("setting", "seed"))
        pairs = Store(out / "xor_distances.csv", ("setting", "seed"))
        pairs.prune(runs)  # a run killed between its two files is redone whole
        for name in names:
            for seed in range(seeds):
                if runs.has(setting=name, seed=seed):
                    continue
                line, pair_rows = run(name, seed, width, None if fs.experiments.XOR_SETTINGS[name].depth == 1 else depth,
                                      epochs, rates[:2])
                pairs.add(pair_rows)
                runs.add([line])
                print(f"{name} seed {seed}: loss {line['loss0']:.3g} → {line['loss_final']:.2g}, theory vs network "
                      f"corr {line['corr_carried']:.3f} (carried), {line['corr_fit']:.3f} (in-sample); "
                      f"{line['seconds']:.1f} s", flush=True)
    print(report(out, names))
    print(f"wrote {out / 'xor.csv'}, {out / 'xor_distances.csv'}, {out / 'xor.md'}, {out / 'xor.png'}")


if __name__ == "__main__":
    main()
