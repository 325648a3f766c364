"""The `flowsolve` command line: each command on a tiny configuration, --help, bad input → exit 2."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cli(*args, timeout=600, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "flowsolve._cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def invoke(*args):
    """The command line in this process (`--no-cache`: the cache is the process's, and this one runs
    other tests); stdout and stderr apart."""
    from typer.testing import CliRunner

    from flowsolve._cli import app

    return CliRunner().invoke(app, ["--no-cache", *map(str, args)])


def test_help_and_version():
    # (In-process runs pass --no-cache: the cache is the process's, and this one runs other tests.)
    # The installed entry point once; each command's help in this process (a subprocess each would pay
    # the imports again).
    from typer.testing import CliRunner

    from flowsolve._cli import app

    proc = subprocess.run([sys.executable, "-m", "flowsolve", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "--no-cache" in proc.stdout and "--version" in proc.stdout
    for command in ("demo", "theory", "flow", "fit", "sweep", "reproduce"):
        assert command in proc.stdout
        sub = CliRunner().invoke(app, ["--no-cache", command, "--help"])
        assert sub.exit_code == 0 and "--out" in sub.output, command
    version = CliRunner().invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("flowsolve ")


def test_theory_command(tmp_path):
    proc = invoke("theory", "--out", tmp_path, "--h0", "0.01", "--eta-h", "2.0")
    assert proc.exit_code == 0, proc.stderr
    a_low = float(proc.stdout.split("A_low = ")[1].split()[0])
    assert abs(a_low - np.sqrt(2.0 * 1.0 * 0.5)) < 1e-9  # sqrt(η_h/η_y · dx2 · dy2)
    for name in ("theory.png", "theory.csv", "summary.txt"):
        assert (tmp_path / name).stat().st_size > 0
    table = np.genfromtxt(tmp_path / "theory.csv", delimiter=",", names=True)
    h_inf = float(proc.stdout.split("h(inf) = ")[1].split(",")[0])
    assert abs(table["h"][-1] - h_inf) / h_inf < 1e-6


@pytest.mark.slow
def test_flow_then_fit_commands(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('setting = "tanh"\nwidth = 8\ndepth = 4\nrtol = 1e-5\nsolver = "rkc"\n')
    proc = cli("flow", "--config", config, "--out", tmp_path / "flow")
    assert proc.returncode == 0, proc.stderr
    assert "flow: tanh (MLP, tanh, width 8, depth 4" in proc.stdout
    assert (tmp_path / "flow" / "flow.png").stat().st_size > 10_000
    assert "fitted: eta_h" in proc.stdout
    proc = cli("fit", tmp_path / "flow" / "flow.csv", "--out", tmp_path / "fit")
    assert proc.returncode == 0, proc.stderr
    eta_h = float(proc.stdout.split("eta_h = ")[1].split()[0])
    flow_eta_h = float((tmp_path / "flow" / "summary.txt").read_text().split("eta_h = ")[1].split()[0])
    assert abs(eta_h - flow_eta_h) / flow_eta_h < 1e-4  # the same fit from the saved CSV
    assert (tmp_path / "fit" / "fit.png").stat().st_size > 10_000


@pytest.mark.slow
def test_sweep_command_resumes(tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text('kind = "theory"\nt1 = 50.0\nsamples = 11\n[base]\ndy2 = 0.5\n'
                      '[axes]\neta_h = [0.5, 2.0]\nh0 = {logspace = [-2, 0, 3]}\n')
    proc = cli("sweep", config, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "6/6 points succeeded" in proc.stdout
    import xarray as xr

    with xr.open_dataset(tmp_path / "out" / "sweep.nc", engine="h5netcdf") as ds:
        assert ds.h.dims == ("eta_h", "h0", "time") and ds.h.shape == (2, 3, 11)
        assert ds.attrs["t1"] == 50.0 and ds.attrs["kind"] == "theory" and '"dy2": 0.5' in ds.attrs["config"]
    again = cli("sweep", config, "--out", tmp_path / "out")
    assert again.returncode == 0 and "6/6" in again.stdout
    # The same folder with another t1 (same number of samples, same axes): refused, not mixed in.
    config.write_text(config.read_text().replace("t1 = 50.0", "t1 = 60.0"))
    changed = cli("sweep", config, "--out", tmp_path / "out")
    assert changed.returncode == 2 and "holds a different sweep" in changed.stderr
    assert "config.t1" in changed.stderr and "coords.time" in changed.stderr


def test_sweep_figure_labels_lines_and_marks_failures():
    import matplotlib

    matplotlib.use("Agg")
    import xarray as xr

    from flowsolve.plot import sweep_final

    h = np.ones((3, 2, 2, 4))
    h[1, 0, 1, 2:] = np.nan  # one point fails half-way: marked at its last finite value
    ok = np.isfinite(h).all(-1)
    ds = xr.Dataset({"h": (("seed", "width", "gain", "time"), h), "ok": (("seed", "width", "gain"), ok),
                     "finite": (("seed", "width", "gain"), ok)},
                    coords={"seed": [0, 1, 2], "width": [8, 16], "gain": [0.5, 1.0], "time": np.arange(4.0)},
                    attrs={"name": "s"})
    ax = sweep_final(ds, ["seed", "width", "gain"]).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["width=8, gain=0.5", "width=8, gain=1.0", "width=16, gain=0.5", "width=16, gain=1.0",
                      "failed (1 points)"]
    cross = ax.get_lines()[-1]
    assert list(cross.get_xdata()) == [1] and list(cross.get_ydata()) == [1.0]


@pytest.mark.slow
def test_reproduce_command(tmp_path):
    # (`flowsolve demo` is `python -m flowsolve demo`: tests/test_examples.py runs it.)
    # A relative --out is the caller's folder (the script itself runs in the source tree).
    proc = cli("reproduce", "regimes", "--fast", "--out", "results", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results" / "regimes" / "regimes.png").stat().st_size > 10_000
    assert not (ROOT / "results").exists()


@pytest.mark.parametrize(
    "args, match",
    [
        (["flow", "nosuch"], "unknown setting 'nosuch'"),
        (["flow", "--width", "0"], "--width` must be ≥ 1"),
        (["flow", "--solver", "euler"], "unknown solver 'euler'; choose one of tsit5, bosh3, rkc"),
        (["theory", "--eta-h", "-1"], "eta_h"),
        (["theory", "--t1", "-5"], "t1"),
        (["theory", "--h0", "0"], "`h0` must be > 0"),
        (["theory", "--eta-h", "1e300"], "no finite time scale"),
        (["reproduce", "nosuch"], "unknown experiment"),
        (["reproduce", "blobs"], "is now orthogonal"),
        (["sweep", "MISSING.toml"], "not found"),
        (["fit", "MISSING.csv"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, match):
    result = invoke(*args, "--out", tmp_path / "o")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], result.stderr


def test_bad_input_in_a_process_of_its_own(tmp_path):
    # The same, through the interpreter: the exit code and the one line reach the shell.
    proc = cli("theory", "--h0", "0", "--out", tmp_path / "o")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines() == ["error: `h0` must be > 0, got 0.0."], proc.stderr


def test_malformed_config_and_unwritable_output(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("kind = \"theory\"\nt1 = [\n")
    result = invoke("sweep", bad, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "malformed config" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('kind = "theory"\nt1 = 5.0\n[axes]\nlearning_rate = [1.0]\n')
    result = invoke("sweep", unknown, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "unknown parameter 'learning_rate'" in result.stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = invoke("theory", "--out", blocker / "sub")  # a folder under a file cannot be created, even by root
    assert result.exit_code == 2 and "cannot write to the output folder" in result.stderr


def test_ctrl_c_is_one_line_and_exit_code_130(capsys):
    import typer

    from flowsolve._cli import _errors

    with pytest.raises(typer.Exit) as stopped, _errors():
        raise KeyboardInterrupt("Sweep 's' interrupted after chunk 1 of 3; 1 of 3 chunks are stored in 'out/store'")
    assert stopped.value.exit_code == 130
    assert capsys.readouterr().err == ("interrupted: Sweep 's' interrupted after chunk 1 of 3; 1 of 3 chunks are "
                                       "stored in 'out/store'\n")


@pytest.mark.slow
def test_reproduce_paper_fast_resumes_and_regenerates(tmp_path):
    """`reproduce paper --fast`: every part writes its table, CSV and figure; a second invocation trains
    nothing (the store), and the tables are remade from the CSVs alone (`--report-only`)."""
    proc = cli("reproduce", "paper", "--fast", "--out", tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "paper"
    for name in ("universality.md", "universality.png", "fits.csv", "trajectories.csv", "alterations.md",
                 "alterations.csv", "grid.md", "grid.csv", "grid.png", "depth_profile.md", "depth_profile.csv"):
        assert (folder / name).stat().st_size > 100, name
    fits = (folder / "fits.csv").read_text().splitlines()
    # default and two_layer at lr/2, lr and lr/4, two_layer's exact flow (a linear network: smooth), and
    # default with the other kink convention (leaky ReLU: piecewise linear)
    assert len(fits) == 1 + 8
    assert any(",flow," in line and line.startswith("two_layer") for line in fits)
    assert any(",kink," in line and line.startswith("default") for line in fits)
    assert "2× dy equation *" in (folder / "alterations.md").read_text()
    table = (folder / "universality.md").read_text()
    assert "| default | 1 (" in table and "| two_layer | 1 (" in table
    paper = [sys.executable, str(ROOT / "examples" / "paper.py"), "--fast", "--rows", "default,two_layer",
             "--out", str(folder)]
    again = subprocess.run(paper, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert "8 runs, 8 stored, 0 to train" in again.stdout
    import shutil

    shutil.rmtree(folder / "runs")  # only the CSVs are left, as committed
    (folder / "universality.md").unlink()
    remade = subprocess.run(paper + ["--report-only", "--alteration-seeds", "0"], capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    assert remade.returncode == 0, remade.stderr
    assert (folder / "universality.md").read_text() == table


@pytest.mark.parametrize(
    "text, match",
    [
        ('kind = "theory"\nt1 = 5.0\nsample = 5\n[axes]\neta_h = [1.0]\n', "unknown keys"),
        ('kind = "theory"\nt1 = true\n[axes]\neta_h = [1.0]\n', "`t1` must be a finite number"),
        ('kind = "theory"\nt1 = inf\n[axes]\neta_h = [1.0]\n', "`t1` must be a finite number"),
        ('kind = "theory"\nt1 = 5.0\nsamples = 4.7\n[axes]\neta_h = [1.0]\n', "`samples` must be an integer"),
        ('kind = "theory"\nt1 = 5.0\nsamples = "many"\n[axes]\neta_h = [1.0]\n', "`samples` must be an integer"),
        ('kind = "flow"\nt1 = 5.0\nrtol = nan\n[axes]\nseed = [0]\n', "`rtol` must be a finite number"),
        ('kind = "theory"\nt1 = 5.0\nbase = 3\n[axes]\neta_h = [1.0]\n', "`base` must be a table"),
        ('kind = "theory"\nt1 = 5.0\n[axes]\neta_h = {linspace = [0.5, 2.0, 3.5]}\n', "must be an integer"),
        ('kind = "theory"\nt1 = 5.0\n[axes]\neta_h = {range = [0, 1e13, 1]}\n', "too many values"),
        ('kind = "theory"\nt1 = 5.0\n[axes]\neta_h = ["a", 1.0]\n', "every value must be a finite number"),
        ('kind = "theory"\nsetting = ["default"]\nt1 = 5.0\n[axes]\neta_h = [1.0]\n', "`setting` must be a string"),
        ('kind = "flow"\nt1 = 5.0\n[base]\nwidth = "abc"\n[axes]\nseed = [0]\n', "`base.width` must be an integer"),
        ('kind = "flow"\nt1 = 5.0\n[axes]\nwidth = [8.5]\n', "every value must be an integer"),
    ],
)
def test_bad_sweep_files_are_one_line(tmp_path, text, match):
    from typer.testing import CliRunner

    from flowsolve._cli import app

    config = tmp_path / "sweep.toml"
    config.write_text(text)
    result = CliRunner().invoke(app, ["--no-cache", "sweep", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output, result.output


def test_flow_flags_win_over_the_config_and_config_types_are_checked(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import flowsolve._cli as cli_module

    seen = {}

    def fake_experiment(setting, seed, width, depth, gain):  # stop before any computing
        seen.update(setting=setting, seed=seed, width=width, depth=depth)
        raise cli_module.UserError("stopped here")

    monkeypatch.setattr(cli_module, "_experiment", fake_experiment)
    config = tmp_path / "run.toml"
    config.write_text('setting = "tanh"\nwidth = 16\nseed = 3\n')
    runner = CliRunner()
    result = runner.invoke(cli_module.app, ["flow", "--config", str(config), "--width", "8", "--out", str(tmp_path / "o")])
    assert "stopped here" in result.output, result.output
    assert seen == {"setting": "tanh", "seed": 3, "width": 8, "depth": None}  # the flag wins; the rest from the file
    config.write_text('width = "abc"\n')
    result = runner.invoke(cli_module.app, ["flow", "--config", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "`width`" in result.output and "must be an integer" in result.output


@pytest.mark.parametrize(
    "content, match",
    [("", "is empty"), ("t,h,y,w\n0,1,abc,0\n1,2,3,4\n", "column 'y' has a value that is not a number (line 2)"),
     (None, "is a folder")],
)
def test_bad_fit_data_is_one_line(tmp_path, content, match):
    from typer.testing import CliRunner

    from flowsolve._cli import app

    data = tmp_path / "data.csv"
    if content is None:
        data = tmp_path
    else:
        data.write_text(content)
    result = CliRunner().invoke(app, ["--no-cache", "fit", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and match in result.output and "Traceback" not in result.output, result.output


def test_sweep_store_faults_on_the_command_line(tmp_path):
    """A store path that is a file is one error line; a damaged chunk is recomputed with one warning
    line and the result is the same."""
    from typer.testing import CliRunner

    from flowsolve._cli import app

    config = tmp_path / "sweep.toml"
    config.write_text('kind = "theory"\nt1 = 5.0\nsamples = 5\n[axes]\neta_h = [0.5, 1.0]\n')
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "store").write_text("a file")
    result = CliRunner().invoke(app, ["--no-cache", "sweep", str(config), "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output
    (tmp_path / "d" / "sweep.nc").mkdir(parents=True)  # the result file cannot be written: said before computing
    result = CliRunner().invoke(app, ["--no-cache", "sweep", str(config), "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "cannot write the output file" in result.output, result.output
    assert not (tmp_path / "d" / "store").exists()
    first = CliRunner().invoke(app, ["--no-cache", "sweep", str(config), "--out", str(tmp_path / "o")])
    assert first.exit_code == 0, first.output
    chunk = sorted((tmp_path / "o" / "store").glob("chunk-*.nc"))[0]
    chunk.write_bytes(chunk.read_bytes()[:100])
    again = CliRunner().invoke(app, ["--no-cache", "sweep", str(config), "--out", str(tmp_path / "o")])
    assert again.exit_code == 0, again.output
    assert "warning: The store" in again.output and f"{chunk.name}: unreadable" in again.output
    final = lambda out: [line for line in out.splitlines() if line.startswith("final h")]  # noqa: E731
    assert final(first.output) == final(again.output) and len(final(first.output)) == 1


def test_reproduce_passes_a_scripts_refusal_on_as_bad_input(tmp_path):
    proc = cli("reproduce", "rich_lazy", "--bogus-flag", "--out", tmp_path / "o")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert "unrecognized arguments: --bogus-flag" in proc.stderr
    assert lines[-1] == "error: rich_lazy.py exited with code 2"
    assert not any(line.strip() == "error:" for line in lines)  # no empty error line after it
