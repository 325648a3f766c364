"""The paper's two-point experiments at the paper's size, trained as the authors trained them.

Every row of the authors' settings file (THEORY.md §5; `model_settings/2 points.txt` of
van Rossem & Saxe's repository): the eight architectures/activations, skip and CNN as the authors
define them, dropout, the six gains each at its own learning rate, Adam and the two-layer linear
network — width 500 (narrow: 50), full-batch gradient descent in float32 (PyTorch's precision)
with PyTorch's kink convention, then the reduced theory fitted to each run (float64).

Protocols (the learning-rate ladder; `t = lr · epoch` is the gradient-flow clock of every run):
- `lr/2`: the authors' trajectory figures (their notebook halves the settings file's lr and doubles
  its epochs) — over `--seeds` seeds; the universality table's main columns.
- `lr` and `lr/4` (4× the epochs): the same gradient-flow time at a larger and a smaller step, over
  `--ladder-seeds` seeds: does the verdict depend on the step size (GD → flow)?
- `flow`: the exact gradient flow (float64, Tsit5, rtol 1e-5) to the same time, for the smooth rows,
  where it is well defined; `kink`: lr/2 with the right slope at exactly 0 instead of PyTorch's left
  one, for the piecewise-linear rows (`--flow-seeds` seeds each).

Verdict rule, fixed before any number: the worst normalised error (RMSE / range of the network's
curve) over h, y, w and the loss; *tracks* ≤ 5 %, *rough* ≤ 15 %, *fails* above; *plateau* when the
network has not learnt the target difference by the end of its run (final y not within 10 % of dy2),
which tests nothing. A fit whose optimiser did not converge (`converged` in fits.csv) is judged by
its best errors: the theory could not follow the curves.

    python examples/paper.py --out docs/results/paper            # the committed results (hours on 2 CPU cores)
    python examples/paper.py --fast --out /tmp/paper             # a smoke run: width 16, depth 4, few epochs

Every run is stored in `--out/runs/` the moment it finishes (an interrupted invocation resumes where
it stopped); `trajectories.csv` (every run's observed curves) and `fits.csv` (one line per run) are
then rewritten, and the tables (`universality.md`) and figures (`universality.png`,
`gain_series.png`) are made from those two files alone: `--report-only` remakes them from the
committed CSVs without training anything. In both CSVs `lr` is 0 and `epochs` holds the solver's steps
for the `flow` protocol; `seconds` is the training time of the run.
"""

import argparse
import csv
import math
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

DX2, DY2 = fs.experiments.DX2, fs.experiments.DY2
ROWS = list(fs.experiments.PAPER_ROWS)
GAIN_ROWS = ["gain_0.9", "default", "gain_1.1", "gain_1.2", "gain_1.3", "gain_1.4", "gain_1.6"]
PROTOCOLS = {"lr/2": 0.5, "lr": 1.0, "lr/4": 0.25}  # learning-rate factor; epochs scale by its inverse
# The exact gradient flow (the lr → 0 limit) where it is well defined: smooth activations, plain GD rows.
SMOOTH_ROWS = [r for r in ROWS if fs.experiments.SETTINGS[r].activation in ("tanh", "elu", "silu", "none")
               and fs.experiments.SETTINGS[r].optimizer == "sgd"]
FLOW_RTOL = 1e-5
# The kink convention (the paper's second input puts every unit exactly on the kink at t = 0): the
# piecewise-linear rows rerun at lr/2 with the right slope at 0 (JAX's convention) instead of PyTorch's left.
KINK_ROWS = [r for r in ROWS if fs.experiments.SETTINGS[r].activation in ("leaky_relu", "relu")
             and fs.experiments.SETTINGS[r].optimizer == "sgd"]
RESTART_ABOVE = 0.3  # worst error of h, y, w above which a fit is restarted from RESTARTS
RESTARTS = [(0.1, 1.0), (1.0, 10.0), (1.0, 0.1), (10.0, 1.0)]
SAMPLES = 300  # observations per run (the authors observe every epoch; the fit needs far fewer)
CURVES = ("h", "y", "w", "m", "loss")
FIT_KEYS = ["row", "protocol", "seed", "lr", "epochs", "t1", "ok", "converged", "eta_h", "eta_h_se", "eta_y",
            "eta_y_se", "eta_mean", "err_h", "err_y", "err_w", "err_loss", "worst", "verdict", "h0", "y0",
            "h_final", "A_low", "A_high", "h_inf", "seconds"]


