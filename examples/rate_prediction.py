"""Can the effective rates be predicted from the network instead of fitted? Measured on the paper's rows.

Reads the runs `examples/alignment.py` recorded (seed 0 of every MLP row of the authors' two-point
settings, width 500, GD at lr/2 for twice the epochs; `alignment_trajectories.csv`: the network's h, y, w,
its instantaneous kernel rates η_h(t), η_y(t) and alignment |cos θ|(t), and the fitted theory) and runs,
from the network's own state at t = 0, each candidate prediction against the network:

- `fitted`: the reduced theory with the rates least-squares fitted to the whole run (the reference);
- `kernel, aligned`: the rates read off the tangent kernels at t = 0 (`predict_effective_rates`), the
  reduced theory (`solve_theory`): what `predict_effective_rates` offered so far;
- `kernel, unaligned`: the same rates in the model without the alignment assumption
  (`solve_unaligned`, q0 = ‖D_y‖² = y0/(h0·cos²θ0) measured at t = 0);
- `early 10 %, unaligned`: the rates averaged (geometric mean) over the first 10 % of the run, the
  unaligned model: a forecast from the start of the run, not a prediction from initialisation;
- `kernel(t), unaligned` and `kernel(t), aligned`: the instantaneous rates measured along the whole run
  fed into the models (no prediction at all: the best any rates read off the kernels could do in them);
- `kernel, mean and difference`: the two-point kernel model (`predict_gram_model`, `solve_gram`: both
  points' hidden states, the decoder's gradient and the output offset, so the mean's error drives the
  difference) read off the network at initialisation (the same network as `examples/alignment.py`
  builds: seed 0, float32, read in float64).

Error: the worst normalised error (RMSE/range) of h, y, w, as the fit's. Target: within 1.5× of the
fitted theory's error, and the final ‖dh‖² within 10 % of the network's.

    python examples/rate_prediction.py --out docs/results/alignment     # about 2 min on 2 cores; needs alignment_trajectories.csv

Writes `prediction.csv`, `prediction.md` and `prediction.png` into `--out`.
"""

import argparse
import csv
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import flowsolve as fs  # noqa: E402
from flowsolve._unaligned import _vector_field as unaligned_field  # noqa: E402

DX2, DY2 = fs.experiments.DX2, fs.experiments.DY2
EARLY = 0.1
METHODS = ("fitted", "kernel, aligned", "kernel, unaligned", "early 10 %, unaligned", "kernel(t), aligned",
           "kernel(t), unaligned", "kernel, mean and difference")


def error(model: np.ndarray, observed: np.ndarray) -> float:
    return float(np.sqrt(np.mean((model - observed) ** 2)) / (observed.max() - observed.min()))


def varying(o: dict, aligned: bool) -> np.ndarray | None:
    """The model with the rates measured along the run, interpolated linearly in time."""
    ts = jnp.asarray(o["t"])
    eh, ey = jnp.asarray(o["eta_h"]), jnp.asarray(o["eta_y"])

    def theory(t):
        return fs.EffectiveTheory(jnp.interp(t, ts, eh), jnp.interp(t, ts, ey), DX2, DY2)

    if aligned:
        field = lambda t, s, _: theory(t).vector_field(t, s)  # noqa: E731
        y0 = jnp.asarray([o["h"][0], o["y"][0], o["w"][0]])
    else:
        field = lambda t, s, _: unaligned_field(t, s, theory(t))  # noqa: E731
        y0 = jnp.asarray([o["h"][0], (o["y"][0] - o["w"][0]) / DY2**0.5, q0(o)])
    sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Kvaerno5(), 0.0, ts[-1], None, y0,
                              saveat=diffrax.SaveAt(ts=ts), max_steps=200_000, throw=False,
                              stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=1e-12, jump_ts=ts))
    if sol.result != diffrax.RESULTS.successful:
        return None
    ys = np.asarray(sol.ys)
    if aligned:
        return ys.T
    p = ys[:, 1]
    return np.array([ys[:, 0], p**2, p * (p - DY2**0.5)])


