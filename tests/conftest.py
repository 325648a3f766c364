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