def verdict(worst: float) -> str:
    if not math.isfinite(worst):
        return "no fit"  # nothing to fit (a diverged run, or data the fit refuses)
    return "tracks" if worst <= 0.05 else "rough" if worst <= 0.15 else "fails"


def learned(run: dict) -> bool:
    """Whether the network learnt the target difference: final y within 10 % of dy2 and |w| ≤ 0.1·dy2."""
    return abs(run["y"][-1] - DY2) <= 0.1 * DY2 and abs(run["w"][-1]) <= 0.1 * DY2


def train_flow(row: str, seed: int, fast: bool) -> dict:
    """The exact gradient flow of one network (float64, Tsit5) to the same time t = lr · epochs."""
    sizes = dict(width=16, depth=4) if fast else {}
    exp = fs.experiments.two_points(row, key=jax.random.key(seed), **sizes)
    t1 = exp.lr * (60 if fast else exp.epochs)
    ts = jnp.linspace(0.0, t1, (30 if fast else SAMPLES) + 1)
    start = time.perf_counter()
    sol = fs.gradient_flow(exp.model, exp.inputs, exp.targets, t1, ts=ts, layer=exp.layer, rtol=FLOW_RTOL,
                           atol=1e-3 * FLOW_RTOL, max_steps=200_000, throw=False)
    return {"row": row, "protocol": "flow", "seed": seed, "lr": 0.0, "epochs": int(sol.stats["num_steps"]),
            "ok": bool(sol.result == fs.RESULTS.successful), "ts": np.asarray(sol.ts, np.float64),
            **{k: np.asarray(sol.observed[k], np.float64) for k in CURVES}, "seconds": time.perf_counter() - start}