def gram(row: str, o: dict) -> tuple[np.ndarray | None, float]:
    """The two-point kernel model read off the row's network at initialisation, solved along the run."""
    exp = fs.experiments.two_points(row, key=jax.random.key(0), dtype=jnp.float32)
    to64 = lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a  # noqa: E731
    net, inputs, targets = (jax.tree_util.tree_map(to64, v) for v in (exp.model, exp.inputs, exp.targets))
    model = fs.predict_gram_model(net, inputs, targets, exp.layer)
    sol = fs.solve_gram(model, o["t"][-1], ts=o["t"], solver=diffrax.Kvaerno5(), rtol=1e-7, atol=1e-12,
                        max_steps=200_000, throw=False)
    if sol.result != fs.RESULTS.successful:
        return None, np.nan
    return np.array([sol.h, sol.y, sol.w]), float(sol.h[-1])


def q0(o: dict) -> float:
    return float(o["y"][0] / (o["h"][0] * o["cos_theta"][0] ** 2))


def h_equation(o: dict) -> tuple[float, float]:
    """How well the h equation holds at each sample with the rates measured there: the share of the first
    10 % of the run where the network's dh/dt has the sign of −η_h(t)·dx2·w(t), and the median ratio of
    the two where ‖dh‖² moves at ≥ 10 % of its fastest (1 where the equation holds)."""
    ts = o["t"]
    rate = np.gradient(o["h"], ts)
    model = -o["eta_h"] * DX2 * o["w"]
    early = ts <= EARLY * ts[-1]
    moving = np.abs(rate) >= 0.1 * np.max(np.abs(rate))
    ratio = rate[moving] / np.where(model[moving] != 0, model[moving], np.nan)
    return float(np.mean(np.sign(rate[early]) == np.sign(model[early]))), float(np.nanmedian(ratio))


def predict(row: str, o: dict) -> dict[str, tuple]:
    """method → (η_h, η_y, model curves [h, y, w] or None, predicted final h)."""
    ts = o["t"]
    p0 = (o["y"][0] - o["w"][0]) / DY2**0.5  # the CSV's 6 digits, made one consistent 1-d-output state
    state0 = [o["h"][0], p0**2, p0 * (p0 - DY2**0.5)]
    out = {"fitted": (np.nan, np.nan, np.array([o["theory_h"], o["theory_y"], o["theory_w"]]), o["theory_h"][-1])}
    n = max(2, int(np.searchsorted(ts, EARLY * ts[-1])))
    for name, (eh, ey) in {"kernel": (o["eta_h"][0], o["eta_y"][0]),
                           "early 10 %": tuple(np.exp(np.mean(np.log(o[k][:n]))) for k in ("eta_h", "eta_y"))}.items():
        theory = fs.EffectiveTheory(eh, ey, DX2, DY2)
        if name == "kernel":
            sol = fs.solve_theory(theory, state0, ts[-1], ts=ts, throw=False, max_steps=100_000)
            ok = bool(sol.result == fs.RESULTS.successful)
            out["kernel, aligned"] = (eh, ey, np.array([sol.h, sol.y, sol.w]) if ok else None,
                                      float(theory.fixed_point(state0[0], state0[1])[2]))
        sol = fs.solve_unaligned(theory, state0, q0(o), ts[-1], ts=ts, throw=False, max_steps=100_000,
                                 solver=diffrax.Kvaerno5())
        ok = bool(sol.result == fs.RESULTS.successful)
        out[f"{name}, unaligned"] = (eh, ey, np.array([sol.h, sol.y, sol.w]) if ok else None,
                                     float(fs.unaligned_fixed_point(theory, state0, q0(o))))
    for aligned in (True, False):
        curves = varying(o, aligned)
        out[f"kernel(t), {'aligned' if aligned else 'unaligned'}"] = (
            np.nan, np.nan, curves, np.nan if curves is None else float(curves[0][-1]))
    curves, h_end = gram(row, o)
    out["kernel, mean and difference"] = (np.nan, np.nan, curves, h_end)
    return out


