"""flowsolve.sweep: chunking, sharding, resuming, failure flags, bad input."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import flowsolve as fs

ETA = [0.5, 1.0, 2.0]
H0 = [0.01, 0.1, 1.0, 10.0]
TS = np.linspace(0.0, 40.0, 5)


def final_distance(p):
    theory = fs.EffectiveTheory(p["eta_h"], 1.0, 1.0, 0.5)
    sol = fs.solve_theory(theory, jnp.stack([p["h0"], 0.0, 0.0]), 40.0, ts=TS, throw=False)
    _, _, h_inf = theory.fixed_point(p["h0"], 0.0)
    return {"h": sol.h, "h_inf": h_inf, "ok": sol.result == fs.RESULTS.successful}


AXES = {"eta_h": ETA, "h0": H0}


def test_values_dims_and_chunk_independence():
    one = fs.sweep(final_distance, AXES, dims={"h": ["time"]}, coords={"time": TS}, chunk_size=1, progress=False)
    whole = fs.sweep(final_distance, AXES, dims={"h": ["time"]}, coords={"time": TS}, chunk_size=12, progress=False)
    assert one.h.dims == ("eta_h", "h0", "time")
    assert one.h_inf.dims == ("eta_h", "h0")
    np.testing.assert_array_equal(one.coords["h0"].values, H0)
    np.testing.assert_array_equal(one.coords["time"].values, TS)
    # Chunk size changes only the vectorisation: agreement to rounding accumulated over the steps
    # (measured ≤ 1.5e-13).
    for k in ("h", "h_inf"):
        np.testing.assert_allclose(one[k].values, whole[k].values, rtol=1e-12, atol=1e-14)
    for k in ("ok", "finite"):
        np.testing.assert_array_equal(one[k].values, whole[k].values)
    assert bool(one.ok.all()) and bool(one.finite.all())
    # Each point equals its own solve, and has converged to the closed form.
    sol = fs.solve_theory(fs.EffectiveTheory(2.0, 1.0, 1.0, 0.5), [0.1, 0.0, 0.0], 40.0, ts=TS)
    np.testing.assert_allclose(one.h.sel(eta_h=2.0, h0=0.1).values, np.asarray(sol.h), rtol=1e-12)
    np.testing.assert_allclose(one.h.isel(time=-1).values, one.h_inf.values, rtol=1e-5)


class Killed(Exception):
    """Stands in for the run being killed between chunks (a real KeyboardInterrupt would also stop
    the pytest-xdist worker)."""


def test_resume_after_interruption(tmp_path):
    store = tmp_path / "store"
    computed = []

    def stop_after_two(chunk, n_chunks):
        computed.append(chunk)
        if len(computed) == 2:
            raise Killed

    with pytest.raises(Killed):
        fs.sweep(final_distance, AXES, chunk_size=3, store=store, callback=stop_after_two, progress=False)
    assert sorted(p.name for p in store.glob("chunk-*.nc")) == ["chunk-000000.nc", "chunk-000001.nc"]
    computed.clear()
    resumed = fs.sweep(final_distance, AXES, chunk_size=3, store=store, progress=False,
                       callback=lambda c, n: computed.append(c))
    assert computed == [2, 3]  # the two finished chunks were not recomputed
    fresh = fs.sweep(final_distance, AXES, chunk_size=3, progress=False)
    for k in ("h", "h_inf", "ok"):  # same chunks, same compiled code: identical
        np.testing.assert_array_equal(resumed[k].values, fresh[k].values)
    with pytest.raises(ValueError, match="holds a different sweep"):
        fs.sweep(final_distance, {"eta_h": ETA, "h0": H0[:2]}, chunk_size=3, store=store, progress=False)


def test_store_refuses_other_settings_and_keeps_the_config(tmp_path):
    """The store cannot see inside `fn`: what it closes over is named in `config` (and the outputs'
    coordinates are compared too), so a rerun with another t1 or rtol is refused, not mixed in."""
    store = tmp_path / "store"
    config = {"t1": 40.0, "rtol": np.float64(1e-8), "setting": "reference", "base": {"dy2": 0.5}, "ok": True}
    ds = fs.sweep(final_distance, AXES, dims={"h": ["time"]}, coords={"time": TS}, chunk_size=4, store=store,
                  config=config, progress=False)
    import json

    assert json.loads(ds.attrs["config"]) == {**config, "rtol": 1e-8}
    assert ds.attrs["t1"] == 40.0 and ds.attrs["setting"] == "reference" and "ok" not in ds.attrs
    again = fs.sweep(final_distance, AXES, dims={"h": ["time"]}, coords={"time": TS}, chunk_size=4, store=store,
                     config=dict(config), progress=False, callback=lambda c, n: pytest.fail("recomputed"))
    assert again.attrs == ds.attrs
    np.testing.assert_array_equal(again.h.values, ds.h.values)
    with pytest.raises(ValueError, match=r"differs in: config\.base, config\.t1\)"):
        fs.sweep(final_distance, AXES, dims={"h": ["time"]}, coords={"time": TS}, chunk_size=4, store=store,
                 config={**config, "t1": 50.0, "base": {}}, progress=False)
    with pytest.raises(ValueError, match=r"differs in: coords\.time\)"):
        fs.sweep(final_distance, AXES, dims={"h": ["time"]}, coords={"time": TS * 1.25}, chunk_size=4,
                 store=store, config=config, progress=False)
    with pytest.raises(ValueError, match=r"`config` must hold only JSON values.*object"):
        fs.sweep(final_distance, AXES, config={"fn": object()}, progress=False)
    with pytest.raises(ValueError, match="`config` must be a mapping"):
        fs.sweep(final_distance, AXES, config=[("t1", 40.0)], progress=False)
    # The written dataset keeps the settings (netCDF attributes).
    ds.to_netcdf(tmp_path / "out.nc", engine="h5netcdf")
    import xarray as xr

    with xr.open_dataset(tmp_path / "out.nc", engine="h5netcdf") as read:
        assert json.loads(read.attrs["config"]) == json.loads(ds.attrs["config"]) and read.attrs["t1"] == 40.0


_CTRL_C = """
import os, signal, sys
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
import flowsolve as fs
sys.path.insert(0, sys.argv[2])
from test_sweep import AXES, final_distance
store = sys.argv[1]
# As in a terminal (a pytest-xdist worker's children start with Ctrl-C ignored, which the sweep respects).
signal.signal(signal.SIGINT, signal.default_int_handler)
sent = []

