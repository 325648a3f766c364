"""The universality table: one reduced theory, two fitted rates, many architectures (THEORY.md §5).

A variant of the paper's protocol (the paper's own is `examples/paper.py`: GD at width 500): for
every ODE-compatible row of THEORY.md §5 (all activations, narrow, shallow, this project's residual
and 'same'-padded convolutional variants, linear, a gain series, two_layer) and several seeds: the network's exact gradient
flow (`fit_network`: `gradient_flow` → `fit_effective_rates`), the normalised errors of h, y, w and
of the loss (RMSE / range of the network's curve), and the fitted η_h, η_y (mean ± sd over seeds).
The flows are stored; the fits are redone from them on every invocation (seconds).

    python examples/universality.py                      # width 50, 3 seeds: ~25 min on 2 CPU cores
    python examples/universality.py --width 500 --seeds 5  # the paper's width (a GPU's job)

Writes `universality.md` (the table), `universality.csv` (one line per run) and `universality.png`
(network solid, theory dashed, seed 0 of each row) into `--out`. Each finished run is stored in
`--out/runs/` as it completes, so an interrupted run resumes where it stopped.

Verdict column: "tracks" when every normalised error is below 5 %, "rough" below 15 %, else
"fails". The paper expects failures for shallow, two_layer and large gains. The last three
columns compare with the rates *predicted* from the network's tangent kernels at initialisation
(`predict_effective_rates`, no fitting) and give the theory's error when run with those.
"""

import argparse
import csv
import json
import math
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402

DX2, DY2 = fs.experiments.DX2, fs.experiments.DY2
# The project's residual and 'same'-padded variants: the tangent-kernel prediction below needs a network
# that splits at a layer, which the authors' skip and valid CNN networks do not (examples/paper.py runs those).
ROWS = ["default", "shallow", "narrow", "linear", "elu", "tanh", "relu", "swish", "skip_residual", "cnn_same",
        "two_layer"]
GAINS = [0.9, 1.2, 1.6]


def gain_lr(gain: float) -> float:
    """The gain series' learning rate: the paper's range 0.03 (gain 0.9) … 3e-6 (gain 1.6),
    interpolated log-linearly in between (the intermediate values are this example's choice)."""
    return 0.03 * (3e-6 / 0.03) ** ((gain - 0.9) / 0.7)


def experiments(width: int):
    for name in ROWS:
        yield name, dict(setting=name, width=None if name == "narrow" else width)
    for gain in GAINS:
        yield f"gain_{gain}", dict(setting="default", width=width, gain=gain, lr=gain_lr(gain))


def flow_one(label: str, spec: dict, seed: int, rtol: float, folder: pathlib.Path) -> dict:
    """The network's exact flow (the expensive part), stored as soon as it is done."""
    file = folder / f"{label}-seed{seed}.npz"
    if file.exists():
        stored = np.load(file, allow_pickle=False)
        run = json.loads(str(stored["summary"])) | {k: stored[k] for k in stored.files if k != "summary"}
        if "net_m" not in run and "net_loss" in run:  # files from before m was stored: L = ½m + ¼(w + ½(dy2 − y))
            m = 2 * (run["net_loss"] - 0.25 * (run["net_w"] + 0.5 * (DY2 - run["net_y"])))
            run["net_m"] = np.maximum(m, 0.0)  # the identity leaves rounding-level negatives
        return run
    exp = fs.experiments.two_points(spec["setting"], key=jax.random.key(seed), width=spec.get("width"),
                                    gain=spec.get("gain"), lr=spec.get("lr"))
    start = time.perf_counter()
    run = {"row": label, "seed": seed, "width": exp.setting.width, "depth": exp.setting.depth,
           "gain": exp.setting.gain, "t1": exp.t1}
    try:
        flow = fs.gradient_flow(exp.model, exp.inputs, exp.targets, exp.t1, ts=np.linspace(0, exp.t1, 201),
                                layer=exp.layer, rtol=rtol, atol=1e-3 * rtol)
    except RuntimeError as e:  # a failed flow: reported and kept, the other runs go on
        print(f"{label} seed {seed}: {e}")
        run |= {"flow_ok": False, "flow_steps": -1, "seconds": time.perf_counter() - start}
        np.savez(file, summary=json.dumps(run))
        return run
    run |= {"flow_ok": True, "flow_steps": int(flow.stats["num_steps"]), "seconds": time.perf_counter() - start}
    curves = {"ts": np.asarray(flow.ts), **{f"net_{k}": np.asarray(v) for k, v in flow.observed.items()}}
    np.savez(file, summary=json.dumps(run), **curves)
    return run | curves


