"""The `flowsolve` command line: demo, theory, flow, fit, sweep, reproduce.

Every command writes into an output folder (PNG, data, `summary.txt`). Bad input (an unknown
setting, a malformed config, an output folder that cannot be written, impossible parameters) ends
with one line `error: …` on stderr and exit code 2.
"""

import contextlib
import csv
import io
import os
import pathlib
import subprocess
import sys
import tomllib
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="flowsolve",
    help="Exact gradient flows of neural networks and the effective theory of their representations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Out = Annotated[pathlib.Path, typer.Option("--out", "-o", help="output folder (created if missing)")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"flowsolve {version('flowsolve')}")
        except PackageNotFoundError:  # a source tree that was never installed
            typer.echo("flowsolve (not installed)")
        raise typer.Exit()


@app.callback()
def _options(
    cache: Annotated[bool, typer.Option(
        help="keep compiled programs in the user's cache ($FLOWSOLVE_CACHE, else ~/.cache/flowsolve), so that "
             "the next run skips tracing and compiling")] = True,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
):
    """Exact gradient flows of neural networks and the effective theory of their representations."""
    del version
    if not cache:
        return
    from ._compile_cache import enable_compilation_cache

    try:  # for this process: a command run in-process (e.g. by tests) turns it on for its caller too
        enable_compilation_cache()
    except OSError as e:  # an unwritable cache folder costs speed, not the run
        typer.echo(f"warning: compilation cache off ({e})", err=True)


def _rkc():
    from ._rkc import RKC

    return RKC()


def _diffrax(name):
    def build():
        import diffrax

        return getattr(diffrax, name)()

    return build


# The flow command's solvers, built lazily (the CLI imports JAX only when it runs something).
_SOLVERS = {"tsit5": _diffrax("Tsit5"), "bosh3": _diffrax("Bosh3"), "rkc": _rkc}


class UserError(Exception):
    """Bad input: reported as one line and exit code 2."""


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def _errors():
    """Turn the library's boundary errors into one line and exit code 2."""
    try:
        yield
    except typer.Exit:  # an exit already said (click's Exit is a RuntimeError: not a solver failure)
        raise
    except (UserError, ValueError, FileNotFoundError, tomllib.TOMLDecodeError) as e:
        _fail(" ".join(str(e).split()))
    except RuntimeError as e:  # a solver failure, reported by the library with the time reached
        typer.echo(f"error: {' '.join(str(e).split())}", err=True)
        raise typer.Exit(code=1)
    except OSError as e:  # an output that cannot be written after all (a full disk, …)
        _fail(" ".join(str(e).split()))
    except KeyboardInterrupt as e:  # Ctrl-C; a sweep says what it kept and how to resume
        typer.echo(f"interrupted{': ' + str(e) if str(e) else ''}", err=True)
        raise typer.Exit(code=130)