def ctrl_c(h0):  # Ctrl-C while chunk 1 (which holds h0 = 10) is being computed
    if np.any(np.asarray(h0) == 10.0) and not sent:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGINT)

def point(p):
    jax.debug.callback(ctrl_c, p["h0"])
    return final_distance(p)

try:
    fs.sweep(point, AXES, chunk_size=3, store=store, progress=False)
    print("NOT STOPPED")
except KeyboardInterrupt as e:
    print("STOPPED:", e)
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
computed = []
resumed = fs.sweep(final_distance, AXES, chunk_size=3, store=store, progress=False,
                   callback=lambda c, n: computed.append(c))
print("RESUMED", computed)
fresh = fs.sweep(final_distance, AXES, chunk_size=3, progress=False)
print("IDENTICAL", all(np.array_equal(resumed[k].values, fresh[k].values) for k in ("h", "h_inf", "ok")))

def twice(c, n):  # two Ctrl-C: the second stops at once (Python's own KeyboardInterrupt)
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)

try:
    fs.sweep(final_distance, AXES, chunk_size=3, store=store + "-2", progress=False, callback=twice)
except KeyboardInterrupt as e:
    print("AT ONCE:", repr(e), sorted(os.listdir(store + "-2")))
"""


def test_ctrl_c_stops_after_the_running_chunk_which_is_kept(tmp_path):
    """A real SIGINT during a chunk's computation: that chunk finishes and is stored, then the sweep
    raises KeyboardInterrupt saying what is kept; the same call resumes to the uninterrupted result.
    (In a subprocess with Python's own Ctrl-C handler, as in a terminal.)"""
    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "store"), os.path.dirname(os.path.abspath(__file__))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "STOPPED: Sweep 'sweep' interrupted after chunk 2 of 4; 2 of 4 chunks are stored in" in out, out
    assert "stopping once the running chunk is done and stored" in proc.stderr
    assert "RESUMED [2, 3]" in out and "IDENTICAL True" in out
    assert "AT ONCE: KeyboardInterrupt()" in out and "['chunk-000000.nc', 'sweep.json', 'sweep.lock']" in out


