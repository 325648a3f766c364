"""Falsification check: altered theories fitted to the same network trajectories must fit worse.

Reads the network trajectories stored by `examples/universality.py` (its `--out/runs/`), fits the
true system and every alternative of `flowsolve.alternatives.ALTERNATIVES` (a factor 2 on one term,
a flipped sign, a dropped term) to each, and reports the residual of each alternative divided by the
true system's (> 1: the alternative fits worse), as the median over seeds per architecture.

    python examples/universality.py            # first, if not done yet
    python examples/falsification.py           # writes universality/falsification.md
"""

import argparse
import json
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402
from flowsolve.alternatives import ALTERNATIVES  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="universality/runs")
    parser.add_argument("--out", default="universality/falsification.md")
    args = parser.parse_args()
    files = sorted(pathlib.Path(args.runs).glob("*.npz"))
    if not files:
        raise SystemExit(f"No stored runs in {args.runs}: run examples/universality.py first.")

    ratios: dict[str, list[np.ndarray]] = {}
    for file in files:
        stored = np.load(file)
        if "ts" not in stored.files:
            continue  # a failed flow
        row = json.loads(str(stored["summary"]))["row"]
        ts, h, y, w = stored["ts"], stored["net_h"], stored["net_y"], stored["net_w"]
        residual = []
        for field in ALTERNATIVES.values():
            fit = fs.fit_effective_rates(ts, h, y, w, 1.0, 0.5, vector_field=field)
            residual.append(float(fit.residual) if bool(fit.converged) else np.inf)
        ratios.setdefault(row, []).append(np.asarray(residual[1:]) / residual[0])
        print(f"{file.name}: " + " ".join(f"{r:.2f}" for r in ratios[row][-1]), flush=True)

    names = list(ALTERNATIVES)[1:]
    lines = [
        "Residual of each alternative / residual of the true system, fitted to the same network trajectory "
        "(median over seeds; > 1: the alternative fits worse; inf: its fit failed).",
        "",
        "| row | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row, values in ratios.items():
        median = np.median(np.stack(values), axis=0)
        lines.append(f"| {row} | " + " | ".join(f"{v:.2f}" for v in median) + " |")
    table = "\n".join(lines)
    pathlib.Path(args.out).write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
