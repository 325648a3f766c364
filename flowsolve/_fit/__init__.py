"""Fitting the theory's rates: data checked once | starting rates | least squares | the result."""

from ._data import MIN_SAMPLES as MIN_SAMPLES
from ._fit import fit_effective_rates as fit_effective_rates
from ._least_squares import VectorField as VectorField
from ._result import FitResult as FitResult