def train(row: str, protocol: str, seed: int, fast: bool) -> dict:
    """One network trained by full-batch GD (Adam for the adam row; dropout's masks drawn per step)."""
    if protocol == "flow":
        return train_flow(row, seed, fast)
    factor = PROTOCOLS["lr/2" if protocol == "kink" else protocol]
    sizes = dict(width=64 if row == "cnn" else 16, depth=4) if fast else {}
    if protocol == "kink":
        sizes["activation"] = fs.experiments.SETTINGS[row].activation + "_right"
    exp = fs.experiments.two_points(row, key=jax.random.key(seed), dtype=jnp.float32, **sizes)
    epochs = (60 if fast else exp.epochs)
    lr, epochs = exp.lr * factor, int(round(epochs / factor))
    optimizer = None
    if exp.setting.optimizer == "adam":
        import optax

        optimizer = optax.adam(lr)
    every = max(1, epochs // (30 if fast else SAMPLES))
    start = time.perf_counter()
    gd = fs.gradient_descent(exp.model, exp.inputs, exp.targets, lr, epochs, layer=exp.layer, every=every,
                             optimizer=optimizer, key=jax.random.key(10_000 + seed) if exp.stochastic else None,
                             throw=False)
    run = {"row": row, "protocol": protocol, "seed": seed, "lr": lr, "epochs": epochs,
           "ok": bool(gd.result == fs.RESULTS.successful), "ts": np.asarray(gd.ts, np.float64),
           **{k: np.asarray(gd.observed[k], np.float64) for k in CURVES}}
    run["seconds"] = time.perf_counter() - start
    return run


def fit(run: dict) -> dict:
    """The reduced theory fitted to one run (η_h, η_y, η̄ in gradient-flow time), its errors, and the
    closed-form fixed point with the fitted rates against the network's final ‖dh‖²."""
    ts = run["ts"]
    out = {k: run[k] for k in ("row", "protocol", "seed", "lr", "epochs", "ok", "seconds")}
    out |= {"t1": float(ts[-1]), "h0": float(run["h"][0]), "y0": float(run["y"][0]),
            "h_final": float(run["h"][-1])}
    nan = float("nan")
    empty = {k: nan for k in ("eta_h", "eta_h_se", "eta_y", "eta_y_se", "eta_mean", "err_h", "err_y", "err_w",
                              "err_loss", "worst", "A_low", "A_high", "h_inf")}
    if not run["ok"]:
        return out | empty | {"converged": False, "verdict": "diverged"}
    m = np.maximum(run["m"], 0.0)
    try:
        f = fs.fit_effective_rates(ts, run["h"], run["y"], run["w"], DX2, DY2, m=m)
    except ValueError as e:  # data the theory cannot take (e.g. curves that never move): said, not fitted
        print(f"  {run['row']} {run['protocol']} seed {run['seed']}: not fitted: {e}")
        return out | empty | {"converged": False, "verdict": "no fit"}
    if not bool(f.converged) or max(float(f.errors[k]) for k in ("h", "y", "w")) > RESTART_ABOVE:
        # A poor local minimum or a failed start: restart from a grid of rates, as the authors do
        # (they scan 100 guesses; four more starts here), and keep the converged fit of least residual.
        for init in RESTARTS:
            g = fs.fit_effective_rates(ts, run["h"], run["y"], run["w"], DX2, DY2, m=m, init=init)
            usable = bool(g.converged) and float(g.eta_h) > 0 and float(g.eta_y) > 0
            if usable and (not bool(f.converged) or float(g.residual) < float(f.residual)):
                f = g
    errors = {k: float(f.errors[k]) for k in ("h", "y", "w", "loss")}
    worst = max(errors.values())
    try:
        a_low, a_high, h_inf = f.theory.fixed_point(run["h"][0], run["y"][0])
    except ValueError:  # rates that under- or overflowed (a fit the theory could not make): no fixed point
        a_low = a_high = h_inf = nan
    return out | {
        "converged": bool(f.converged), "eta_h": float(f.eta_h), "eta_h_se": float(f.eta_h_se),
        "eta_y": float(f.eta_y), "eta_y_se": float(f.eta_y_se), "eta_mean": float(f.eta_mean),
        **{f"err_{k}": v for k, v in errors.items()}, "worst": worst,
        # A run still on its plateau (the output difference not learned by the end) is no test of the
        # theory's dynamics: said as such. A fit that did not converge is judged by its best errors.
        "verdict": verdict(worst) if learned(run) else "plateau",
        "A_low": float(a_low), "A_high": float(a_high), "h_inf": float(h_inf),
    }


def load_runs(out: pathlib.Path) -> dict[tuple, dict]:
    """Every finished run: the store's files, else the committed trajectories.csv."""
    runs: dict[tuple, dict] = {}
    table = out / "trajectories.csv"
    if table.exists():
        data = np.genfromtxt(table, delimiter=",", names=True, dtype=None, encoding="utf-8")
        for key in sorted({(str(r["row"]), str(r["protocol"]), int(r["seed"])) for r in data}):
            sel = data[(data["row"] == key[0]) & (data["protocol"] == key[1]) & (data["seed"] == key[2])]
            runs[key] = {"row": key[0], "protocol": key[1], "seed": key[2], "lr": float(sel["lr"][0]),
                         "epochs": int(sel["epochs"][0]), "ok": bool(sel["ok"][0]),
                         "seconds": float(sel["seconds"][0]), "ts": sel["t"].astype(float),
                         **{k: sel[k].astype(float) for k in CURVES}}
    for file in sorted((out / "runs").glob("*.npz")):
        stored = np.load(file, allow_pickle=False)
        run = {k: stored[k] for k in stored.files}
        run = {**{k: run[k] for k in ("ts", *CURVES)}, "row": str(run["row"]), "protocol": str(run["protocol"]),
               "seed": int(run["seed"]), "lr": float(run["lr"]), "epochs": int(run["epochs"]),
               "ok": bool(run["ok"]), "seconds": float(run["seconds"])}
        runs[(run["row"], run["protocol"], run["seed"])] = run
    return runs


def store(run: dict, out: pathlib.Path) -> None:
    name = f"{run['row']}-{run['protocol'].replace('/', '_')}-seed{run['seed']}"
    tmp = out / "runs" / f"{name}.tmp.npz"
    np.savez(tmp, **run)
    tmp.replace(out / "runs" / f"{name}.npz")  # atomic: a killed run leaves no half file under the final name


def write_csvs(runs: dict, fits: list[dict], out: pathlib.Path) -> None:
    with open(out / "trajectories.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "protocol", "seed", "lr", "epochs", "ok", "seconds", "t", *CURVES])
        for run in runs.values():
            for i in range(len(run["ts"])):
                w.writerow([run["row"], run["protocol"], run["seed"], f"{run['lr']:.6g}", run["epochs"],
                            int(run["ok"]), f"{run['seconds']:.2f}", f"{run['ts'][i]:.8g}",
                            *(f"{run[k][i]:.8g}" for k in CURVES)])
    with open(out / "fits.csv", "w", newline="") as f:
        w = csv.DictWriter(f, FIT_KEYS)
        w.writeheader()
        for r in fits:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items() if k in FIT_KEYS})