def _folder(out: pathlib.Path, files: tuple[str, ...] = ()) -> pathlib.Path:
    """The output folder, created and checked writable; and each of `files` in it, if it exists
    already, a writable file (checked before anything is computed)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".flowsolve-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the output folder {str(out)!r}: {e.strerror or e}") from None
    for name in files:
        path = out / name
        if path.exists() and (not path.is_file() or not os.access(path, os.W_OK)):
            raise UserError(f"cannot write the output file {str(path)!r}: it is "
                            + ("not a file" if not path.is_file() else "not writable") + "; remove it or give another --out.")
    return out


def _x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _save(fig, path: pathlib.Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _setup_matplotlib() -> None:
    import matplotlib

    matplotlib.use("Agg")


def _write_csv(path: pathlib.Path, columns: dict[str, Any]) -> None:
    import numpy as np

    names = list(columns)
    rows = np.stack([np.asarray(columns[k], float) for k in names], axis=1)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(rows.tolist())


class _Tee(io.TextIOBase):
    """Writes to the terminal as it comes and keeps a copy (the command's `summary.txt`)."""

    def __init__(self, terminal):
        self.terminal, self.copy = terminal, io.StringIO()

    def write(self, text: str) -> int:
        self.terminal.write(text)
        self.terminal.flush()
        return self.copy.write(text)


@app.command()
def demo(
    what: Annotated[str, typer.Argument(help="network: the main job; theory: the reduced theory's regimes")] = "network",
    out: Out = pathlib.Path("flowsolve_out/demo"),
    width: Annotated[int | None, typer.Option(help="width of both networks (default: 500 for GD, 100 for the flow)")] = None,
    rtol: Annotated[float, typer.Option(help="relative tolerance of the flow")] = 1e-4,
    seed: int = 0,
):
    """The README's main job (also `python -m flowsolve`): the paper's default network trained by GD and a
    tanh network's exact flow, each with the reduced theory fitted to it and its closed-form fixed point.
    `demo theory`: the reduced theory alone from rich, lazy and colliding starts."""
    with _errors():
        if what not in ("network", "theory"):
            raise UserError(f"unknown demo {what!r}; choose network or theory.")
        if (width is not None and width < 1) or not rtol > 0:
            raise UserError(f"need width ≥ 1 and rtol > 0, got width={width}, rtol={rtol}.")
        folder = _folder(out)
        _x64()
        tee = _Tee(sys.stdout)
        with contextlib.redirect_stdout(tee):
            if what == "theory":
                from ._demo_theory import main as theory_demo

                theory_demo()
            else:
                from ._demo import run_network

                run_network(width=width, rtol=rtol, seed=seed, out=folder / "demo.png")
        (folder / "summary.txt").write_text(tee.copy.getvalue())


@app.command()
def theory(
    out: Out = pathlib.Path("flowsolve_out/theory"),
    eta_h: Annotated[float, typer.Option(help="effective learning rate of the hidden layer")] = 1.0,
    eta_y: Annotated[float, typer.Option(help="effective learning rate of the output")] = 1.0,
    dx2: Annotated[float, typer.Option(help="squared input distance")] = 1.0,
    dy2: Annotated[float, typer.Option(help="squared target distance")] = 0.5,
    h0: Annotated[float, typer.Option(help="initial ‖dh‖²")] = 0.01,
    y0: Annotated[float, typer.Option(help="initial ‖dŷ‖²")] = 1e-6,
    w0: Annotated[float, typer.Option(help="initial w = y − dy*·dŷ")] = 1e-6 - 0.5**0.5 * 1e-3,
    t1: Annotated[float | None, typer.Option(help="final time (default: 40 slowest time constants)")] = None,
):
    """Solve the reduced (h, y, w) system; print the fixed point, A_low and A_high; plot."""
    with _errors():
        folder = _folder(out)
        _x64()
        _setup_matplotlib()
        import numpy as np

        from . import plot
        from ._theory import EffectiveTheory, solve_theory

        model = EffectiveTheory(eta_h, eta_y, dx2, dy2)
        a_low, a_high, h_inf = (float(v) for v in model.fixed_point(h0, y0))
        if t1 is None:
            rate = float(min(model.convergence_rates(h_inf)))
            if not (np.isfinite(rate) and rate > 0 and np.isfinite(40.0 / rate)):
                raise UserError(f"these constants give no finite time scale (slower convergence rate {rate:g}); "
                                "pass `--t1`.")
            t1 = 40.0 / rate
        if not t1 > 0:
            raise UserError(f"`--t1` must be > 0, got {t1}.")
        sol = solve_theory(model, [h0, y0, w0], t1)
        lines = [
            f"theory: eta_h={eta_h:g} eta_y={eta_y:g} dx2={dx2:g} dy2={dy2:g}; start h0={h0:g} y0={y0:g} w0={w0:g}",
            f"A_low = {a_low:.10g}",
            f"A_high = {a_high:.10g}",
            f"fixed point: h(inf) = {h_inf:.10g}, y = dy2 = {dy2:g}, w = 0",
            f"integrated to t1 = {t1:.6g}: h = {float(sol.h[-1]):.10g} (relative difference "
            f"{abs(float(sol.h[-1]) - h_inf) / h_inf:.1e}), {int(sol.stats['num_steps'])} steps",
            "regime: " + ("rich (A_high < A_low: the task's structure)" if a_high < a_low
                          else "lazy (A_high > A_low: the initial geometry)"),
        ]
        if bool(sol.collided):
            lines.append(f"collision of the two representations at t = {float(sol.t_collision):.6g}")
        text = "\n".join(lines) + "\n"
        typer.echo(text, nl=False)
        (folder / "summary.txt").write_text(text)
        _write_csv(folder / "theory.csv", {"t": sol.ts, "h": sol.h, "y": sol.y, "w": sol.w, "loss": sol.loss})
        fig = plot.trajectories(np.asarray(sol.ts), None, sol, keys=("h", "y", "w", "loss"),
                                title=f"A_low = {a_low:.3g}, A_high = {a_high:.3g}, h(∞) = {h_inf:.3g}")
        _save(fig, folder / "theory.png")
        typer.echo(f"wrote {folder / 'theory.png'}, {folder / 'theory.csv'}")


def _experiment(setting: str, seed: int, width: int | None, depth: int | None, gain: float | None):
    import jax

    from . import experiments

    if setting not in experiments.SETTINGS:
        raise UserError(f"unknown setting {setting!r}; choose one of {', '.join(sorted(experiments.SETTINGS))}.")
    for name, value in (("width", width), ("depth", depth)):
        if value is not None and value < 1:
            raise UserError(f"`--{name}` must be ≥ 1, got {value}.")
    return experiments.two_points(setting, key=jax.random.key(seed), width=width, depth=depth, gain=gain)


def _load_config(path: pathlib.Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} not found.")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"malformed config {str(path)!r}: {e}") from None


def _result_message(result) -> str:
    from ._results import RESULTS, result_name

    return "successful" if bool(result == RESULTS.successful) else f"{result_name(result)}: {RESULTS[result]}"


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    # By name: typer may carry its own copy of click's `ParameterSource`.
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


def _check_config_types(values: dict[str, Any], config) -> None:
    """The rules of the flags, for values that came from a config file."""
    rules = {"setting": (str, "a string"), "solver": (str, "a string"), "fit": (bool, "true or false")}
    for key, value in values.items():
        if key in rules:
            ok = isinstance(value, rules[key][0])
        elif key in ("width", "depth", "seed"):
            ok = (value is None and key != "seed") or _is_count(value)
        else:  # gain, t1, rtol
            ok = value is None or _is_number(value)
        if not ok:
            what = rules[key][1] if key in rules else ("an integer" if key in ("width", "depth", "seed")
                                                       else "a finite number")
            raise UserError(f"`{key}` in {str(config)!r} must be {what}, got {value!r}.")


@app.command()
def flow(
    ctx: typer.Context,
    setting: Annotated[str, typer.Argument(help="a row of THEORY.md §5, e.g. default, tanh, skip")] = "default",
    out: Out = pathlib.Path("flowsolve_out/flow"),
    config: Annotated[pathlib.Path | None, typer.Option(help="TOML file with any of the options below")] = None,
    width: Annotated[int | None, typer.Option(help="override the row's width")] = None,
    depth: Annotated[int | None, typer.Option(help="override the row's depth")] = None,
    gain: Annotated[float | None, typer.Option(help="override the row's gain")] = None,
    seed: int = 0,
    t1: Annotated[float | None, typer.Option(help="final time (default: the row's lr · epochs)")] = None,
    rtol: float = 1e-5,
    solver: Annotated[str, typer.Option(help="tsit5 (default), bosh3, or rkc (cheapest at ~1 % accuracy on "
                                             "smooth networks; not for tight tolerances)")] = "tsit5",
    fit: Annotated[bool, typer.Option(help="also fit η_h, η_y and draw the theory")] = True,
    progress: Annotated[bool, typer.Option(help="a progress bar of the flow on stderr")] = True,
):
    """Run a setting's exact gradient flow; save the trajectories (CSV), a plot and the fitted rates."""
    with _errors():
        cfg = _load_config(config)
        allowed = {"setting", "width", "depth", "gain", "seed", "t1", "rtol", "solver", "fit"}
        unknown = set(cfg) - allowed
        if unknown:
            raise UserError(f"unknown keys in {config}: {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}.")
        given = dict(setting=setting, width=width, depth=depth, gain=gain, seed=seed, t1=t1, rtol=rtol, solver=solver,
                     fit=fit)
        # A flag given on the command line wins over the file; the file wins over the defaults.
        chosen = {k: v if _on_command_line(ctx, k) else cfg.get(k, v) for k, v in given.items()}
        _check_config_types(chosen, config)
        setting, width, depth, gain = chosen["setting"], chosen["width"], chosen["depth"], chosen["gain"]
        seed, t1, rtol, fit, solver = chosen["seed"], chosen["t1"], chosen["rtol"], chosen["fit"], chosen["solver"]
        if solver not in _SOLVERS:
            raise UserError(f"unknown solver {solver!r}; choose one of {', '.join(_SOLVERS)}.")
        folder = _folder(out)
        _x64()
        _setup_matplotlib()
        import numpy as np

        from . import plot
        from ._fit import fit_effective_rates
        from ._flow import gradient_flow
        from .experiments import DX2, DY2

        exp = _experiment(setting, seed, width, depth, gain)
        if exp.stochastic or exp.setting.optimizer != "sgd":
            raise UserError(f"setting {setting!r} trains with {'dropout' if exp.stochastic else exp.setting.optimizer}: "
                            "it has no gradient-flow ODE (examples/paper.py trains it by gradient descent).")
        t1 = exp.t1 if t1 is None else t1
        if not t1 > 0:
            raise UserError(f"`t1` must be > 0, got {t1}.")
        ts = np.linspace(0.0, t1, 201)
        import diffrax

        sol = gradient_flow(exp.model, exp.inputs, exp.targets, t1, ts=ts, layer=exp.layer, rtol=rtol,
                            atol=1e-3 * rtol, solver=_SOLVERS[solver](),
                            progress_meter=diffrax.TqdmProgressMeter() if progress else None)
        obs = {k: np.asarray(v) for k, v in sol.observed.items()}
        _write_csv(folder / "flow.csv", {"t": ts, **obs})
        row = exp.setting
        lines = [f"flow: {setting} ({row.model}, {row.activation}, width {row.width}, depth {row.depth}, gain "
                 f"{row.gain}, layer {exp.layer}, seed {seed}) to t1 = {t1:g}, rtol {rtol:g}: "
                 f"{int(sol.stats['num_steps'])} steps",
                 f"h: {obs['h'][0]:.6g} -> {obs['h'][-1]:.6g}; loss: {obs['loss'][0]:.3e} -> {obs['loss'][-1]:.3e}"]
        theory = None
        if fit:
            result = fit_effective_rates(ts, obs["h"], obs["y"], obs["w"], DX2, DY2, m=obs["m"])
            theory = result.predict(ts, throw=False)
            lines.append(f"fitted: eta_h = {float(result.eta_h):.6g} ± {float(result.eta_h_se):.2g}, eta_y = "
                         f"{float(result.eta_y):.6g} ± {float(result.eta_y_se):.2g}; normalised errors "
                         + ", ".join(f"{k} {float(v):.3f}" for k, v in result.errors.items()))
        text = "\n".join(lines) + "\n"
        typer.echo(text, nl=False)
        (folder / "summary.txt").write_text(text)
        _save(plot.trajectories(ts, obs, theory, title=f"{setting}: network (solid), theory (dashed)"),
              folder / "flow.png")
        typer.echo(f"wrote {folder / 'flow.png'}, {folder / 'flow.csv'}")


@app.command("fit")
def fit_command(
    data: Annotated[pathlib.Path, typer.Argument(help="CSV with columns t, h, y, w (and optionally m)")],
    out: Out = pathlib.Path("flowsolve_out/fit"),
    dx2: Annotated[float, typer.Option(help="squared input distance")] = 1.0,
    dy2: Annotated[float, typer.Option(help="squared target distance")] = 0.5,
    fit_initial_state: Annotated[bool, typer.Option(help="fit (h0, y0, w0) too (noisy data)")] = False,
):
    """Fit the effective learning rates η_h, η_y to a trajectory (e.g. `flow.csv` of `flowsolve flow`)."""
    with _errors():
        folder = _folder(out)
        if data.is_dir():
            raise UserError(f"{str(data)!r} is a folder; give the CSV file (e.g. {str(data / 'flow.csv')!r}).")
        if not data.is_file():
            raise UserError(f"data file {str(data)!r} not found.")
        import numpy as np

        if not data.read_text(errors="replace").strip():
            raise UserError(f"{str(data)!r} is empty; it needs a header t,h,y,w[,m] and one row per sample.")
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy warns on an empty body; said below instead
                table = np.atleast_1d(np.genfromtxt(data, delimiter=",", names=True))
        except ValueError as e:
            raise UserError(f"malformed CSV {str(data)!r}: {e}") from None
        names = table.dtype.names or ()
        missing = [c for c in ("t", "h", "y", "w") if c not in names]
        if missing:
            raise UserError(f"{str(data)!r} lacks the columns {', '.join(missing)} (has: {', '.join(names)}).")
        for name in ("t", "h", "y", "w", "m"):
            if name in names:
                column = np.asarray(table[name], float)
                if column.size and np.isnan(column).any():
                    row = int(np.argmax(np.isnan(column))) + 2
                    raise UserError(f"{str(data)!r}: column {name!r} has a value that is not a number "
                                    f"(line {row}).")
        _x64()
        _setup_matplotlib()
        from . import plot
        from ._fit import fit_effective_rates

        cols = {k: np.asarray(table[k], float) for k in names}
        m = cols.get("m")
        result = fit_effective_rates(cols["t"], cols["h"], cols["y"], cols["w"], dx2, dy2, m=m,
                                     fit_initial_state=fit_initial_state)
        lines = [f"fit of {data} ({len(cols['t'])} samples, dx2 = {dx2:g}, dy2 = {dy2:g})",
                 f"eta_h = {float(result.eta_h):.8g} ± {float(result.eta_h_se):.2g}",
                 f"eta_y = {float(result.eta_y):.8g} ± {float(result.eta_y_se):.2g}"]
        if m is not None:
            lines.append(f"eta_mean = {float(result.eta_mean):.8g} ± {float(result.eta_mean_se):.2g}")
        lines.append("normalised errors: " + ", ".join(f"{k} {float(v):.4f}" for k, v in result.errors.items()))
        lines.append(f"converged: {bool(result.converged)}")
        lines.append(f"result: {_result_message(result.result)}")
        text = "\n".join(lines) + "\n"
        typer.echo(text, nl=False)
        (folder / "summary.txt").write_text(text)
        theory = result.predict(cols["t"], throw=False)
        _write_csv(folder / "fit.csv", {"t": cols["t"], **{k: getattr(theory, k) for k in ("h", "y", "w", "loss")}})
        _save(plot.trajectories(cols["t"], cols, theory, title="data (solid), fitted theory (dashed)"),
              folder / "fit.png")
        typer.echo(f"wrote {folder / 'fit.png'}, {folder / 'fit.csv'} (the fitted theory), {folder / 'summary.txt'}")


THEORY_KEYS = ("eta_h", "eta_y", "dx2", "dy2", "h0", "y0", "w0")
FLOW_KEYS = ("seed", "gain", "dx2", "dy2")
FLOW_STATIC = ("width", "depth")


MAX_AXIS = 1_000_000
"""The most values one axis of a sweep file may have (checked before anything is allocated)."""

SWEEP_FILE_KEYS = ("kind", "name", "t1", "samples", "base", "axes", "setting", "rtol")


def _is_number(value: Any) -> bool:
    """A finite int or float, not a bool (TOML's `true` is no number)."""
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _axis_values(name: str, spec: Any, integer: bool = False):
    import numpy as np

    what = "an integer" if integer else "a finite number"
    if isinstance(spec, list):
        values = spec
    elif isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("linspace", "logspace", "range"):
        (kind, args), = spec.items()
        if not (isinstance(args, list) and len(args) == 3 and all(_is_number(a) for a in args)):
            raise UserError(f"axis {name!r}: `{kind}` takes [a, b, {'step' if kind == 'range' else 'n'}] of finite "
                            f"numbers, got {args!r}.")
        a, b, c = args
        if kind == "range":
            n = (b - a) / c if c != 0 else float("inf")
            if not (c != 0 and 0 < n <= MAX_AXIS):
                raise UserError(f"axis {name!r}: range {args!r} gives {'no' if n <= 0 else 'too many'} values "
                                f"(at most {MAX_AXIS:,}).")
            values = np.arange(a, b, c).tolist()
        else:
            if not (_is_count(c) and 1 <= c <= MAX_AXIS):
                raise UserError(f"axis {name!r}: the count of `{kind}` must be an integer in [1, {MAX_AXIS:,}], "
                                f"got {c!r}.")
            values = {"linspace": np.linspace, "logspace": np.logspace}[kind](a, b, c).tolist()
    else:
        raise UserError(f"axis {name!r} must be a list of values or one of {{linspace|logspace = [a, b, n], "
                        f"range = [a, b, step]}}, got {spec!r}.")
    if not values:
        raise UserError(f"axis {name!r} has no values.")
    for v in values:
        if not (_is_count(v) if integer else _is_number(v)):
            raise UserError(f"axis {name!r}: every value must be {what}, got {v!r}.")
    return values


@app.command("sweep")
def sweep_command(
    config: Annotated[pathlib.Path, typer.Argument(help="TOML sweep description (see docs/cli.md)")],
    out: Out = pathlib.Path("flowsolve_out/sweep"),
    chunk_size: Annotated[int | None, typer.Option(help="points per compiled call")] = None,
):
    """Run a sweep of theory solves or network flows described by a TOML file; resumable."""
    with _errors():
        cfg = _load_config(config)
        unknown = sorted(set(cfg) - set(SWEEP_FILE_KEYS))
        if unknown:
            raise UserError(f"unknown keys in {str(config)!r}: {', '.join(unknown)}; allowed: "
                            f"{', '.join(SWEEP_FILE_KEYS)}.")
        kind = cfg.get("kind")
        if kind not in ("theory", "flow"):
            raise UserError(f"`kind` must be \"theory\" or \"flow\", got {kind!r}.")
        if not isinstance(cfg.get("axes"), dict) or not cfg["axes"]:
            raise UserError("the config needs an [axes] table with at least one axis.")
        t1 = cfg.get("t1")
        if not _is_number(t1) or not t1 > 0:
            raise UserError(f"`t1` must be a finite number > 0, got {t1!r}.")
        samples = cfg.get("samples", 51)
        if not _is_count(samples) or not 2 <= samples <= MAX_AXIS:
            raise UserError(f"`samples` must be an integer in [2, {MAX_AXIS:,}], got {samples!r}.")
        if "rtol" in cfg and not (_is_number(cfg["rtol"]) and cfg["rtol"] > 0):
            raise UserError(f"`rtol` must be a finite number > 0, got {cfg['rtol']!r}.")
        for key in ("name", "setting"):
            if key in cfg and not isinstance(cfg[key], str):
                raise UserError(f"`{key}` must be a string, got {cfg[key]!r}.")
        if not isinstance(cfg.get("base", {}), dict):
            raise UserError(f"`base` must be a table of parameter = value, got {cfg['base']!r}.")
        base = dict(cfg.get("base", {}))
        allowed = THEORY_KEYS if kind == "theory" else FLOW_KEYS + FLOW_STATIC
        for k in list(cfg["axes"]) + list(base):
            if k not in allowed:
                raise UserError(f"unknown parameter {k!r} for a {kind} sweep; allowed: {', '.join(allowed)}.")
        integer = set(FLOW_STATIC) | {"seed"}
        for k, v in base.items():
            if not (_is_count(v) if k in integer else _is_number(v)):
                raise UserError(f"`base.{k}` must be {'an integer' if k in integer else 'a finite number'}, "
                                f"got {v!r}.")
        axes = {k: _axis_values(k, v, integer=k in integer) for k, v in cfg["axes"].items()}
        points = 1
        for values in axes.values():
            points *= len(values)
        if points > MAX_AXIS:
            raise UserError(f"the axes give {points:,} points; at most {MAX_AXIS:,} in one sweep file.")
        folder = _folder(out, ("sweep.nc", "sweep.png", "summary.txt"))
        _x64()
        _setup_matplotlib()
        import numpy as np

        from ._sweep import sweep

        ts = np.linspace(0.0, float(t1), samples)
        static: list[str] = []
        settings: dict[str, Any] = {"kind": kind, "t1": float(t1), "samples": samples, "base": base}
        from . import experiments

        if kind == "theory":
            fn = experiments.theory_point(ts, base)
        else:
            setting = cfg.get("setting", "default")
            _experiment(setting, 0, base.get("width"), base.get("depth"), None)  # validates the names
            static = [k for k in FLOW_STATIC if k in axes]
            rtol = float(cfg.get("rtol", 1e-5))
            fn = experiments.flow_point(setting, ts, base, rtol=rtol)
            settings.update(setting=setting, rtol=rtol)
        name = cfg.get("name", config.stem)
        # `settings` makes the store refuse a rerun whose file changed t1, rtol, the setting or `base`.
        import warnings

        from ._sweep import StoreWarning

        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always", StoreWarning)
            ds = sweep(fn, axes, static=static, dims={k: ["time"] for k in ("h", "y", "w", "loss")},
                       coords={"time": ts}, chunk_size=chunk_size, store=folder / "store", name=name,
                       config=settings)
        for w in said:  # a recomputed chunk, a rewritten manifest: one line each
            typer.echo(f"warning: {w.message}", err=True)
        ds.to_netcdf(folder / "sweep.nc", engine="h5netcdf")
        ok = ds.ok.values & ds.finite.values
        lines = [f"sweep {name!r} ({kind}): {ok.size} points over " + ", ".join(f"{k} ({len(v)})" for k, v in
                                                                               axes.items()),
                 f"{int(ok.sum())}/{ok.size} points succeeded",
                 f"final h: min {float(np.nanmin(ds.h.values[..., -1])):.6g}, "
                 f"max {float(np.nanmax(ds.h.values[..., -1])):.6g}"]
        if not ok.all():
            bad = np.argwhere(~ok)[:5]
            lines.append("failed points (first 5): " + "; ".join(
                ", ".join(f"{k}={ds.coords[k].values[i]}" for k, i in zip(axes, idx)) for idx in bad))
        text = "\n".join(lines) + "\n"
        typer.echo(text, nl=False)
        (folder / "summary.txt").write_text(text)
        from .plot import sweep_final

        _save(sweep_final(ds, list(axes)), folder / "sweep.png")
        typer.echo(f"wrote {folder / 'sweep.nc'}, {folder / 'sweep.png'}")


EXAMPLES = {
    # name: (script, output is a folder?, fast arguments)
    "regimes": ("theory_regimes.py", False, ["--n", "24"]),
    "universality": ("universality.py", True, ["--width", "8", "--seeds", "1", "--rows", "two_layer"]),
    "depth_profile": ("depth_profile.py", True, ["--width", "8", "--seeds", "1"]),
    "paper_universality": ("paper.py", True, ["--fast", "--rows", "default,two_layer"]),
    "paper_grid": ("paper_grid.py", True, ["--fast", "--rows", "default"]),
    "rate_tracking": ("rate_tracking.py", False, ["--width", "8", "--t1", "1.0"]),
    "distance_grid": ("distance_grid.py", True, ["--width", "8", "--depth", "4"]),
    "rich_lazy": ("rich_lazy.py", True, ["--width", "8", "--seeds", "1", "--gains", "0.75,1.0,2.0"]),
    "xor": ("xor.py", True, ["--fast"]),
    "mnist": ("mnist.py", True, ["--fast"]),
    "orthogonal": ("orthogonal.py", True, ["--fast"]),
    "two_digits": ("two_digits.py", True, ["--fast"]),
    "alignment": ("alignment.py", True, ["--fast", "--rows", "default,tanh"]),
}

RENAMED = {"digits": "two_digits (the two-image run; `mnist` is the paper's experiment)",
           "blobs": "orthogonal (the authors' blob task)"}
"""Experiment names that changed, with what replaced them."""


PAPER = ("paper_universality", "paper_grid", "depth_profile")
"""`reproduce paper`: the two-point experiments at the paper's size, in one folder, one after another."""


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def reproduce(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help=f"one of: {', '.join(EXAMPLES)}")],
    out: Out = pathlib.Path("flowsolve_out"),
    fast: Annotated[bool, typer.Option(help="tiny sizes: a smoke run in seconds to a minute")] = False,
):
    """Reproduce one of the paper's experiments (runs `examples/NAME.py`; extra options go to it).
    `paper` runs the two-point set at the paper's size: universality with the lr ladder, the exact flows
    and the altered theories, the distance grid and the depth profile, into one folder."""
    with _errors():
        if name in RENAMED:
            raise UserError(f"the experiment {name!r} is now {RENAMED[name]}.")
        if name not in EXAMPLES and name != "paper":
            raise UserError(f"unknown experiment {name!r}; choose one of paper, {', '.join(EXAMPLES)}.")
        examples = pathlib.Path(__file__).resolve().parents[1] / "examples"
        parts = PAPER if name == "paper" else (name,)
        folder = _folder(out / name)
        for part in parts:
            script, is_folder, fast_args = EXAMPLES[part]
            if not (examples / script).is_file():
                raise UserError(f"{examples / script} not found: `reproduce` needs the source tree (git clone).")
            target = folder if is_folder else folder / f"{name}.png"
            # The script runs in the source tree: give it the output folder as an absolute path.
            args = [sys.executable, str(examples / script), "--out", str(target.resolve())]
            args += (fast_args if fast else []) + list(ctx.args)
            typer.echo("running " + " ".join(args[1:]))
            code = subprocess.call(args, cwd=examples.parent)
            if code != 0:
                typer.echo(f"error: {script} exited with code {code}", err=True)
                raise typer.Exit(code=2 if code == 2 else 1)  # 2: the script refused its arguments
        typer.echo(f"results in {folder}")


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="flowsolve")


if __name__ == "__main__":
    main()