def fit_one(run: dict, spec: dict) -> dict:
    """Fit the theory to a stored flow, and predict the rates from the network at initialisation
    (both cheap: redone on every invocation)."""
    nan = float("nan")
    if not run["flow_ok"]:
        return run | {"converged": False, **{k: nan for k in ("eta_h", "eta_y", "eta_mean", "pred_eta_h",
                                                                "pred_eta_y", "pred_eta_mean", "pred_err")},
                      **{f"err_{k}": nan for k in ("h", "y", "w", "m", "loss")}}
    ts = run["ts"]
    fit = fs.fit_effective_rates(ts, run["net_h"], run["net_y"], run["net_w"], DX2, DY2, m=run["net_m"])
    theory = fit.predict(ts, throw=False)
    # Predicted at initialisation (no fitting): the tangent-kernel rates of the same network.
    exp = fs.experiments.two_points(spec["setting"], key=jax.random.key(run["seed"]), width=spec.get("width"),
                                    gain=spec.get("gain"), lr=spec.get("lr"))
    pred = fs.predict_effective_rates(exp.model, exp.inputs, exp.targets, exp.layer)
    state0 = [run["net_h"][0], run["net_y"][0], run["net_w"][0]]
    predicted = fs.solve_theory(fs.EffectiveTheory(pred.eta_h, pred.eta_y, DX2, DY2), state0, ts[-1], ts=ts,
                                m0=run["net_m"][0], eta_mean=pred.eta_mean, throw=False)
    pred_err = max(normalised_error(np.asarray(getattr(predicted, k)), run[f"net_{k}"]) for k in ("h", "y", "w"))
    if not bool(predicted.result == fs.RESULTS.successful):
        pred_err = nan
    return run | {
        "converged": bool(fit.converged), "eta_h": float(fit.eta_h), "eta_y": float(fit.eta_y),
        "eta_mean": float(fit.eta_mean), **{f"err_{k}": float(v) for k, v in fit.errors.items()},
        **{f"theory_{k}": np.asarray(getattr(theory, k)) for k in ("h", "y", "w", "loss")},
        "pred_eta_h": float(pred.eta_h), "pred_eta_y": float(pred.eta_y), "pred_eta_mean": float(pred.eta_mean),
        "pred_err": pred_err, **{f"pred_{k}": np.asarray(getattr(predicted, k)) for k in ("h", "y", "w")},
    }


def normalised_error(model: np.ndarray, observed: np.ndarray) -> float:
    return float(np.sqrt(np.mean((model - observed) ** 2)) / np.ptp(observed))


def verdict(errors: list[float]) -> str:
    worst = max(errors)
    return "tracks" if worst < 0.05 else "rough" if worst < 0.15 else "fails"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--rows", default="all", help="comma-separated labels, e.g. default,tanh,gain_1.2")
    parser.add_argument("--out", default="universality")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    specs = list(experiments(args.width))
    if args.rows != "all":
        wanted = args.rows.split(",")
        specs = [s for s in specs if s[0] in wanted]

    results: dict[str, list[dict]] = {}
    for label, spec in specs:
        for seed in range(args.seeds):
            r = fit_one(flow_one(label, spec, seed, args.rtol, out / "runs"), spec)
            results.setdefault(label, []).append(r)
            print(f"{label:10s} seed {seed}: err h {r['err_h']:.3f} y {r['err_y']:.3f} w {r['err_w']:.3f} "
                  f"loss {r['err_loss']:.3f}  η_h {r['eta_h']:.3g} η_y {r['eta_y']:.3g} "
                  f"(predicted {r['pred_eta_h']:.3g}, {r['pred_eta_y']:.3g}: err {r['pred_err']:.3f})  "
                  f"({r['flow_steps']} steps, {r['seconds']:.0f} s)", flush=True)

    keys = ["row", "seed", "width", "depth", "gain", "t1", "flow_ok", "converged", "eta_h", "eta_y", "eta_mean",
            "err_h", "err_y", "err_w", "err_m", "err_loss", "pred_eta_h", "pred_eta_y", "pred_eta_mean", "pred_err",
            "flow_steps", "seconds"]
    with open(out / "universality.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys, extrasaction="ignore")
        writer.writeheader()
        for runs in results.values():
            writer.writerows(runs)

    def ms(values):
        values = np.asarray(values)
        return f"{values.mean():.3g} ± {values.std():.2g}"

    lines = [
        f"Exact gradient flows (Tsit5, rtol {args.rtol:g}), width {args.width} (narrow: 50), "
        f"{args.seeds} seeds; errors are RMSE / range of the network's curve, mean ± sd over seeds.",
        "",
        "| row | depth | gain | err h | err y | err w | err loss | η_h | η_y | verdict | η_h predicted | η_y predicted | err with predicted rates |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, runs in results.items():
        errs = [max(r["err_h"], r["err_y"], r["err_w"], r["err_loss"]) for r in runs]
        flags = "" if all(r["flow_ok"] and r["converged"] for r in runs) else " (a run failed)"
        lines.append(
            f"| {label} | {runs[0]['depth']} | {runs[0]['gain']:g} | "
            + " | ".join(ms([r[f"err_{k}"] for r in runs]) for k in ("h", "y", "w", "loss"))
            + f" | {ms([r['eta_h'] for r in runs])} | {ms([r['eta_y'] for r in runs])} | "
            + f"{verdict([float(np.mean(errs))])}{flags} | "
            + f"{ms([r['pred_eta_h'] for r in runs])} | {ms([r['pred_eta_y'] for r in runs])} | "
            + f"{ms([r['pred_err'] for r in runs])} |"
        )
    table = "\n".join(lines)
    (out / "universality.md").write_text(table + "\n")
    print(table)

    n = len(results)
    cols = 4
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, (label, runs) in zip(axes.flat, results.items()):
        c = runs[0]
        if not c["flow_ok"]:
            ax.set_title(f"{label}: the flow failed", fontsize=9)
            continue
        for k, color in zip(("h", "y", "w"), ("C0", "C1", "C2")):
            ax.plot(c["ts"], c[f"net_{k}"], color=color, label=k)
            ax.plot(c["ts"], c[f"theory_{k}"], color=color, ls="--")
            ax.plot(c["ts"], c[f"pred_{k}"], color=color, ls=":", lw=1)
        ax.set_title(f"{label} (err ≤ {max(runs[0]['err_h'], runs[0]['err_y'], runs[0]['err_w']):.2f})", fontsize=9)
        ax.set_xlabel("gradient-flow time")
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("network (solid), fitted theory (dashed), theory with rates predicted at init (dotted)")
    fig.tight_layout()
    fig.savefig(out / "universality.png", dpi=110)
    print(f"wrote {out / 'universality.md'}, {out / 'universality.csv'}, {out / 'universality.png'}")


if __name__ == "__main__":
    main()