def recovered_rates(p):
    """A sweep of fits: the theory's trajectory at the point's η_h, and the rates fitted to it. At
    η_h = 3 the data are made invalid (h ≤ 0 at one sample); at η_h = 4 every weight is 0 (no data)."""
    ts = jnp.linspace(0.0, 20.0, 21)
    sol = fs.solve_theory(fs.EffectiveTheory(p["eta_h"], 0.5, 1.0, 0.5), jnp.stack([0.05, 0.0, 0.0]), 20.0, ts=ts,
                          throw=False)
    h = jnp.where(p["eta_h"] == 3.0, sol.h.at[5].set(-1.0), sol.h)
    weights = jnp.where(p["eta_h"] == 4.0, 0.0, 1.0) * jnp.ones(21)
    fit = fs.fit_effective_rates(sol.ts, h, sol.y, sol.w, 1.0, 0.5, weights=weights)
    return {"fit_eta_h": fit.eta_h, "fit_eta_y": fit.eta_y, "converged": fit.converged,
            "invalid": fit.result == fs.RESULTS.invalid_input, "successful": fit.result == fs.RESULTS.successful}


def test_a_sweep_of_fits():
    """Fits run inside a sweep (traced): the rates are recovered, equal to the fit called directly,
    and a point whose data a direct call would refuse is flagged (NaN, not converged) while the
    others go on."""
    ds = fs.sweep(recovered_rates, {"eta_h": [1.0, 2.0, 3.0, 4.0]}, progress=False)
    np.testing.assert_allclose(ds.fit_eta_h.values[:2], [1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(ds.fit_eta_y.values[:2], [0.5, 0.5], rtol=1e-6)
    assert list(ds.converged.values) == [True, True, False, False]
    assert list(ds.finite.values) == [True, True, False, False]
    assert list(ds.successful.values) == [True, True, False, False]
    assert list(ds.invalid.values) == [False, False, True, True]
    # All-zero weights are no data: traced, the fit says so (NaN, not converged) instead of 'converging'.
    assert np.isnan(ds.fit_eta_h.values[3])
    ts = np.linspace(0.0, 20.0, 21)
    sol = fs.solve_theory(fs.EffectiveTheory(2.0, 0.5, 1.0, 0.5), [0.05, 0.0, 0.0], 20.0, ts=ts)
    direct = fs.fit_effective_rates(sol.ts, sol.h, sol.y, sol.w, 1.0, 0.5)
    np.testing.assert_allclose(ds.fit_eta_h.values[1], direct.eta_h, rtol=1e-10)
    with pytest.raises(ValueError, match="must be > 0 at every sample"):
        fs.fit_effective_rates(sol.ts, np.asarray(sol.h) * np.where(np.arange(21) == 5, -1, 1), sol.y, sol.w, 1.0, 0.5)
    import jax

    with pytest.raises(ValueError, match="`y` has shape"):  # traced: shape errors still raise, when tracing
        jax.jit(lambda h: fs.fit_effective_rates(sol.ts, h, h[:-1], h, 1.0, 0.5))(sol.h)
    with pytest.raises(ValueError, match=r"also axis names"):
        fs.sweep(lambda p: {"eta_h": p["eta_h"] * 2}, {"eta_h": [1.0]}, progress=False)


def _network_fit(p):
    import jax

    import models

    inputs, targets = fs.experiments.two_point_data(x0=-0.5)
    net = models.MLP(1, 1, 8, 3, activation="tanh", key=jax.random.key(p["seed"]))
    result = fs.fit_network(net, inputs, targets, 5.0, layer=1)
    return {"fit_eta_h": result.fit.eta_h, "converged": result.fit.converged, "theory_loss": result.theory.loss}


@pytest.mark.slow
def test_a_sweep_of_network_fits():
    """`fit_network` (flow → fit → the fitted theory's solve) as a sweep's point equals direct calls
    (to the fit's tolerance: the traced fit is compiled with the flow, in one program)."""
    import jax

    import models

    ds = fs.sweep(_network_fit, {"seed": [0, 1]}, dims={"theory_loss": ["time"]}, progress=False)
    assert bool(ds.converged.all()) and bool(ds.finite.all())
    inputs, targets = fs.experiments.two_point_data(x0=-0.5)
    for seed in (0, 1):
        direct = fs.fit_network(models.MLP(1, 1, 8, 3, activation="tanh", key=jax.random.key(seed)), inputs,
                                targets, 5.0, layer=1)
        np.testing.assert_allclose(ds.fit_eta_h.sel(seed=seed).values, direct.fit.eta_h, rtol=1e-6)
        np.testing.assert_allclose(ds.theory_loss.sel(seed=seed).values, direct.theory.loss, rtol=1e-5)


def test_a_failing_point_is_flagged_and_the_rest_go_on():
    def fragile(p):
        theory = fs.EffectiveTheory(1.0, 1.0, 1.0, 0.5)
        # A start far below the fixed point with a large output: stiff, fails within 64 steps.
        sol = fs.solve_theory(theory, jnp.stack([p["h0"], 0.0, 0.0]), 40.0, ts=TS, max_steps=64, throw=False)
        value = jnp.where(p["h0"] > 5.0, jnp.log(-p["h0"]), sol.h[-1])  # NaN at the largest h0
        return {"h_end": value, "ok": sol.result == fs.RESULTS.successful}

    ds = fs.sweep(fragile, {"h0": H0}, progress=False)
    finite = ds.finite.values
    assert list(finite) == [True, True, True, False]
    good = fs.sweep(final_distance, {"eta_h": [1.0], "h0": H0[:3]}, dims={"h": ["time"]}, progress=False)
    np.testing.assert_allclose(ds.h_end.values[:3][ds.ok.values[:3]],
                               good.h.isel(time=-1, eta_h=0).values[ds.ok.values[:3]], rtol=1e-6)


def test_sharded_over_four_host_devices_equals_unsharded(tmp_path):
    """Four host devices, each integrating its own shard of every chunk: the same values as on one."""
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        assert len(jax.devices()) == 4
        import sys; sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        import flowsolve as fs
        from test_sweep import final_distance, AXES
        ds = fs.sweep(final_distance, AXES, chunk_size=5, progress=False)
        np.save({str(tmp_path / "h.npy")!r}, ds.h.values)
        from test_sweep import heavy  # 4 MB of working memory per point: 7 per device fit 30 MB
        calls = []
        fs.sweep(heavy, {{"a": np.arange(1.0, 41.0)}}, memory_budget=30_000_000, progress=False,
                 callback=lambda c, n: calls.append(n))
        print("CHUNKS", calls[0])
        # Each device runs its shard to the end: no collective in the chunk's program (a vmapped solve
        # over the sharded chunk, in lockstep, all-reduces its loops' conditions at every step).
        from flowsolve._sweep._chunking import _programs, chunk_program, point_sharding
        sharding = point_sharding(jax.devices())
        example = {{k: jax.ShapeDtypeStruct((8,), np.float64, sharding=sharding) for k in AXES}}
        per_device, lockstep = _programs(final_distance, (), False, sharding, None)
        assert chunk_program(final_distance, {{}}, False, sharding, None, example) is per_device
        ops = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")
        count = lambda p: sum(p.lower(example).compile().as_text().count(op) for op in ops)
        print("COLLECTIVES", count(per_device), count(lockstep) > 0)
        # A point whose linear solve cannot be traced under shard_map (lineax's, as a fit's least squares
        # holds): the lockstep program, said once, with the same values.
        import warnings
        from test_sweep import linear_solve
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            solved = fs.sweep(linear_solve, {{"a": [1.0, 2.0, 4.0, 8.0]}}, progress=False)
        print("SOLVED", solved.x.values.tolist())
        print("WARNED", [str(w.message)[:40] for w in caught if w.category is RuntimeWarning])
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
    here = fs.sweep(final_distance, AXES, chunk_size=5, progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "h.npy"), here.h.values, rtol=1e-12, atol=1e-14)
    assert "CHUNKS 2" in proc.stdout  # the budget is per device: chunks of 4 × 7 points (28 + 12)
    assert "COLLECTIVES 0 True" in proc.stdout, proc.stdout
    assert "SOLVED [1.0, 0.5, 0.25, 0.125]" in proc.stdout, proc.stdout
    assert "WARNED ['`fn` cannot run per device under jax.sha']" in proc.stdout, proc.stdout


def linear_solve(p):
    """A point that solves diag(a, 1)·x = 1 with lineax (as a fit's least squares does): x₀ = 1/a."""
    import lineax as lx

    operator = lx.MatrixLinearOperator(jnp.diag(jnp.stack([p["a"], jnp.ones_like(p["a"])])))
    return {"x": lx.linear_solve(operator, jnp.ones(2, p["a"].dtype)).value[0]}


def heavy(p):
    """A point whose program holds two 500 × 500 float64 matrices (4 MB) at once."""
    x = jnp.linspace(0.0, 1.0, 500) * p["a"]
    m = jnp.outer(x, x)
    return {"s": jnp.trace(m @ m)}


def test_chunks_fit_the_memory_budget_by_xlas_count(tmp_path):
    """The default chunk is cut to what fits `memory_budget` on a device, counted by XLA on the
    compiled chunk (outputs alone would allow all 40 points in one chunk)."""
    a = np.arange(1.0, 41.0)
    whole, cut = [], []
    one = fs.sweep(heavy, {"a": a}, progress=False, callback=lambda c, n: whole.append(n))
    ds = fs.sweep(heavy, {"a": a}, memory_budget=30_000_000, store=tmp_path / "s", progress=False,
                  callback=lambda c, n: cut.append(n))
    assert whole[0] == 1 and cut[0] == 6  # 4 MB per point: 7 points per chunk
    import json

    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["chunk_size"] == 7
    np.testing.assert_allclose(ds.s.values, (a**2 * np.sum(np.linspace(0.0, 1.0, 500) ** 2)) ** 2, rtol=1e-12)  # (x·x)²
    np.testing.assert_array_equal(ds.s.values, one.s.values)
    # Resumed without the budget (as on a machine with more memory): the store's chunk size is kept.
    again = fs.sweep(heavy, {"a": a}, store=tmp_path / "s", progress=False, callback=lambda c, n: pytest.fail())
    np.testing.assert_array_equal(again.s.values, ds.s.values)
    with pytest.raises(ValueError, match=r"One point needs about 4e\+06 bytes of working memory on a device"):
        fs.sweep(heavy, {"a": a}, memory_budget=3_000_000, progress=False)
    # An explicit chunk size is used as given.
    given = []
    fs.sweep(heavy, {"a": a}, memory_budget=30_000_000, chunk_size=20, progress=False,
             callback=lambda c, n: given.append(n))
    assert given[0] == 2


@pytest.mark.parametrize(
    "axes, kwargs, match",
    [
        ({"eta_h": [], "h0": H0}, {}, "non-empty 1-d"),
        ({"eta_h": [1.0, np.nan], "h0": H0}, {}, "non-finite"),
        ({"eta_h": ETA}, {}, "asks for the axis 'h0'"),
        (AXES, {"memory_budget": 8}, "more than `memory_budget`"),
        (AXES, {"memory_budget": 0}, "`memory_budget` must be a positive int"),
        (AXES, {"chunk_size": 0}, "positive int"),
        ({}, {}, "non-empty dict"),
        ({"eta_h": [1.0, 1.0], "h0": H0}, {}, "repeated values"),
        (AXES, {"static": ["width"]}, "not an axis"),
        (AXES, {"static": ["eta_h", "h0"]}, "At least one axis"),
    ],
)
def test_bad_input(axes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fs.sweep(final_distance, axes, progress=False, **kwargs)


def _mlp_flow_batch(p):
    """A batched `fn`: one ensemble flow over the chunk's seeds; the width is a static axis."""
    import equinox as eqx
    import jax

    import models

    inputs, targets = fs.experiments.two_point_data(x0=-0.5)
    nets = eqx.filter_vmap(
        lambda s: models.MLP(1, 1, p["width"], 2, activation="tanh", key=jax.random.key(s))
    )(p["seed"])
    sol = fs.ensemble_flow(nets, inputs, targets, 2.0, ts=jnp.linspace(0.0, 2.0, 3), layer=1,
                           rtol=1e-9, atol=1e-12, throw=False)
    return {"h": sol.observed["h"], "ok": sol.result == fs.RESULTS.successful}


def test_static_groups_and_batched_ensemble_flows(tmp_path):
    import jax

    import models

    ds = fs.sweep(_mlp_flow_batch, {"seed": [0, 1, 2], "width": [4, 6]}, static=["width"], batched=True,
                  chunk_size=2, dims={"h": ["time"]}, store=tmp_path / "s", progress=False)
    assert ds.h.dims == ("seed", "width", "time") and ds.h.shape == (3, 2, 3)
    assert bool(ds.ok.all()) and bool(ds.finite.all())
    # Each point is its own network's flow (a separate gradient_flow, to the tolerance); one point
    # checked, as the groups' values differ (were two groups' places swapped, it would not match).
    assert not np.allclose(ds.h.sel(width=4).values, ds.h.sel(width=6).values)
    inputs, targets = fs.experiments.two_point_data(x0=-0.5)
    net = models.MLP(1, 1, 4, 2, activation="tanh", key=jax.random.key(2))
    one = fs.gradient_flow(net, inputs, targets, 2.0, ts=jnp.linspace(0.0, 2.0, 3), layer=1, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ds.h.sel(seed=2, width=4).values, np.asarray(one.observed["h"]), rtol=1e-6)
    # The groups resume like any sweep: nothing is recomputed.
    computed = []
    again = fs.sweep(_mlp_flow_batch, {"seed": [0, 1, 2], "width": [4, 6]}, static=["width"], batched=True,
                     chunk_size=2, dims={"h": ["time"]}, store=tmp_path / "s", progress=False,
                     callback=lambda c, n: computed.append(c))
    assert computed == []
    np.testing.assert_array_equal(again.h.values, ds.h.values)


def test_static_groups_must_agree_on_output_shapes():
    def width_shaped(p):
        return {"x": jnp.zeros(p["width"]) + p["a"]}

    with pytest.raises(ValueError, match="must not depend on the static axes"):
        fs.sweep(width_shaped, {"a": [1.0, 2.0], "width": [2, 3]}, static=["width"], progress=False)


_TWO_PROCESSES = """
import os, sys
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
except AttributeError:  # newer JAX: gloo is the CPU default
    pass
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
import flowsolve as fs
sys.path.insert(0, sys.argv[4])
from test_sweep import final_distance, AXES, ETA, H0
computed = []
ds = fs.sweep(final_distance, AXES, chunk_size=4, store=sys.argv[5], progress=False,
              callback=lambda c, n: computed.append(c))
try:
    fs.sweep(final_distance, {"eta_h": ETA, "h0": H0[:2]}, chunk_size=4, store=sys.argv[5], progress=False)
    refusal = ""
except ValueError as e:
    refusal = str(e)
# A store that only process 0 sees (process 1 is given an empty folder): every process stops, saying why.
try:
    fs.sweep(final_distance, AXES, chunk_size=4, store=sys.argv[5] if pid == 0 else f"{out}/elsewhere", progress=False)
    unseen = ""
except ValueError as e:
    unseen = str(e)
# The callback fails on process 1 after the first chunk: every process stops (none left waiting in the
# next chunk's collectives), and the chunk is kept.
def fails_on_1(chunk, n_chunks):
    if pid == 1:
        raise OSError("callback failed on process 1")
try:
    fs.sweep(final_distance, AXES, chunk_size=4, store=f"{out}/third", progress=False, callback=fails_on_1)
    stopped = ""
except (OSError, RuntimeError) as e:
    stopped = f"{type(e).__name__}: {e}"
# Chunks cut to the memory budget: processes whose devices allow different chunks (here: different
# budgets, 7 and 5 points of `heavy` per device) agree on the smaller one, or the collectives would hang.
from test_sweep import heavy
cut = []
fs.sweep(heavy, {"a": np.arange(1.0, 41.0)}, memory_budget=(30_000_000, 20_000_000)[pid], progress=False,
         callback=lambda c, n: cut.append(n))
np.savez(f"{out}/p{pid}.npz", h=ds.h.values, h_inf=ds.h_inf.values, ok=ds.ok.values, finite=ds.finite.values,
         computed=np.asarray(computed), refusal=np.asarray(refusal), unseen=np.asarray(unseen),
         stopped=np.asarray(stopped), cut=np.asarray(cut))
"""


@pytest.mark.slow  # two JAX processes joined by jax.distributed, each importing and compiling: ≈ 14 s
def test_one_sweep_over_two_processes_resumes_a_store(tmp_path):
    """Multi-host in miniature: two processes (`jax.distributed`, 2 host devices each) run one sweep
    together over 4 devices, resuming a store that a single-process run left after its first chunk;
    a store some process cannot see, and a callback failing on one process, stop every process."""
    import socket

    def killed(chunk, n_chunks):
        raise Killed

    store = tmp_path / "store"
    with pytest.raises(Killed):
        fs.sweep(final_distance, AXES, chunk_size=4, store=store, progress=False, callback=killed)
    assert [p.name for p in store.glob("chunk-*.nc")] == ["chunk-000000.nc"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(_TWO_PROCESSES)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    workers = [subprocess.Popen([sys.executable, str(script), str(i), str(port), str(tmp_path),
                                 os.path.dirname(os.path.abspath(__file__)), str(store)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
    try:
        logs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(logs)[-3000:]
    fresh = fs.sweep(final_distance, AXES, chunk_size=4, progress=False)
    for pid in range(2):
        got = np.load(tmp_path / f"p{pid}.npz")
        assert list(got["computed"]) == [1, 2]  # the stored chunk 0 was not recomputed, on either process
        # Device count changes only the vectorisation: agreement to rounding (as with 4 devices in one process).
        for k in ("h", "h_inf"):
            np.testing.assert_allclose(got[k], fresh[k].values, rtol=1e-12, atol=1e-14)
        for k in ("ok", "finite"):
            np.testing.assert_array_equal(got[k], fresh[k].values)
        # A store holding another sweep: process 0 finds it out, every process refuses.
        assert ("holds a different sweep", "Process 0 refused the store")[pid] in str(got["refusal"])
        assert "process(es) [1] cannot see" in str(got["unseen"])
        # A callback failing on process 1 only: process 1 raises its error, process 0 says who failed.
        expected = ("RuntimeError: Process(es) [1] failed after chunk 0", "OSError: callback failed on process 1")
        assert str(got["stopped"]).startswith(expected[pid]), str(got["stopped"])
        # Both processes cut at the smaller budget: more than the 2 chunks process 0's own would give
        # (≥ 6 points per device; the gathers of a multi-process chunk add to XLA's count).
        assert len(set(got["cut"])) == 1 and got["cut"][0] > 2, got["cut"]
    assert list(np.load(tmp_path / "p0.npz")["cut"]) == list(np.load(tmp_path / "p1.npz")["cut"])
    assert [p.name for p in (tmp_path / "third").glob("chunk-*.nc")] == ["chunk-000000.nc"]
    assert sorted(p.name for p in store.glob("chunk-*.nc")) == [f"chunk-00000{c}.nc" for c in range(3)]
    resumed = fs.sweep(final_distance, AXES, chunk_size=4, store=store, progress=False)
    for k in ("h", "h_inf"):
        np.testing.assert_allclose(resumed[k].values, fresh[k].values, rtol=1e-12, atol=1e-14)
