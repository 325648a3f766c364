"""The reduced theory's central assumption, measured: alignment, and the lazy baseline, on the paper's rows.

The reduced theory (THEORY.md §2) assumes the decoder's gradient acts along the hidden difference dh:
|cos θ| = 1 between dh and D_yᵀ·r̂ (`EffectiveRates.cos_theta`). The paper states it and does not
measure it. For every MLP row of the authors' two-point settings (width 500; the paper's protocol:
full-batch GD in float32 at lr/2 for twice the epochs, as `examples/paper.py`; seed 0), this records
along the run the alignment and the instantaneous rates (`flowsolve.RatesObserver`), fits the theory
(the same fit and restarts as `paper.py`) and sets the alignment against the fit's worst error. Beside
each run, its lazy baseline: the same GD on the network's tangent model (`flowsolve.tangent_model`,
the first-order Taylor expansion at initialisation, whose dynamics are the tangent kernel's), to show
where the rich dynamics leave the lazy ones.

    python examples/alignment.py --out docs/results/alignment            # resumable; ~30 min on 2 cores
    python examples/alignment.py --out docs/results/alignment --report-only
    python examples/alignment.py --fast                                  # width 16, depth 4, few epochs

Writes `alignment.csv` (one line per row), `alignment_trajectories.csv`, `alignment.md`,
`alignment.png` (|cos θ| along each run, and its mean against the fit error) and `lazy.png` (exact GD,
its lazy baseline and the fitted theory for three rows) into `--out`.
"""

import argparse
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import flowsolve as fs  # noqa: E402
from _many_points import chosen, Store  # noqa: E402
from paper import fit, SAMPLES  # noqa: E402

ROWS = [r for r in fs.experiments.PAPER_ROWS if fs.experiments.SETTINGS[r].model == "MLP"
        and fs.experiments.SETTINGS[r].optimizer == "sgd"]
SHOWN = ("default", "tanh", "two_layer")  # the rows of lazy.png
CURVES = ("h", "y", "w", "m", "loss")


