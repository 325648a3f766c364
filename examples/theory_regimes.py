"""The rich-to-lazy transition of the effective theory, integrated and in closed form.

Solves the reduced theory (THEORY.md §2) from 400 initial hidden distances h0 (log-spaced, small
initial outputs) with `solve_theory_batch`, and plots the final hidden distance h(∞)/A_low against
A_high/A_low next to the closed form h(∞) = ½·A_high + sqrt(¼·A_high² + A_low²) (THEORY.md §3):
small init → h(∞) → A_low (the task's structure, "rich"); large init → h(∞) ≈ h0 ("lazy").

    python examples/theory_regimes.py            # writes theory_regimes.png, prints the largest error
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--out", default="theory_regimes.png")
    args = parser.parse_args()

    theory = fs.EffectiveTheory(eta_h=1.0, eta_y=1.0, dx2=1.0, dy2=0.5)
    h0 = np.logspace(-3, 2, args.n)
    y0 = 1e-3 * h0  # small initial output distance, aligned with the target difference
    w0 = y0 - np.sqrt(0.5 * y0)
    states = np.stack([h0, y0, w0], axis=1)
    a_low, a_high, h_inf = (np.asarray(v) for v in theory.fixed_point(h0, y0))
    t1 = 60.0 / float(np.min(np.asarray(theory.convergence_rates(h_inf))))
    sol = fs.solve_theory_batch(theory, states, t1, ts=np.array([0.0, t1]))
    ok = np.asarray(sol.result == fs.RESULTS.successful)
    h_end = np.asarray(sol.h[:, -1])
    err = np.max(np.abs(h_end[ok] - h_inf[ok]) / h_inf[ok])
    print(f"{ok.sum()}/{args.n} solves succeeded; largest relative |h(t1) − h(∞) closed form| = {err:.1e}")

    x = np.linspace(-6, 60, 400)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(x, 0.5 * x + np.sqrt(0.25 * x**2 + 1.0), "k--", label="closed form")
    ax.plot(a_high / a_low, h_end / a_low, ".", ms=3, label="integrated (solve_theory_batch)")
    ax.set_xscale("symlog")
    ax.set_yscale("log")
    ax.set_xlabel("A_high / A_low")
    ax.set_ylabel("h(∞) / A_low")
    ax.set_title("rich (left) to lazy (right)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