def read_fits(out: pathlib.Path) -> list[dict]:
    with open(out / "fits.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in FIT_KEYS:
            if k in ("row", "protocol", "verdict"):
                continue
            if k in ("ok", "converged"):
                r[k] = r[k] == "True"
            else:
                r[k] = float(r[k])
    return rows


def ms(values) -> str:
    values = np.asarray([v for v in values if math.isfinite(v)])
    if values.size == 0:
        return "–"
    return f"{values.mean():.3g} ± {values.std():.2g}" if values.size > 1 else f"{values[0]:.3g}"


def report(out: pathlib.Path, fast: bool) -> str:
    """The universality table (lr/2 over seeds, with the ladder's verdicts) from fits.csv."""
    fits = read_fits(out)
    by = {}
    for r in fits:
        by.setdefault((r["row"], r["protocol"]), []).append(r)
    lines = [
        "Verdict: worst normalised error (RMSE / range) over h, y, w and the loss — *tracks* ≤ 5 %, "
        "*rough* ≤ 15 %, *fails* above; *plateau*: the run ended before the network learnt the target "
        "difference (such runs test nothing and are left out of the row's numbers). Main columns: protocol "
        "lr/2 (the authors' figures), mean ± sd over the seeds that learnt; the row's verdict is that of their "
        "mean worst error; η in gradient-flow time (t = lr · epoch). Ladder: the verdicts of every run at lr, "
        "lr/2 and lr/4, of the exact gradient flow (smooth rows) and of lr/2 with the other kink convention "
        "(piecewise-linear rows: slope 1 at exactly 0); – where not run. *robust*: every run gets one verdict; "
        "otherwise what changes it (seeds, lr, flow, kink).",
        "",
        "| row | seeds (plateau) | err h | err y | err w | err loss | η_h | η_y | η_h/η_y | final ‖dh‖²: network | "
        "closed form (fitted η) | verdict lr/2 | ladder lr · lr/2 · lr/4 · flow · kink | robust |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        runs_here = by.get((row, "lr/2"), [])
        if not runs_here:
            continue
        main = [r for r in runs_here if r["verdict"] != "plateau"]
        verdicts = {p: [r["verdict"] for r in by.get((row, p), [])] for p in ("lr", "lr/2", "lr/4", "flow", "kink")}
        reasons = []
        if len(set(verdicts["lr/2"])) > 1:
            reasons.append("seeds")
        for protocol, why in (("lr", "lr"), ("lr/4", "lr"), ("flow", "flow"), ("kink", "kink")):
            if not set(verdicts[protocol]) <= set(verdicts["lr/2"]) and why not in reasons:
                reasons.append(why)
        robust = "yes" if not reasons else "no: " + ", ".join(reasons)
        worst = [r["worst"] for r in main]
        ladder = " · ".join(("/".join(sorted(set(v))) if v else "–") for v in verdicts.values())
        row_verdict = verdict(float(np.mean(worst))) if worst else "plateau"
        lines.append(
            f"| {row} | {len(runs_here)} ({len(runs_here) - len(main)}) | "
            + " | ".join(ms([r[f"err_{k}"] for r in main]) for k in ("h", "y", "w", "loss"))
            + f" | {ms([r['eta_h'] for r in main])} | {ms([r['eta_y'] for r in main])} | "
            + f"{ms([r['eta_h'] / r['eta_y'] for r in main])} | {ms([r['h_final'] for r in main])} | "
            + f"{ms([r['h_inf'] for r in main])} | {row_verdict} "
            + f"({sum(v == 'tracks' for v in verdicts['lr/2'])}/{len(runs_here)} tracks) | {ladder} | {robust} |"
        )
    table = "\n".join(lines)
    (out / "universality.md").write_text(table + "\n")
    figures(out, by)
    return table


def figures(out: pathlib.Path, by: dict) -> None:
    runs = load_runs(out)
    shown = [row for row in ROWS if (row, "lr/2", 0) in runs]
    if not shown:
        return
    cols = 5
    nrows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.7 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, shown):
        run = runs[(row, "lr/2", 0)]
        fitted = [r for r in by.get((row, "lr/2"), []) if r["seed"] == 0.0]
        for k, color in zip(("h", "y", "w"), ("C0", "C1", "C2")):
            ax.plot(run["ts"], run[k], color=color, label=k)
        if fitted and math.isfinite(fitted[0]["eta_h"]):
            r = fitted[0]
            theory = fs.EffectiveTheory(r["eta_h"], r["eta_y"], DX2, DY2)
            sol = fs.solve_theory(theory, [run["h"][0], run["y"][0], run["w"][0]], float(run["ts"][-1]),
                                  ts=run["ts"], throw=False)
            for k, color in zip(("h", "y", "w"), ("C0", "C1", "C2")):
                ax.plot(run["ts"], np.asarray(getattr(sol, k)), color=color, ls="--")
            ax.set_title(f"{row}: {r['verdict']} ({r['worst']:.1%})", fontsize=9)
        else:
            ax.set_title(f"{row}: no fit", fontsize=9)
        ax.set_xlabel("t = lr · epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("network trained by GD (solid) and the fitted reduced theory (dashed); seed 0, lr/2 protocol")
    fig.tight_layout()
    fig.savefig(out / "universality.png", dpi=100)
    plt.close(fig)

    gains = [(row, fs.experiments.SETTINGS[row].gain) for row in GAIN_ROWS if by.get((row, "lr/2"))]
    if gains:
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
        for row, g in gains:
            rs = by[(row, "lr/2")]
            a.plot([g] * len(rs), [r["h0"] for r in rs], "o", mfc="none", color="0.5", ms=5)
            a.plot([g] * len(rs), [r["h_final"] for r in rs], "o", color="k", ms=4)
            a.plot([g] * len(rs), [r["h_inf"] for r in rs], "x", color="C3", ms=6)
            b.plot([g] * len(rs), [r["worst"] for r in rs], "o", color="C0", ms=4)
        a.plot([], [], "o", mfc="none", color="0.5", label="network at t = 0 (the lazy answer)")
        a.plot([], [], "o", color="k", label="network, end of training")
        a.plot([], [], "x", color="C3", label="closed form h(∞), fitted rates")
        a.set_yscale("log")
        a.set_xlabel("initial weight gain")
        a.set_ylabel("final ‖dh‖²")
        a.legend(fontsize=8)
        b.axhline(0.05, color="g", lw=0.8, ls=":")
        b.axhline(0.15, color="r", lw=0.8, ls=":")
        b.set_yscale("log")
        b.set_xlabel("initial weight gain")
        b.set_ylabel("worst normalised fit error")
        fig.suptitle("gain series (each gain at the authors' lr, halved), all seeds")
        fig.tight_layout()
        fig.savefig(out / "gain_series.png", dpi=100)
        plt.close(fig)


def alterations(runs: dict, out: pathlib.Path, seeds: int) -> str:
    """The paper's four altered theories (and this project's others) fitted to the same lr/2 runs:
    each one's worst normalised error and its residual over the true system's (> 1: fits worse)."""
    from flowsolve.alternatives import ALTERNATIVES, PAPER_ALTERNATIVES

    file = out / "alterations.csv"
    keys = ["row", "seed", "alternative", "residual", "worst", "converged"]
    done = {}
    if file.exists():
        with open(file) as f:
            done = {(r["row"], int(r["seed"]), r["alternative"]): r for r in csv.DictReader(f)}
    for row in ROWS:
        for seed in range(seeds):
            run = runs.get((row, "lr/2", seed))
            if run is None or not run["ok"]:
                continue
            for name, field in ALTERNATIVES.items():
                if (row, seed, name) in done:
                    continue
                try:
                    f = fs.fit_effective_rates(run["ts"], run["h"], run["y"], run["w"], DX2, DY2, vector_field=field)
                    r = {"residual": float(f.residual), "converged": bool(f.converged),
                         "worst": max(float(f.errors[k]) for k in ("h", "y", "w"))}
                except ValueError:
                    r = {"residual": float("nan"), "converged": False, "worst": float("nan")}
                done[(row, seed, name)] = {"row": row, "seed": seed, "alternative": name, **r}
        with open(file, "w", newline="") as f:  # after every row: an interruption keeps what was fitted
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(done.values())
    names = list(ALTERNATIVES)[1:]
    lines = [
        "Each altered theory fitted to the same networks (lr/2 protocol) as the true one: median over seeds of "
        "its residual / the true system's residual (> 1: fits worse), and in brackets its worst normalised "
        "error of h, y, w. Columns marked * are the paper's four alterations.",
        "",
        "| row | true system: worst error | " + " | ".join(n + (" *" if n in PAPER_ALTERNATIVES else "")
                                                        for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for row in ROWS:
        seeds_here = sorted({k[1] for k in done if k[0] == row})
        if not seeds_here:
            continue
        def get(name, field):
            return np.asarray([float(done[(row, s, name)][field]) for s in seeds_here if (row, s, name) in done])
        true_res, true_worst = get("true system", "residual"), get("true system", "worst")
        cells = []
        for name in names:
            ratio = get(name, "residual") / true_res
            cells.append(f"{np.nanmedian(ratio):.2f} ({np.nanmedian(get(name, 'worst')):.1%})")
        lines.append(f"| {row} | {np.nanmedian(true_worst):.1%} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (out / "alterations.md").write_text(table + "\n")
    return table


def sorted_fits(fits_by_key: dict) -> list[dict]:
    order = {row: i for i, row in enumerate(ROWS)}
    return sorted(fits_by_key.values(), key=lambda r: (order.get(r["row"], 99), r["protocol"], r["seed"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the lr/2 protocol")
    parser.add_argument("--ladder-seeds", type=int, default=1, help="seeds of the lr and lr/4 protocols")
    parser.add_argument("--ladder-rows", default="all", help="comma-separated rows of the lr and lr/4 protocols")
    parser.add_argument("--flow-seeds", type=int, default=1,
                        help=f"seeds of the exact gradient flow (rows {', '.join(SMOOTH_ROWS)}) and of the other "
                             f"kink convention (rows {', '.join(KINK_ROWS)})")
    parser.add_argument("--alteration-seeds", type=int, default=3,
                        help="seeds of the lr/2 runs to fit the altered theories to (0: none)")
    parser.add_argument("--rows", default="all", help="comma-separated rows, e.g. default,tanh,gain_1.2")
    parser.add_argument("--fast", action="store_true", help="a smoke run: width 16, depth 4, 120 epochs at lr/2")
    parser.add_argument("--refit", action="store_true", help="redo every fit from the stored runs")
    parser.add_argument("--report-only", action="store_true", help="remake tables and figures from the CSVs")
    parser.add_argument("--out", default="paper")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    rows = ROWS if args.rows == "all" else args.rows.split(",")
    unknown = [r for r in rows if r not in fs.experiments.SETTINGS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {ROWS}")
    if args.fast:
        args.seeds, args.ladder_seeds = min(args.seeds, 1), min(args.ladder_seeds, 1)
        args.flow_seeds, args.alteration_seeds = min(args.flow_seeds, 1), min(args.alteration_seeds, 1)
    if not args.report_only:
        runs = load_runs(out)
        jobs = [(row, "lr/2", s) for s in range(args.seeds) for row in rows]
        ladder = rows if args.ladder_rows == "all" else [r for r in rows if r in args.ladder_rows.split(",")]
        jobs += [(row, p, s) for s in range(args.ladder_seeds) for p in ("lr", "lr/4") for row in ladder]
        jobs += [(row, "flow", s) for s in range(args.flow_seeds) for row in rows if row in SMOOTH_ROWS]
        jobs += [(row, "kink", s) for s in range(args.flow_seeds) for row in rows if row in KINK_ROWS]
        todo = [j for j in jobs if j not in runs]
        print(f"{len(jobs)} runs, {len(jobs) - len(todo)} stored, {len(todo)} to train", flush=True)
        fits_by_key = {}
        if (out / "fits.csv").exists() and not args.refit:
            fits_by_key = {(r["row"], r["protocol"], int(r["seed"])): r for r in read_fits(out)}
        for i, job in enumerate(todo):
            run = train(*job, fast=args.fast)
            store(run, out)
            runs[job] = run
            r = fit(run)
            fits_by_key[job] = r
            print(f"[{i + 1}/{len(todo)}] {job[0]:10s} {job[1]:4s} seed {job[2]}: {r['verdict']:7s} "
                  f"worst {r['worst']:.3f}  η_h {r['eta_h']:.3g} ± {r['eta_h_se']:.2g}  η_y {r['eta_y']:.3g}  "
                  f"h_final {r['h_final']:.4g} vs h(∞) {r['h_inf']:.4g}  ({r['seconds']:.0f} s)", flush=True)
            if i % 10 == 9:  # the CSVs follow the store as it grows
                write_csvs(runs, sorted_fits(fits_by_key), out)
        for job, run in runs.items():  # runs stored earlier but not yet fitted
            if job not in fits_by_key:
                fits_by_key[job] = fit(run)
        write_csvs(runs, sorted_fits(fits_by_key), out)
    print(report(out, args.fast))
    if args.alteration_seeds > 0:
        print(alterations(load_runs(out), out, args.alteration_seeds))
    print(f"wrote {out / 'universality.md'}, {out / 'fits.csv'}, {out / 'trajectories.csv'}, figures")


if __name__ == "__main__":
    main()