def run(row: str, fast: bool) -> tuple[dict, list[dict]]:
    sizes = dict(width=16, depth=4) if fast else {}
    exp = fs.experiments.two_points(row, key=jax.random.key(0), dtype=jnp.float32, **sizes)
    lr, epochs = exp.lr / 2, (60 if fast else exp.epochs) * 2
    every = max(1, epochs // (30 if fast else SAMPLES))
    start = time.perf_counter()
    gd = fs.gradient_descent(exp.model, exp.inputs, exp.targets, lr, epochs, every=every, throw=False,
                             observe=fs.RatesObserver(exp.layer))
    lazy = fs.gradient_descent(fs.tangent_model(exp.model), exp.inputs, exp.targets, lr, epochs, every=every,
                               layer=exp.layer, throw=False)
    seconds = time.perf_counter() - start
    o = {k: np.asarray(v, np.float64) for k, v in gd.observed.items()}
    z = {k: np.asarray(v, np.float64) for k, v in lazy.observed.items()}
    ts = np.asarray(gd.ts, np.float64)
    fitted = fit({"row": row, "protocol": "lr/2", "seed": 0, "lr": lr, "epochs": epochs,
                  "ok": bool(gd.result == fs.RESULTS.successful), "seconds": seconds, "ts": ts,
                  **{k: o[k] for k in CURVES}})
    theory = {k: np.full_like(ts, np.nan) for k in ("h", "y", "w", "loss")}
    if np.isfinite(fitted["eta_h"]):
        sol = fs.solve_theory(fs.EffectiveTheory(fitted["eta_h"], fitted["eta_y"], fs.experiments.DX2,
                                                 fs.experiments.DY2), [o["h"][0], o["y"][0], o["w"][0]], ts[-1],
                              ts=ts, m0=max(o["m"][0], 0.0), eta_mean=fitted["eta_mean"], throw=False)
        theory = {k: np.asarray(getattr(sol, k)) for k in theory}
    cos = o["cos_theta"]
    moving = np.abs(np.gradient(o["h"], ts)) >= 0.1 * np.max(np.abs(np.gradient(o["h"], ts)))
    line = {"row": row, "activation": exp.setting.activation, "gain": exp.setting.gain, "depth": exp.setting.depth,
            "lr": lr, "epochs": epochs, "verdict": fitted["verdict"], "worst": fitted["worst"],
            "cos0": cos[0], "cos_mean": float(np.mean(cos)), "cos_learning": float(np.mean(cos[moving])),
            "cos_final": cos[-1], "eta_y0": o["eta_y"][0], "eta_y_final": o["eta_y"][-1],
            "eta_h0": o["eta_h"][0], "eta_h_final": o["eta_h"][-1], "fit_eta_h": fitted["eta_h"],
            "fit_eta_y": fitted["eta_y"], "h0": o["h"][0], "h_final": o["h"][-1], "lazy_h_final": z["h"][-1],
            "h_inf": fitted["h_inf"], "loss_final": o["loss"][-1], "lazy_loss_final": z["loss"][-1],
            "seconds": seconds}
    traj = [{"row": row, "t": t, "h": o["h"][i], "y": o["y"][i], "w": o["w"][i], "loss": o["loss"][i],
             "cos_theta": cos[i], "eta_h": o["eta_h"][i], "eta_y": o["eta_y"][i], "lazy_h": z["h"][i],
             "lazy_y": z["y"][i], "lazy_w": z["w"][i], "lazy_loss": z["loss"][i], "theory_h": theory["h"][i],
             "theory_y": theory["y"][i], "theory_w": theory["w"][i], "theory_loss": theory["loss"][i]}
            for i, t in enumerate(ts)]
    return line, traj


def report(out: pathlib.Path) -> str:
    rows = Store(out / "alignment.csv", ("row",)).rows
    traj = Store(out / "alignment_trajectories.csv", ("row",)).rows
    if not rows:
        return "no runs yet\n"
    f = lambda rs, k: np.array([float(r[k]) for r in rs])  # noqa: E731
    lines = ["Seed 0 of each MLP row, the paper's lr/2 protocol (width 500, float32). |cos θ|: the alignment of dh "
             "with the decoder's gradient direction (1 is what the reduced theory assumes); *while learning*: the "
             "mean over the samples where ‖dh‖² moves at ≥ 10 % of its fastest. Fit: worst normalised error of h, y, "
             "w, loss (the reproduction's verdict rule). Lazy: the same GD on the tangent model at initialisation.",
             "", "| row | \\|cos θ\\| at t = 0 | while learning | at the end | fit: worst error (verdict) | "
             "η_y(t): start → end | final ‖dh‖²: network | lazy baseline | closed form h(∞) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['row']} | {float(r['cos0']):.3f} | {float(r['cos_learning']):.3f} | "
                     f"{float(r['cos_final']):.3f} | {float(r['worst']):.3f} ({r['verdict']}) | "
                     f"{float(r['eta_y0']):.3g} → {float(r['eta_y_final']):.3g} | {float(r['h_final']):.4g} | "
                     f"{float(r['lazy_h_final']):.4g} | {float(r['h_inf']):.4g} |")
    ok = [r for r in rows if r["verdict"] not in ("plateau", "diverged", "no fit")]
    if len(ok) > 2:
        c = np.corrcoef(f(ok, "cos_learning"), np.log(f(ok, "worst")))[0, 1]
        lines += ["", f"Across the {len(ok)} rows that learnt: correlation of |cos θ| while learning with the log "
                  f"of the fit's worst error: {c:.2f}."]
    text = "\n".join(lines) + "\n"
    (out / "alignment.md").write_text(text)

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    a.set_prop_cycle(color=plt.cm.tab20(np.linspace(0, 1, len(rows))))
    for r in rows:
        tr = [t for t in traj if t["row"] == r["row"]]
        t = f(tr, "t")
        a.plot(t / t[-1], f(tr, "cos_theta"), lw=1, label=r["row"])
    a.set(xlabel="t / t_end", ylabel="|cos θ|", title="alignment of dh with the decoder's gradient", ylim=(0, 1.02))
    a.legend(fontsize=6, ncol=2)
    for r in ok:
        b.scatter(float(r["cos_learning"]), float(r["worst"]), s=12)
        b.annotate(r["row"], (float(r["cos_learning"]), float(r["worst"])), fontsize=7)
    b.set(xlabel="|cos θ| while learning", ylabel="fit: worst normalised error", yscale="log",
          title="the theory's error against the alignment it assumes")
    for y, label in ((0.05, "tracks"), (0.15, "rough")):
        b.axhline(y, color="grey", lw=0.5, ls=":")
        b.annotate(label, (b.get_xlim()[0], y), fontsize=6, color="grey")
    fig.tight_layout()
    fig.savefig(out / "alignment.png", dpi=110)
    plt.close(fig)

    shown = [r for r in SHOWN if any(x["row"] == r for x in rows)]
    if shown:
        fig, axes = plt.subplots(len(shown), 4, figsize=(15, 2.8 * len(shown)), squeeze=False)
        for i, row in enumerate(shown):
            tr = [t for t in traj if t["row"] == row]
            t = f(tr, "t")
            for j, (k, label) in enumerate((("h", "‖dh‖²"), ("y", "‖dŷ‖²"), ("w", "w"), ("loss", "loss"))):
                ax = axes[i, j]
                ax.plot(t, f(tr, k), label="network (GD)")
                ax.plot(t, f(tr, f"theory_{k}"), "--", label="fitted theory")
                ax.plot(t, f(tr, f"lazy_{k}"), ":", label="lazy baseline")
                ax.set(title=f"{row}: {label}", xlabel="t = lr · epoch")
                if k == "loss":
                    ax.set_yscale("log")
            axes[i, 0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "lazy.png", dpi=100)
        plt.close(fig)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--report-only", action="store_true", help="tables and figures from the CSVs")
    parser.add_argument("--fast", action="store_true", help="width 16, depth 4, 120 epochs")
    parser.add_argument("--out", default="alignment")
    args = parser.parse_args()
    rows = chosen(parser, args.rows, ROWS)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        lines, traj = Store(out / "alignment.csv", ("row",)), Store(out / "alignment_trajectories.csv", ("row",))
        traj.prune(lines)  # a run killed between its two files is redone whole
        for row in rows:
            if lines.has(row=row):
                continue
            line, tr = run(row, args.fast)
            traj.add(tr)
            lines.add([line])
            print(f"{row}: |cos θ| {line['cos0']:.3f} → {line['cos_final']:.3f}, fit {line['worst']:.3f} "
                  f"({line['verdict']}), {line['seconds']:.0f} s", flush=True)
    print(report(out))
    print(f"wrote {out / 'alignment.csv'}, {out / 'alignment.md'}, {out / 'alignment.png'}, {out / 'lazy.png'}")


if __name__ == "__main__":
    main()
