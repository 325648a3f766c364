"""Type aliases shared across flowsolve (jaxtyping shapes on every public array)."""

from typing import Union

import numpy as np
from jaxtyping import Array, ArrayLike, Float

RealScalarLike = Union[float, int, np.floating, Float[ArrayLike, ""]]
"""A real scalar: a Python number, a NumPy scalar or a 0-d array."""

Scalar = Float[Array, ""]
State3 = Float[ArrayLike, "3"]
"""A state of the reduced theory, `[h, y, w]`."""