def load(path: pathlib.Path) -> dict[str, dict]:
    runs: dict[str, dict] = {}
    with open(path) as f:
        for line in csv.DictReader(f):
            runs.setdefault(line["row"], {k: [] for k in line if k != "row"})
            for k, v in line.items():
                if k != "row":
                    runs[line["row"]][k].append(float(v))
    return {row: {k: np.asarray(v) for k, v in o.items()} for row, o in runs.items()}


def report(lines: list[dict], out: pathlib.Path) -> str:
    head = ("Worst normalised error of h, y, w against the network (seed 0, width 500, GD at lr/2); in brackets "
            "the final ‖dh‖² of the model's closed form (the kernel model's: its solve's last sample) relative to the network's final one. ✓: within 1.5× of "
            "the fitted theory's error and 10 % on the final ‖dh‖² (the target). kernel(t): the rates measured "
            "along the run itself (not a prediction). h equation: the network's dh/dt against −η_h(t)·dx2·w(t) with "
            "the rate measured at the same sample — the share of the first 10 % of the run where their signs "
            "agree, and their median ratio where ‖dh‖² moves at ≥ 10 % of its fastest.")
    table = ["| row | " + " | ".join(METHODS) + " | h equation: sign agrees early | ratio while learning |",
             "|---|" + "---:|" * (len(METHODS) + 2)]
    for r in lines:
        cells = []
        for m in METHODS:
            e, dh = r[f"{m}: error"], r[f"{m}: final h"]
            mark = " ✓" if (m != "fitted" and e <= 1.5 * r["fitted: error"] and abs(dh) <= 0.1) else ""
            cells.append("failed" if not np.isfinite(e) else f"{e:.3f} ({dh:+.0%}){mark}")
        table.append(f"| {r['row']} | " + " | ".join(cells) + f" | {r['h equation: early sign agrees']:.0%} | "
                     f"{r['h equation: ratio while learning']:.2f} |")
    met = {m: sum(1 for r in lines if r[f"{m}: error"] <= 1.5 * r["fitted: error"]
                  and abs(r[f"{m}: final h"]) <= 0.1) for m in METHODS[1:]}
    summary = ["", "Rows meeting the target (of " + str(len(lines)) + "): "
               + ", ".join(f"{m} {k}" for m, k in met.items()) + "."]
    text = "\n".join([head, "", *table, *summary]) + "\n"
    (out / "prediction.md").write_text(text)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.arange(len(lines))
    for i, m in enumerate(METHODS):
        ax.scatter(x + (i - 3) * 0.1, [r[f"{m}: error"] for r in lines], s=14, label=m)
    ax.set_xticks(x, [r["row"] for r in lines], rotation=60, fontsize=7)
    ax.set(yscale="log", ylabel="worst normalised error of h, y, w", title="rates fitted, predicted, measured")
    ax.axhline(0.05, color="grey", lw=0.5, ls=":")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "prediction.png", dpi=110)
    plt.close(fig)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/results/alignment",
                        help="the folder holding alignment_trajectories.csv; results are written there")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    source = out / "alignment_trajectories.csv"
    if not source.exists():
        parser.error(f"{source} not found: run examples/alignment.py --out {out} first")
    lines = []
    for row, o in load(source).items():
        if not np.all(np.isfinite(o["theory_h"])):
            print(f"{row}: no fitted theory, skipped")
            continue
        line = {"row": row}
        line["h equation: early sign agrees"], line["h equation: ratio while learning"] = h_equation(o)
        for m, (eh, ey, curves, h_inf) in predict(row, o).items():
            line[f"{m}: eta_h"], line[f"{m}: eta_y"] = eh, ey
            line[f"{m}: error"] = (np.nan if curves is None
                                   else max(error(curves[i], o[k]) for i, k in enumerate("hyw")))
            line[f"{m}: final h"] = h_inf / o["h"][-1] - 1
        lines.append(line)
        print(f"{row}: " + ", ".join(f"{m} {line[f'{m}: error']:.3f}" for m in METHODS), flush=True)
    with open(out / "prediction.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    print(report(lines, out))


if __name__ == "__main__":
    main()
