"""flowsolve.plot figures, pairwise observables, and the IDX loader."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import flowsolve as fs  # noqa: E402


def test_figures(tmp_path):
    ts = np.linspace(0, 1, 11)
    net = {"h": ts, "y": ts**2, "w": -ts, "loss": np.exp(-ts)}
    theory = {k: 1.01 * v for k, v in net.items()}
    for name, fig in {
        "traj": fs.plot.trajectories(ts, net, theory),
        "scatter": fs.plot.theory_vs_network(net["h"], theory["h"]),
        "mats": fs.plot.distance_matrices({"a": np.ones((3, 3)) - np.eye(3), "b": 2 * (np.ones((3, 3)) - np.eye(3))},
                                          labels=["x", "y", "z"]),
        "curve": fs.plot.rich_lazy([0.1, 1.0, 10.0], [1.05, 1.6, 10.1]),
    }.items():
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000
    axes = fs.plot.trajectories(ts, net, theory).axes
    assert [ax.get_title() for ax in axes] == ["h = ‖dh‖²", "y = ‖dŷ‖²", "w", "loss"]
    assert len(axes[0].lines) == 2  # network solid, theory dashed
    assert axes[0].lines[1].get_linestyle() == "--"
    with pytest.raises(ValueError, match="square"):
        fs.plot.distance_matrices({"a": np.ones((2, 3))})
    with pytest.raises(ValueError, match="same number of values"):
        fs.plot.theory_vs_network([1, 2], [1, 2, 3])


def test_pairwise_observables_equal_two_point_ones():
    rng = np.random.default_rng(0)
    x, yt = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    hidden, out = rng.normal(size=(5, 4, 6)), rng.normal(size=(5, 4, 2))
    pw = fs.pairwise_observables(x, yt, hidden, out)
    assert pw.h.shape == (6, 5) and pw.pairs.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    for k, (i, j) in enumerate(pw.pairs.tolist()):
        dx2, dy2 = fs.pair_distances(x[[i, j]], yt[[i, j]])
        np.testing.assert_allclose([pw.dx2[k], pw.dy2[k]], [dx2, dy2], rtol=1e-12)
        for t in (0, 4):
            o = fs.two_point_observables(x[[i, j]], yt[[i, j]], hidden[t][[i, j]], out[t][[i, j]])
            np.testing.assert_allclose([pw.h[k, t], pw.y[k, t], pw.w[k, t]], [o.h, o.y, o.w], rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        fs.pairwise_observables(x, yt, hidden[:, :3], out)


def _write_idx(path, array, code=0x08):
    with open(path, "wb") as f:
        f.write(bytes([0, 0, code, array.ndim]))
        for size in array.shape:
            f.write(int(size).to_bytes(4, "big"))
        f.write(array.tobytes())


def test_load_idx_roundtrip_and_errors(tmp_path):
    import gzip

    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    _write_idx(tmp_path / "imgs", images)
    np.testing.assert_array_equal(fs.experiments.load_idx(tmp_path / "imgs"), images)
    labels = np.array([7, 1, 7], np.uint8)
    _write_idx(tmp_path / "labels", labels)
    (tmp_path / "labels.gz").write_bytes(gzip.compress((tmp_path / "labels").read_bytes()))
    np.testing.assert_array_equal(fs.experiments.load_idx(tmp_path / "labels.gz"), labels)
    floats = np.linspace(0, 1, 6).reshape(2, 3).astype(">f4")
    _write_idx(tmp_path / "floats", floats, code=0x0D)
    np.testing.assert_array_equal(fs.experiments.load_idx(tmp_path / "floats"), floats.astype(np.float32))
    (tmp_path / "bad").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        fs.experiments.load_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes((tmp_path / "imgs").read_bytes()[:-3])
    with pytest.raises(ValueError, match="header promises"):
        fs.experiments.load_idx(tmp_path / "short")


def test_the_papers_many_point_data_sets():
    x, y = fs.experiments.xor_data()
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and y[:, 0].tolist() == [0, 1, 1, 0]
    x, y, context = fs.experiments.orthogonal_blobs(points=4, pixels=5)
    assert x.shape == (32, 27) and y.shape == (32, 1)
    np.testing.assert_allclose(np.asarray(x[:, :25]).sum(axis=1), 1.0, rtol=1e-12)  # each blob sums to 1
    assert np.all(np.asarray(x[:16, 25:]) == [1, 0]) and np.all(np.asarray(x[16:, 25:]) == [0, 1])
    np.testing.assert_array_equal(np.asarray(x[:16, :25]), np.asarray(x[16:, :25]))  # same images, other context
    centres = np.linspace(-1, 1, 4)
    np.testing.assert_allclose(np.asarray(y[:16, 0]), np.repeat(centres, 4))  # x position (outer loop)
    np.testing.assert_allclose(np.asarray(y[16:, 0]), np.tile(centres, 4))  # y position (inner loop)
    # The blob at position (x, y) peaks at the pixel nearest to it (columns x, rows y).
    k = 4 * 3 + 0  # x = +1, y = −1
    assert np.argmax(np.asarray(x[k, :25])) == 0 * 5 + 4
    assert context.tolist() == [0] * 16 + [1] * 16
    with pytest.raises(ValueError, match="points"):
        fs.experiments.orthogonal_blobs(points=1)
    for name in ("XOR_SETTINGS", "MNIST_SETTINGS", "ORTHOGONAL_SETTINGS"):
        for row in getattr(fs.experiments, name).values():
            assert 0 <= row.layer < row.depth


def test_embedded_mnist_subset_split_and_normalised():
    x_tr, l_tr, x_val, l_val = fs.experiments.mnist_subset(validation=50, seed=1)
    assert x_tr.shape == (4500, 784) and x_val.shape == (500, 784)
    assert np.bincount(l_tr).tolist() == [450] * 10 and np.bincount(l_val).tolist() == [50] * 10
    low = (0.0 - fs.experiments.MNIST_MEAN) / fs.experiments.MNIST_STD
    high = (1.0 - fs.experiments.MNIST_MEAN) / fs.experiments.MNIST_STD
    assert np.isclose(x_tr.min(), low) and np.isclose(x_tr.max(), high)
    # Training and validation images are distinct images; the split is reproducible.
    assert not (set(map(bytes, x_tr.astype(np.float32))) & set(map(bytes, x_val.astype(np.float32))))
    again = fs.experiments.mnist_subset(validation=50, seed=1)
    np.testing.assert_array_equal(again[1], l_tr)
    with pytest.raises(ValueError, match="validation"):
        fs.experiments.mnist_subset(validation=500)
