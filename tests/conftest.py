import os
import tempfile

import jax

# The command line keeps compiled programs in $FLOWSOLVE_CACHE (default ~/.cache/flowsolve): the
# commands run by the tests use a folder of their own, shared by the test processes.
os.environ.setdefault("FLOWSOLVE_CACHE", os.path.join(tempfile.gettempdir(), f"flowsolve-tests-{os.getuid()}"))

jax.config.update("jax_enable_x64", True)
# As diffrax's tests: an implicit broadcast of arrays of different ranks is an error, not a silent guess.
jax.config.update("jax_numpy_rank_promotion", "raise")
# And an implicit promotion between dtypes (int32 with int64, float32 with float64) is an error too.
jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests, excluded from the default run")


# The default run gives each pytest-xdist worker whole files (`--dist loadfile`, so a file's tests
# share the programs they compile), in the order collected. The longest files go first, so that the
# two workers finish together instead of one running the last long file alone.
_LONGEST_FIRST = ("test_theory.py", "test_flow.py", "test_fit.py", "test_rates.py", "test_sweep.py", "test_rkc.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    order = {id(item): k for k, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), order[id(item)]))
